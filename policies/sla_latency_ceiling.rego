package marketplace.publishing

import data.marketplace.publishing.lib
import rego.v1

violations contains lib.violation(
	"sla-latency-ceiling",
	"medium",
	concat("", ["SLA p95 latency of ", lib.fmt_num(lib.sla.maxLatencyMs), " ms exceeds the ", lib.fmt_num(lib.max_latency_ms), " ms ceiling"]),
	concat("", ["Promise a maxLatencyMs of at most ", lib.fmt_num(lib.max_latency_ms), " or expect buyers to see this warning."]),
	"/sla/maxLatencyMs",
) if {
	lib.sla.maxLatencyMs > lib.max_latency_ms
}
