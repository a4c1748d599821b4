# METADATA
# title: Egress is HTTPS
# description: |
#   A default SandboxPolicy shipped with the chart, enforced as a warning. Traffic
#   leaving a sandbox should be encrypted in transit; an egress allow-list entry that
#   opens a port other than 443 is reported so a platform engineer can check it.
#   Simplified: port 443 stands for TLS; the platform does not inspect traffic.
# custom:
#   sandboxPolicy:
#     name: egress-https-only
#     enforcement: warn
#     sectors: []
package custom.egress_https_only

# METADATA
# title: Egress port other than 443
# description: Every egress allow-list port other than 443 is reported.
# custom:
#   code: CUSTOM_EGRESS_NOT_HTTPS
#   regulation: GDPR Art. 32(1)(a) (encryption in transit; simplified)
violations contains v if {
	some entry in object.get(input, ["sandbox", "egress"], [])
	some port in object.get(entry, "ports", [])
	port != 443
	v := {
		"code": "CUSTOM_EGRESS_NOT_HTTPS",
		"msg": sprintf("egress entry %s opens port %d, which is not HTTPS", [object.get(entry, "cidr", ""), port]),
		"regulation": "GDPR Art. 32(1)(a) (encryption in transit; simplified)",
		"subject": concat("", ["sandbox/", object.get(input, ["sandbox", "name"], "")]),
	}
}
