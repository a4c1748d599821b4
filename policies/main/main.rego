# METADATA
# title: Decision entry point
# description: |
#   The one place regsandbox queries: data.main.decision. It gathers the violations
#   and obligations of every policy package and answers with the decision shape of
#   DESIGN.md (the engine adds policy_digest). Allowed only when nothing is violated.
# entrypoint: true
package main

import data.dataset
import data.export
import data.lib
import data.residency
import data.sector.finance
import data.sector.health
import data.sector.public

# The actions a decision can be asked for.
actions := {"sandbox.provision", "dataset.grant", "model.export"}

# METADATA
# title: Known action
# description: |
#   A decision for an action no policy knows is a deny, so that a typo never
#   becomes a permission.
# custom:
#   code: POLICY_UNKNOWN_ACTION
#   regulation: regsandbox fail-closed rule
violations contains v if {
	not lib.action in actions
	v := lib.violation(
		"POLICY_UNKNOWN_ACTION",
		concat("", ["action '", lib.action, "' is not one of sandbox.provision, dataset.grant, model.export"]),
		"regsandbox fail-closed rule",
		"action",
	)
}

violations contains v if some v in residency.violations

violations contains v if some v in dataset.violations

violations contains v if some v in finance.violations

violations contains v if some v in health.violations

violations contains v if some v in public.violations

violations contains v if some v in export.violations

obligations contains o if some o in finance.obligations

obligations contains o if some o in health.obligations

obligations contains o if some o in export.obligations

default allow := false

allow if count(violations) == 0

decision := {
	"allow": allow,
	"violations": violations,
	"obligations": obligations,
}
