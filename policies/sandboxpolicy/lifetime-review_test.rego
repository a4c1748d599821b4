package custom.lifetime_review_test

import data.custom.lifetime_review

test_ninety_days_pass if {
	sandbox := {"name": "s1", "lifetime": {"seconds": 7776000}}
	count(lifetime_review.violations) == 0 with input.sandbox as sandbox
}

test_a_year_is_reported_in_days if {
	sandbox := {"name": "s1", "lifetime": {"seconds": 31536000}}
	violations := lifetime_review.violations with input.sandbox as sandbox
	msg := "the sandbox asks to live 365 days, more than the 180 days this platform allows without review"
	{v.msg | some v in violations} == {msg}
}

test_threshold_comes_from_policy_data if {
	sandbox := {"name": "s1", "lifetime": {"seconds": 7776000}}
	limits := {"lifetime-review": {"maxDays": 30}}
	count(lifetime_review.violations) == 1 with input.sandbox as sandbox with data.custom_data as limits
}
