package custom.egress_narrow_cidr_test

import data.custom.egress_narrow_cidr

_sandbox(cidrs) := {"name": "s1", "egress": [{"cidr": c, "ports": [443]} | some c in cidrs]}

_codes(violations) := {v.code | some v in violations}

test_host_and_narrow_networks_pass if {
	sandbox := _sandbox(["198.51.100.10/32", "198.51.100.0/24", "203.0.113.7", "2001:db8::/64", "2001:db8::1"])
	count(egress_narrow_cidr.violations) == 0 with input.sandbox as sandbox
}

test_wide_ipv4_network_is_denied if {
	sandbox := _sandbox(["0.0.0.0/0", "198.51.100.10/32"])
	violations := egress_narrow_cidr.violations with input.sandbox as sandbox
	_codes(violations) == {"CUSTOM_EGRESS_CIDR_TOO_WIDE"}
	some v in violations
	v.subject == "sandbox/s1"
	contains(v.msg, "0.0.0.0/0")
}

test_wide_ipv6_network_is_denied if {
	sandbox := _sandbox(["2001:db8::/32"])
	count(egress_narrow_cidr.violations) == 1 with input.sandbox as sandbox
}

test_limits_come_from_policy_data if {
	sandbox := _sandbox(["198.51.100.0/24"])
	limits := {"egress-narrow-cidr": {"minPrefixIPv4": 28}}
	count(egress_narrow_cidr.violations) == 1 with input.sandbox as sandbox with data.custom_data as limits
}

test_sandbox_without_egress_passes if {
	sandbox := {"name": "s1"}
	count(egress_narrow_cidr.violations) == 0 with input.sandbox as sandbox
}
