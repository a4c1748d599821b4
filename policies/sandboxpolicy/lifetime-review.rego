# METADATA
# title: Long-lived sandboxes are reviewed
# description: |
#   A default SandboxPolicy shipped with the chart, enforced as a warning. Regulated
#   data should be kept no longer than its purpose needs; a sandbox asking to live
#   longer than maxDays (this policy's data, 180 by default) is reported so its
#   owner can justify or shorten it. Simplified: the limit is a platform choice, not
#   a legal maximum.
# custom:
#   sandboxPolicy:
#     name: lifetime-review
#     enforcement: warn
#     sectors: []
#     data:
#       maxDays: 180
package custom.lifetime_review

default _max_days := 180

# _max_days is maxDays from this policy's data (the SandboxPolicy's spec.data).
_max_days := data.custom_data["lifetime-review"].maxDays

# METADATA
# title: Lifetime beyond the review threshold
# description: A sandbox lifetime beyond maxDays days is reported for review.
# custom:
#   code: CUSTOM_LIFETIME_LONG
#   regulation: GDPR Art. 5(1)(e) (storage limitation; platform threshold)
violations contains v if {
	seconds := object.get(input, ["sandbox", "lifetime", "seconds"], 0)
	seconds > _max_days * 86400
	v := {
		"code": "CUSTOM_LIFETIME_LONG",
		"msg": sprintf(
			"the sandbox asks to live %d days, more than the %d days this platform allows without review",
			[ceil(seconds / 86400), _max_days],
		),
		"regulation": "GDPR Art. 5(1)(e) (storage limitation; platform threshold)",
		"subject": concat("", ["sandbox/", object.get(input, ["sandbox", "name"], "")]),
	}
}
