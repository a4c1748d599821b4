# METADATA
# title: Egress allow-list entries are narrow
# description: |
#   A default SandboxPolicy shipped with the chart. An egress allow-list entry opens
#   a hole in a sandbox's default-deny network policy; one wider than the limits in
#   this policy's data (IPv4 /24, IPv6 /64 by default) opens most of the internet and
#   defeats the isolation the platform promises. Simplified: width stands for risk;
#   a narrow entry to an untrusted host is not caught here.
# custom:
#   sandboxPolicy:
#     name: egress-narrow-cidr
#     enforcement: deny
#     sectors: []
#     data:
#       minPrefixIPv4: 24
#       minPrefixIPv6: 64
package custom.egress_narrow_cidr

default _configured := {}

# _configured is this policy's data, as the SandboxPolicy's spec.data.
_configured := data.custom_data["egress-narrow-cidr"]

# _limits are the configured limits over the defaults.
_limits := object.union({"minPrefixIPv4": 24, "minPrefixIPv6": 64}, _configured)

# _prefix(cidr) is the prefix length of cidr; an address without one is a single host.
_prefix(cidr) := to_number(split(cidr, "/")[1]) if contains(cidr, "/")

_prefix(cidr) := 128 if {
	not contains(cidr, "/")
	contains(cidr, ":")
}

_prefix(cidr) := 32 if {
	not contains(cidr, "/")
	not contains(cidr, ":")
}

# _minimum(cidr) is the narrowest prefix allowed for the address family of cidr.
_minimum(cidr) := _limits.minPrefixIPv6 if contains(cidr, ":")

_minimum(cidr) := _limits.minPrefixIPv4 if not contains(cidr, ":")

# METADATA
# title: Egress entry too wide
# description: An egress allow-list entry wider than the configured prefix length is denied.
# custom:
#   code: CUSTOM_EGRESS_CIDR_TOO_WIDE
#   regulation: GDPR Art. 32 (security of processing; platform isolation guardrail)
violations contains v if {
	some entry in object.get(input, ["sandbox", "egress"], [])
	cidr := object.get(entry, "cidr", "")
	_prefix(cidr) < _minimum(cidr)
	v := {
		"code": "CUSTOM_EGRESS_CIDR_TOO_WIDE",
		"msg": sprintf(
			"egress entry %s opens more than a /%d; list the hosts the sandbox needs instead",
			[cidr, _minimum(cidr)],
		),
		"regulation": "GDPR Art. 32 (security of processing; platform isolation guardrail)",
		"subject": concat("", ["sandbox/", object.get(input, ["sandbox", "name"], "")]),
	}
}
