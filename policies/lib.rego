# Shared helpers of the publishing policies: input accessors, URL parsing,
# certification lookups and the violation constructor.
package marketplace.publishing.lib

import rego.v1

spec := object.get(input, "spec", {})

settings := object.get(input, "settings", {})

compliance := object.get(spec, "compliance", {})

sla := object.get(spec, "sla", {})

residency := object.get(compliance, "dataResidency", [])

certifications := {c | some c in object.get(compliance, "certifications", [])}

# Thresholds default to the PolicySettings defaults so that a caller forgetting
# `settings` gets the platform's rules instead of silently passing everything.
min_availability := object.get(settings, "min_availability", 99)

min_enterprise_availability := object.get(settings, "min_enterprise_availability", 99.9)

max_latency_ms := object.get(settings, "max_latency_ms", 30000)

restricted_countries := {upper(c) | some c in object.get(settings, "restricted_countries", ["KP", "IR", "SY", "CU"])}

allow_insecure_endpoints := object.get(settings, "allow_insecure_endpoints", false)

# Messages are assembled with concat, never sprintf("%s"): rego-cpp wraps strings
# computed by builtins (upper, format_int ...) in quotes when sprintf formats them.
violation(policy, severity, message, remediation, pointer) := {
	"policy": policy,
	"severity": severity,
	"message": message,
	"remediation": remediation,
	"pointer": pointer,
}

has_any_certification(wanted) if {
	some c in wanted
	c in certifications
}

endpoint_url := object.get(object.get(spec, "endpoint", {}), "url", "")

default url_scheme := ""

url_scheme := lower(m[0][1]) if {
	m := regex.find_all_string_submatch_n(`^([A-Za-z][A-Za-z0-9+.-]*):`, endpoint_url, 1)
	count(m) == 1
}

# The authority must be fully consumed up to the path, so tricks such as
# "http://evil.example\@127.0.0.1" leave the host undefined (never loopback).
url_host := lower(trim_suffix(trim_suffix(trim_prefix(m[0][1], "["), "]"), ".")) if {
	pattern := `^[A-Za-z][A-Za-z0-9+.-]*://(?:[^@/?#\\]*@)?(\[[0-9A-Fa-f:.]+\]|[^:/?#@\\\[\]]+)(?::[0-9]*)?(?:[/?#]|$)`
	m := regex.find_all_string_submatch_n(pattern, endpoint_url, 1)
	count(m) == 1
}

loopback_host(host) if host == "localhost"

loopback_host(host) if host in {"::1", "0:0:0:0:0:0:0:1"}

loopback_host(host) if {
	octet := `(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])`
	regex.match(concat("", [`^127\.`, octet, `\.`, octet, `\.`, octet, `$`]), host)
}

# EU member states (ISO 3166-1 alpha-2; Greece is GR, not the EU's "EL"),
# plus the EEA-only states where the GDPR applies as well.
eu_eea_countries := {
	"AT", "BE", "BG", "HR", "CY", "CZ", "DK", "EE", "FI", "FR", "DE", "GR", "HU", "IE",
	"IT", "LV", "LT", "LU", "MT", "NL", "PL", "PT", "RO", "SK", "SI", "ES", "SE",
	"IS", "LI", "NO",
}

eu_location(loc) if upper(loc) in {"EU", "EEA"}

eu_location(loc) if upper(loc) in eu_eea_countries

# Render a number with at most four decimals (99.9999) the same way in rego-cpp
# and OPA. rego-cpp prints 99.9 as 99.90000000000001, its `%` returns a broken
# "00" for some operands, and OPA's %g rejects integers; hence the arithmetic.
fmt_num(x) := text if {
	scaled := round(x * 10000)
	whole := floor(scaled / 10000)
	text := number_text(whole, scaled - (whole * 10000))
}

number_text(whole, frac) := format_int(whole, 10) if frac == 0

number_text(whole, frac) := concat("", [format_int(whole, 10), ".", trim_right(substring(format_int(10000 + frac, 10), 1, 4), "0")]) if {
	frac != 0
}
