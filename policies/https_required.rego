package marketplace.publishing

import data.marketplace.publishing.lib
import rego.v1

violations contains lib.violation(
	"https-required",
	"critical",
	concat("", ["endpoint.url must use https, got ", lib.endpoint_url]),
	"Serve the API over TLS and submit an https:// URL.",
	"/endpoint/url",
) if {
	lib.url_scheme != "https"
	not insecure_loopback_allowed
}

# Local development and tests run providers on loopback over plain http; this is
# only honoured when the platform allows insecure endpoints (never in production).
insecure_loopback_allowed if {
	lib.allow_insecure_endpoints == true
	lib.url_scheme == "http"
	lib.loopback_host(lib.url_host)
}
