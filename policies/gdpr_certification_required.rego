package marketplace.publishing

import data.marketplace.publishing.lib
import rego.v1

# Keeping data in the EU/EEA brings the service under the GDPR, whether or not it
# declares handlesPersonalData, so the EU location alone triggers the check.
violations contains lib.violation(
	"gdpr-certification-required",
	"high",
	concat("", ["data kept in the EU/EEA (", concat(", ", sort(eu_locations)), ")", personal_data_note, " needs a GDPR or ISO27001 certification"]),
	"Obtain and declare GDPR or ISO27001 in compliance.certifications, or remove the EU/EEA locations.",
	"/compliance/certifications",
) if {
	count(eu_locations) > 0
	not lib.has_any_certification({"GDPR", "ISO27001"})
}

eu_locations := {upper(loc) | some loc in lib.residency; lib.eu_location(loc)}

default personal_data_note := ""

personal_data_note := " with personal data" if lib.compliance.handlesPersonalData == true
