package sector.public_test

import data.sector.public

# Fixtures are bound to local variables, one per line, before `with`: regopy 1.5
# ignores `with input.x as <rule reference>` (opa applies it).

_tenant := {"name": "ministry", "sector": "public", "jurisdiction": "LU", "attestations": {"dpiaReference": "DPIA-1"}}

_claims := {"name": "claims", "personalData": "personal"}

_sandbox := {
	"name": "s1",
	"lifetime": {"seconds": 15768000, "onExpiry": "delete"},
	"publicInterest": {
		"area": "public-administration",
		"whyNotAnonymised": "links between claims are needed",
		"monitoring": "weekly bias and leakage review by the DPO",
		"deletion": "all claim data deleted when the sandbox ends",
	},
}

_codes(violations) := {v.code | some v in violations}

test_art59_compliant_sandbox_passes if {
	tenant := _tenant
	claims := _claims
	sandbox := _sandbox
	count(public.data_violations) == 0 with input.action as "sandbox.provision"
		with input.tenant as tenant
		with input.datasets as [claims]
		with input.sandbox as sandbox
}

test_every_art59_condition_is_checked if {
	claims := _claims
	codes := _codes(public.data_violations) with input.action as "sandbox.provision"
		with input.tenant as {"name": "ministry", "sector": "public"}
		with input.datasets as [claims]
		with input.sandbox as {"name": "s1", "lifetime": {"onExpiry": "retain"}, "publicInterest": {"area": "marketing"}}
	codes == {
		"PUBLIC_INTEREST_AREA_MISSING",
		"PUBLIC_ANONYMISATION_JUSTIFICATION_MISSING",
		"PUBLIC_DPIA_MISSING",
		"PUBLIC_LIFETIME_UNBOUNDED",
		"PUBLIC_DATA_NOT_DELETED_AT_END",
		"PUBLIC_MONITORING_MISSING",
		"PUBLIC_DELETION_COMMITMENT_MISSING",
	}
}

test_lifetime_longer_than_bound_is_denied if {
	tenant := _tenant
	claims := _claims
	codes := _codes(public.data_violations) with input.action as "sandbox.provision"
		with input.tenant as tenant
		with input.datasets as [claims]
		with input.sandbox as {
			"name": "s1",
			"lifetime": {"seconds": 63072001},
			"publicInterest": {"area": "energy", "whyNotAnonymised": "x", "monitoring": "m", "deletion": "d"},
		}
	codes == {"PUBLIC_LIFETIME_UNBOUNDED"}
}

test_non_personal_data_is_out_of_scope if {
	tenant := _tenant
	count(public.data_violations) == 0 with input.action as "sandbox.provision"
		with input.tenant as tenant
		with input.datasets as [{"name": "weather", "personalData": "anonymised"}]
		with input.sandbox as {"name": "s1"}
}

# AI Act Art. 59 is not only for the public sector: any participant relying on it
# (a sandbox with publicInterest) meets every condition.
test_any_participant_relying_on_article_59_meets_it if {
	claims := _claims
	codes := _codes(public.data_violations) with input.action as "dataset.grant"
		with input.tenant as {"name": "startup", "sector": "research", "attestations": {"dpiaReference": "D-1"}}
		with input.datasets as [claims]
		with input.sandbox as {
			"name": "s1",
			"lifetime": {"seconds": 86400},
			"publicInterest": {"area": "public-health", "whyNotAnonymised": "x", "monitoring": " "},
		}
	codes == {"PUBLIC_MONITORING_MISSING", "PUBLIC_DELETION_COMMITMENT_MISSING"}
	count(public.data_violations) == 0 with input.action as "dataset.grant"
		with input.tenant as {"name": "startup", "sector": "research"}
		with input.datasets as [claims]
		with input.sandbox as {"name": "s1"}
}
