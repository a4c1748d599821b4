# METADATA
# title: Finance sector
# description: |
#   Rules for tenants supervised as financial entities (banks, investment firms):
#   a supervisory authority on record, a key per sandbox, five years of audit
#   records, no egress outside the EEA. Export reviewer counts live in the export
#   package (policies/data/sectors exportReviewers.finance = 2).
package sector.finance

import data.data.retention
import data.lib

_applies if lib.sector == "finance"

# Obligation: the audit log must keep records for the finance retention period.
obligations contains o if {
	_applies
	lib.provisioning
	o := lib.obligation(
		"AUDIT_RETENTION_MIN_DAYS",
		retention.finance.auditLogDays,
		"MiFID II Art. 16(6); Delegated Regulation (EU) 2017/565 Art. 72 (simplified)",
	)
}

# _location_contracted(d) is true when the cluster's region, or its country, is
# among the contractual data locations of dataset d's ICT arrangement.
_location_contracted(d) if lib.cluster_region in object.get(d, ["ictThirdParty", "dataLocations"], [])

_location_contracted(d) if lib.cluster_country in object.get(d, ["ictThirdParty", "dataLocations"], [])

# METADATA
# title: Per-sandbox encryption key
# description: |
#   A finance sandbox must be encrypted with a key of its own, so that destroying
#   the key erases the sandbox's data and nothing else.
# custom:
#   code: FINANCE_PER_SANDBOX_KEY_REQUIRED
#   regulation: DORA Art. 9; Delegated Regulation (EU) 2024/1774 Art. 6-7 (simplified)
violations contains v if {
	_applies
	lib.provisioning
	not object.get(input.cluster, ["keys", "perSandbox"], false) == true
	v := lib.violation(
		"FINANCE_PER_SANDBOX_KEY_REQUIRED",
		"the cluster's key provider does not issue a key per sandbox",
		"DORA Art. 9; Delegated Regulation (EU) 2024/1774 Art. 6-7 (simplified)",
		concat("", ["sandbox/", lib.sandbox_name]),
	)
}

# METADATA
# title: Audit records kept five years
# description: |
#   The platform's audit log must keep records at least as long as the finance
#   retention value in policies/data/retention (five years).
# custom:
#   code: FINANCE_AUDIT_RETENTION_TOO_SHORT
#   regulation: MiFID II Art. 16(6); Delegated Regulation (EU) 2017/565 Art. 72 (simplified)
violations contains v if {
	_applies
	lib.provisioning
	days := object.get(input.cluster, ["audit", "retentionDays"], 0)
	days < retention.finance.auditLogDays
	v := lib.violation(
		"FINANCE_AUDIT_RETENTION_TOO_SHORT",
		concat("", [
			"audit log keeps records ", format_int(days, 10), " days; finance needs at least ",
			format_int(retention.finance.auditLogDays, 10),
		]),
		"MiFID II Art. 16(6); Delegated Regulation (EU) 2017/565 Art. 72 (simplified)",
		concat("", ["cluster/", lib.cluster_region]),
	)
}

# METADATA
# title: No egress outside the EEA
# description: |
#   Every egress allow-list entry of a finance sandbox must point at a catalogued
#   region inside the EEA. Simplified: an entry's location is the region it names.
# custom:
#   code: FINANCE_EGRESS_OUTSIDE_EEA
#   regulation: DORA Art. 28; EBA/GL/2019/02 (simplified)
violations contains v if {
	_applies
	lib.provisioning
	some entry in object.get(input.sandbox, "egress", [])
	region := object.get(entry, "region", "")
	not lib.region_facts(region).eea
	v := lib.violation(
		"FINANCE_EGRESS_OUTSIDE_EEA",
		concat("", [
			"egress to '", object.get(entry, "cidr", ""), "' in region '", region,
			"' is unknown or outside the EEA",
		]),
		"DORA Art. 28; EBA/GL/2019/02 (simplified)",
		concat("", ["sandbox/", lib.sandbox_name]),
	)
}

# METADATA
# title: Supervisory authority attested
# description: |
#   A finance tenant must carry a platform-verified attestation naming its
#   supervisory authority (for example CSSF), so the supervisor of the sandbox is
#   known. Simplified: the attestation stands for the outsourcing notification
#   the entity owes its supervisor.
# custom:
#   code: FINANCE_SUPERVISOR_ATTESTATION_MISSING
#   regulation: DORA Art. 28(3); CSSF Circular 22/806 (simplified)
data_violations contains v if {
	_applies
	lib.data_access
	not lib.attested("supervisoryAuthority")
	v := lib.violation(
		"FINANCE_SUPERVISOR_ATTESTATION_MISSING",
		"finance tenant has no attested supervisory authority",
		"DORA Art. 28(3); CSSF Circular 22/806 (simplified)",
		concat("", ["tenant/", lib.tenant_name]),
	)
}

# METADATA
# title: ICT arrangement is in the register of information
# description: |
#   A financial entity may process its data on this platform only under a
#   contractual arrangement recorded in its register of information; every dataset
#   a finance tenant reads must carry the register reference
#   (ictThirdParty.registerReference). Blank is missing.
# custom:
#   code: FINANCE_ICT_REGISTER_MISSING
#   regulation: DORA Art. 28(3)
data_violations contains v if {
	_applies
	lib.data_access
	some d in lib.datasets
	not lib.nonblank(object.get(d, ["ictThirdParty", "registerReference"], ""))
	v := lib.violation(
		"FINANCE_ICT_REGISTER_MISSING",
		concat("", ["dataset '", d.name, "' has no ICT third-party register reference (ictThirdParty.registerReference)"]),
		"DORA Art. 28(3)",
		concat("", ["dataset/", d.name]),
	)
}

# METADATA
# title: Sandbox region is a contractual data location
# description: |
#   The contract with the ICT third-party service provider states where the data is
#   processed and stored; the sandbox runs in the cluster's region, which must be one
#   of the dataset's contractual data locations (a region id or its country).
# custom:
#   code: FINANCE_DATA_LOCATION_NOT_CONTRACTED
#   regulation: DORA Art. 30(2)(b)
data_violations contains v if {
	_applies
	lib.data_access
	some d in lib.datasets
	not _location_contracted(d)
	v := lib.violation(
		"FINANCE_DATA_LOCATION_NOT_CONTRACTED",
		concat("", [
			"the sandbox runs in '", lib.cluster_region, "' (", lib.cluster_country,
			"), not among the contractual data locations of dataset '", d.name, "' (ictThirdParty.dataLocations)",
		]),
		"DORA Art. 30(2)(b)",
		concat("", ["dataset/", d.name]),
	)
}
