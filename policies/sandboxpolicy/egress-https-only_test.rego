package custom.egress_https_only_test

import data.custom.egress_https_only

test_https_passes if {
	sandbox := {"name": "s1", "egress": [{"cidr": "198.51.100.10/32", "ports": [443]}]}
	count(egress_https_only.violations) == 0 with input.sandbox as sandbox
}

test_every_other_port_is_reported if {
	sandbox := {"name": "s1", "egress": [{"cidr": "198.51.100.10/32", "ports": [443, 80, 5432]}]}
	violations := egress_https_only.violations with input.sandbox as sandbox
	{v.msg | some v in violations} == {
		"egress entry 198.51.100.10/32 opens port 80, which is not HTTPS",
		"egress entry 198.51.100.10/32 opens port 5432, which is not HTTPS",
	}
}
