package marketplace.publishing

import data.marketplace.publishing.lib
import rego.v1

violations contains lib.violation(
	"confidential-requires-certification",
	"medium",
	concat("", ["compliance.level ", lib.compliance.level, " without a SOC2 or ISO27001 certification"]),
	"Declare SOC2 or ISO27001 in compliance.certifications; reviewers will ask for it.",
	"/compliance/certifications",
) if {
	lib.compliance.level in {"confidential", "restricted"}
	not lib.has_any_certification({"SOC2", "ISO27001"})
}
