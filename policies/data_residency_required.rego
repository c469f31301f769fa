package marketplace.publishing

import data.marketplace.publishing.lib
import rego.v1

violations contains lib.violation(
	"data-residency-required",
	"high",
	"compliance.dataResidency must list where the service keeps data",
	"Add the ISO 3166-1 alpha-2 countries or regions (EU, EEA, US, APAC, GLOBAL) that hold customer data.",
	"/compliance/dataResidency",
) if {
	count(lib.residency) == 0
}
