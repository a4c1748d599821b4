# METADATA
# title: Decision entry points
# description: |
#   Where regsandbox queries. data.main.decision answers any action with the decision
#   shape of DESIGN.md (the engine adds policy_digest); data.main.sandbox_provision,
#   data.main.dataset_grant and data.main.model_export answer one action each and
#   evaluate only the packages that can apply to it, which is what the engines query.
#   A decision is allowed only when nothing is violated.
#
#   Every check that decides whether a sandbox may hold a dataset is a per-dataset
#   rule (a package's data_violations) and belongs to one rule set, data_access.
#   Provisioning and every grant (first grant, Dataset change, re-evaluation) both
#   evaluate that same set, so they cannot apply different checks to a dataset;
#   provisioning adds only the checks about the sandbox itself (violations).
#
#   Custom policies (SandboxPolicy resources) are modules under package custom.<id>
#   defining violations; data.custom_policies[<name>] says how each one is enforced
#   ({"package": <id>, "enforcement": "deny" | "warn" | "dryrun", "sectors": [...]})
#   and data.custom_data[<name>] holds its own data. Deny violations join
#   violations; warn and dryrun ones become warnings.
# entrypoint: true
package main

import data.dataset
import data.export
import data.lib
import data.lifetime
import data.residency
import data.sector.finance
import data.sector.health
import data.sector.public

# The actions a decision can be asked for.
actions := {"sandbox.provision", "dataset.grant", "model.export"}

# decision dispatches to the entry point of the input's action.
decision := sandbox_provision if lib.action == "sandbox.provision"

decision := dataset_grant if lib.action == "dataset.grant"

decision := model_export if lib.action == "model.export"

decision := unknown_action if not lib.action in actions

# --- one entry point per action ------------------------------------------------------

# data_access is the per-dataset rule set: everything that decides whether the
# sandbox may hold the input's datasets.
data_access := ((_residency_and_grants | health.data_violations) | public.data_violations) | lifetime.data_violations

_residency_and_grants := (residency.data_violations | dataset.data_violations) | finance.data_violations

sandbox_provision := _decision(
	(((data_access | residency.violations) | finance.violations) | health.violations),
	finance.obligations | health.obligations,
)

dataset_grant := _decision(data_access, set())

model_export := _decision(
	((residency.violations | health.violations) | export.violations),
	export.obligations,
)

# METADATA
# title: Known action
# description: |
#   A decision for an action no policy knows is a deny, so that a typo never
#   becomes a permission.
# custom:
#   code: POLICY_UNKNOWN_ACTION
#   regulation: regsandbox fail-closed rule
unknown_action := _decision(
	{lib.violation(
		"POLICY_UNKNOWN_ACTION",
		concat("", ["action '", lib.action, "' is not one of sandbox.provision, dataset.grant, model.export"]),
		"regsandbox fail-closed rule",
		"action",
	)},
	set(),
)

_decision(violations, obligations) := {
	"allow": count(found) == 0,
	"violations": found,
	"obligations": obligations,
	"warnings": custom_warnings,
} if {
	found := violations | custom_violations
}

# --- custom policies -----------------------------------------------------------------

# _custom contains [name, enforcement, violation] for every violation of a custom
# policy whose scope includes the tenant's sector.
_custom contains [name, policy.enforcement, v] if {
	some name, policy in data.custom_policies
	_in_scope(policy.sectors)
	some v in data.custom[policy["package"]].violations
}

_in_scope(sectors) if count(sectors) == 0

_in_scope(sectors) if lib.sector in sectors

# custom_violations are the violations of in-scope custom policies enforced with deny.
custom_violations contains lib.violation(
	object.get(v, "code", "CUSTOM_POLICY_VIOLATION"),
	object.get(v, "msg", ""),
	object.get(v, "regulation", ""),
	object.get(v, "subject", ""),
) if {
	some [_, "deny", v] in _custom
}

# custom_warnings are the violations of in-scope custom policies enforced with warn
# or dryrun, with the SandboxPolicy name and the enforcement.
custom_warnings contains w if {
	some [name, enforcement, v] in _custom
	enforcement != "deny"
	w := {
		"code": object.get(v, "code", "CUSTOM_POLICY_VIOLATION"),
		"msg": object.get(v, "msg", ""),
		"regulation": object.get(v, "regulation", ""),
		"subject": object.get(v, "subject", ""),
		"policy": name,
		"enforcement": enforcement,
	}
}
