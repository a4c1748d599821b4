package sector.finance_test

import data.sector.finance

# Fixtures are bound to local variables, one per line, before `with`: regopy 1.5
# ignores `with input.x as <rule reference>` (opa applies it).

_cluster := {
	"region": "onprem:lu-national-1",
	"keys": {"region": "onprem:lu-national-1", "perSandbox": true},
	"audit": {"retentionDays": 1826},
}

_tenant := {
	"name": "lux-bank",
	"sector": "finance",
	"jurisdiction": "LU",
	"attestations": {"supervisoryAuthority": "CSSF"},
}

_sandbox := {"name": "s1", "egress": [{"cidr": "198.51.100.10/32", "region": "onprem:lu-national-1"}]}

_codes(violations) := {v.code | some v in violations}

test_compliant_bank_passes_with_retention_obligation if {
	cluster := _cluster
	tenant := _tenant
	sandbox := _sandbox
	count(finance.violations) == 0 with input.action as "sandbox.provision"
		with input.cluster as cluster
		with input.tenant as tenant
		with input.sandbox as sandbox
	obligations := finance.obligations with input.action as "sandbox.provision"
		with input.cluster as cluster
		with input.tenant as tenant
		with input.sandbox as sandbox
	some o in obligations
	o.code == "AUDIT_RETENTION_MIN_DAYS"
	o.value == 1826
}

test_missing_supervisor_is_denied if {
	cluster := _cluster
	sandbox := _sandbox
	codes := _codes(finance.data_violations) with input.action as "dataset.grant"
		with input.cluster as cluster
		with input.tenant as {"name": "b", "sector": "finance", "attestations": {"supervisoryAuthority": " "}}
		with input.sandbox as sandbox
	codes == {"FINANCE_SUPERVISOR_ATTESTATION_MISSING"}
}

test_shared_key_and_short_retention_are_denied if {
	tenant := _tenant
	sandbox := _sandbox
	codes := _codes(finance.violations) with input.action as "sandbox.provision"
		with input.cluster as {
			"region": "onprem:lu-national-1",
			"keys": {"perSandbox": false},
			"audit": {"retentionDays": 1825},
		}
		with input.tenant as tenant
		with input.sandbox as sandbox
	codes == {"FINANCE_PER_SANDBOX_KEY_REQUIRED", "FINANCE_AUDIT_RETENTION_TOO_SHORT"}
}

test_egress_outside_eea_is_denied if {
	cluster := _cluster
	tenant := _tenant
	sandbox := {"name": "s1", "egress": [
		{"cidr": "203.0.113.0/24", "region": "aws:us-east-1"},
		{"cidr": "192.0.2.0/28", "region": "gcp:europe-west6"},
	]}
	codes := _codes(finance.violations) with input.action as "sandbox.provision"
		with input.cluster as cluster
		with input.tenant as tenant
		with input.sandbox as sandbox
	codes == {"FINANCE_EGRESS_OUTSIDE_EEA"}
	violations := finance.violations with input.action as "sandbox.provision"
		with input.cluster as cluster
		with input.tenant as tenant
		with input.sandbox as sandbox
	count(violations) == 2
}

test_other_sectors_are_not_checked if {
	count(finance.violations) == 0 with input.action as "sandbox.provision"
		with input.tenant as {"name": "h", "sector": "health"}
}
