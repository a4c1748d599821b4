package lifetime_test

import data.lifetime

test_ten_years_is_the_bound if {
	count(lifetime.data_violations) == 0 with input.action as "dataset.grant"
		with input.sandbox as {"name": "s", "lifetime": {"seconds": 3650 * 86400}}
	found := lifetime.data_violations with input.action as "sandbox.provision"
		with input.sandbox as {"name": "s", "lifetime": {"seconds": (3650 * 86400) + 1}}
	{v.code | some v in found} == {"SANDBOX_LIFETIME_TOO_LONG"}
}

test_a_capped_enormous_lifetime_is_refused if {
	found := lifetime.data_violations with input.action as "dataset.grant"
		with input.sandbox as {"name": "s", "lifetime": {"ttl": "99999999999999999999w", "seconds": 9007199254740991}}
	count(found) == 1
}

test_exports_are_not_checked if {
	count(lifetime.data_violations) == 0 with input.action as "model.export"
		with input.sandbox as {"name": "s", "lifetime": {"seconds": 9007199254740991}}
}
