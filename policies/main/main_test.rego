package main_test

# The entry points. Each `with` clause makes the embedded engine (regopy) compile a
# copy of what the replaced input reaches, and data.main.decision reaches every
# package: these tests replace as few fields of it as they can, and check that it
# answers as the per-action entry points the engines query.

import data.main

test_unknown_action_is_denied if {
	d := main.decision with input.action as "sandbox.delete"
	d.allow == false
	some v in d.violations
	v.code == "POLICY_UNKNOWN_ACTION"
}

test_empty_input_is_denied if {
	main.decision.allow == false
}

_research := {"name": "r", "sector": "research", "jurisdiction": "LU"}

_export_request := {
	"name": "e1", "requester": "a", "justification": "j",
	"destination": {"region": "onprem:lu-national-1"},
}

test_decision_has_the_design_shape if {
	tenant := _research
	export := _export_request
	[d, e] := [main.decision, main.model_export] with input.action as "model.export"
		with input.tenant as tenant
		with input.export as export
	object.keys(d) == {"allow", "violations", "obligations", "warnings"}
	d.allow == true
	count(d.obligations) == 2
	d == e
}

test_violations_from_every_package_deny if {
	d := main.sandbox_provision with input.action as "sandbox.provision"
		with input.cluster as {"region": "aws:us-east-1"}
		with input.tenant as {"name": "b", "sector": "finance", "jurisdiction": "LU"}
		with input.sandbox as {"name": "s", "datasets": [{"name": "ghost"}]}
	d.allow == false
	codes := {v.code | some v in d.violations}
	"RESIDENCY_CLUSTER_OUTSIDE_AREA" in codes
	"DATASET_NOT_REGISTERED" in codes
	"FINANCE_SUPERVISOR_ATTESTATION_MISSING" in codes
}

test_provision_entry_point_matches_decision if {
	[d, e] := [main.decision, main.sandbox_provision] with input.action as "sandbox.provision"
	d == e
	d.allow == false
}

test_grant_entry_point_matches_decision if {
	[d, e] := [main.decision, main.dataset_grant] with input.action as "dataset.grant"
	d == e
}

test_export_entry_point_matches_decision if {
	[d, e] := [main.decision, main.model_export] with input.action as "model.export"
	d == e
}

test_custom_policies_deny_warn_and_dry_run if {
	policies := {
		"deny-all": {"package": "probe", "enforcement": "deny", "sectors": []},
		"warn-research": {"package": "probe", "enforcement": "warn", "sectors": ["research"]},
		"dry-finance": {"package": "probe", "enforcement": "dryrun", "sectors": ["finance"]},
	}
	found := {{"code": "PROBE", "msg": "m", "regulation": "r", "subject": "s"}}
	tenant := _research
	export := _export_request
	d := main.model_export with input.action as "model.export"
		with input.tenant as tenant
		with input.export as export
		with data.custom_policies as policies
		with data.custom.probe.violations as found
	d.allow == false
	d.violations == {{"code": "PROBE", "msg": "m", "regulation": "r", "subject": "s"}}
	d.warnings == {{
		"code": "PROBE", "msg": "m", "regulation": "r", "subject": "s",
		"policy": "warn-research", "enforcement": "warn",
	}}
}
