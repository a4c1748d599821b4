# METADATA
# title: Sandbox lifetime
# description: |
#   Storage limitation: no sandbox holds data longer than the platform's bound
#   (policies/data/retention sandbox.maxLifetimeDays). The lifetime in seconds is
#   derived by the platform from the ttl or expiresAt; one too large for a timestamp
#   arrives capped, never as an error, and is refused here. Per-dataset rule set:
#   provisioning and every grant evaluate it alike (policies/main/main.rego).
package lifetime

import data.data.retention
import data.lib

_max_days := retention.sandbox.maxLifetimeDays

# METADATA
# title: Lifetime within the platform bound
# description: |
#   A sandbox may not ask to live longer than sandbox.maxLifetimeDays (ten years by
#   default). Simplified: the GDPR sets no number; the bound is the platform's, and
#   sector rules (public sector) and tenant quotas may set shorter ones.
# custom:
#   code: SANDBOX_LIFETIME_TOO_LONG
#   regulation: GDPR Art. 5(1)(e) storage limitation (platform bound)
data_violations contains v if {
	lib.data_access
	seconds := object.get(input, ["sandbox", "lifetime", "seconds"], 0)
	is_number(seconds)
	seconds > _max_days * 86400
	v := lib.violation(
		"SANDBOX_LIFETIME_TOO_LONG",
		concat("", [
			"the sandbox asks to live more than ", format_int(_max_days, 10),
			" days, the longest this platform allows; shorten spec.lifetime",
		]),
		"GDPR Art. 5(1)(e) storage limitation (platform bound)",
		concat("", ["sandbox/", lib.sandbox_name]),
	)
}
