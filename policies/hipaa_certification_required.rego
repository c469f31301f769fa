package marketplace.publishing

import data.marketplace.publishing.lib
import rego.v1

violations contains lib.violation(
	"hipaa-certification-required",
	"critical",
	"services handling protected health information (handlesPHI) need a HIPAA certification",
	"Declare HIPAA in compliance.certifications once certified, or set handlesPHI to false if no PHI is processed.",
	"/compliance/certifications",
) if {
	lib.compliance.handlesPHI == true
	not "HIPAA" in lib.certifications
}
