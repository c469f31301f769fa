package marketplace.publishing

import data.marketplace.publishing.lib
import rego.v1

# One violation per entry, pointing at its index, so the submitter sees each one.
violations contains lib.violation(
	"restricted-countries",
	"critical",
	concat("", ["data may not be kept in ", upper(loc), " (restricted country)"]),
	"Remove the restricted country from compliance.dataResidency and move the data elsewhere.",
	concat("/", ["/compliance/dataResidency", format_int(i, 10)]),
) if {
	some i, loc in lib.residency
	upper(loc) in lib.restricted_countries
}
