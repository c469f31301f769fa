package marketplace.publishing

import data.marketplace.publishing.lib
import rego.v1

violations contains lib.violation(
	"sla-minimum-availability",
	"high",
	concat("", ["SLA availability ", lib.fmt_num(availability), "% is below the ", lib.fmt_num(required_availability), "% required for ", support_level, " support"]),
	concat("", ["Promise at least ", lib.fmt_num(required_availability), "% availability in sla.availability."]),
	"/sla/availability",
) if {
	availability < required_availability
}

availability := object.get(lib.sla, "availability", 0)

support_level := object.get(lib.sla, "supportLevel", "standard")

# Enterprise support must meet both thresholds, whichever is stricter.
required_availability := max({lib.min_availability, lib.min_enterprise_availability}) if support_level == "enterprise"

required_availability := lib.min_availability if support_level != "enterprise"
