# METADATA
# title: Health sector
# description: |
#   Rules for secondary use of electronic health data in the spirit of the European
#   Health Data Space. Personal health data, pseudonymised included (GDPR Recital 26),
#   is special-category data (Art. 9(1)): whoever reads it needs a data permit that
#   covers the sandbox's purpose and lifetime, and identified data also an ethics
#   approval. These per-dataset rules (data_violations) apply to any tenant, on
#   provisioning and on every grant alike. For health tenants, only models or
#   aggregates leave, and access logs are kept at least a year.
package sector.health

import data.data.retention
import data.data.sectors
import data.lib

_applies if lib.sector == "health"

default _permit := {}

# _permit is the tenant's data permit; anything but a non-empty object counts as none.
_permit := p if {
	p := lib.attestations.dataPermit
	is_object(p)
}

_has_permit if count(_permit) > 0

# _health_personal holds the input datasets of personal health data.
_health_personal contains d if {
	some d in lib.datasets
	d.sector == "health"
	lib.personal(d)
}

_may_identify if {
	lib.attested("ethicsApproval")
	_has_permit
}

_permit_id := object.get(_permit, "id", "")

# _data_users are the tenant members who can reach sandbox data (owners and members;
# reviewers only judge exports), as "user:<name>" or "group:<name>".
_data_users contains concat(":", [kind, name]) if {
	some m in lib.members
	object.get(m, "role", "") in {"owner", "member"}
	some kind in ["user", "group"]
	name := object.get(m, kind, "")
	name != ""
}

# _permitted are the data users the permit names, in the same form.
_permitted contains concat(":", ["user", u]) if some u in object.get(_permit, "users", [])

_permitted contains concat(":", ["group", g]) if some g in object.get(_permit, "groups", [])

# _outlives(ends, valid_until) is true when a sandbox ending at ends ("" for never)
# ends after valid_until.
_outlives("", _)

_outlives(ends, valid_until) if ends > valid_until

# Obligation: keep access logs for the health retention period.
obligations contains o if {
	_applies
	lib.provisioning
	o := lib.obligation("AUDIT_RETENTION_MIN_DAYS", retention.health.accessLogDays, "EHDS Art. 73")
}

# METADATA
# title: Only models or aggregates leave
# description: |
#   From a health sandbox only artifacts of the kinds in policies/data/sectors
#   (model, aggregate) may be exported. Simplified: the artifact's declared kind is
#   trusted; its content is not inspected.
# custom:
#   code: HEALTH_EXPORT_ARTIFACT_NOT_ALLOWED
#   regulation: EHDS Art. 73(3) (simplified)
violations contains v if {
	_applies
	lib.exporting
	kind := object.get(input, ["export", "artifact", "kind"], "")
	not kind in sectors.health.exportArtifactKinds
	v := lib.violation(
		"HEALTH_EXPORT_ARTIFACT_NOT_ALLOWED",
		concat("", ["artifact kind '", kind, "' may not leave a health sandbox; only model or aggregate"]),
		"EHDS Art. 73(3) (simplified)",
		concat("", ["export/", object.get(input, ["export", "name"], "")]),
	)
}

# METADATA
# title: Access logs kept one year
# description: |
#   The audit log, which records every dataset access, must keep records at least
#   the health retention value in policies/data/retention (one year).
# custom:
#   code: HEALTH_ACCESS_LOG_RETENTION_TOO_SHORT
#   regulation: EHDS Art. 73
violations contains v if {
	_applies
	lib.provisioning
	days := object.get(input.cluster, ["audit", "retentionDays"], 0)
	days < retention.health.accessLogDays
	v := lib.violation(
		"HEALTH_ACCESS_LOG_RETENTION_TOO_SHORT",
		concat("", [
			"audit log keeps records ", format_int(days, 10),
			" days; health needs at least ", format_int(retention.health.accessLogDays, 10),
		]),
		"EHDS Art. 73",
		concat("", ["cluster/", lib.cluster_region]),
	)
}

# METADATA
# title: Health data is pseudonymised
# description: |
#   Directly identifying (identified) health data may be used only
#   if the tenant carries both an ethics approval and a data permit; otherwise the
#   dataset must be pseudonymised or anonymised. Applies to any tenant that reads a
#   health dataset. Simplified: the EHDS rules on when identifying data may be
#   provided are reduced to these two attestations.
# custom:
#   code: HEALTH_DATA_NOT_PSEUDONYMISED
#   regulation: EHDS Art. 66; GDPR Art. 89(1) (simplified)
data_violations contains v if {
	lib.data_access
	some d in _health_personal
	lib.identified(d)

	# After the loop on purpose: checked only when identifying health data is asked for.
	# regal ignore:non-loop-expression
	not _may_identify
	v := lib.violation(
		"HEALTH_DATA_NOT_PSEUDONYMISED",
		concat("", [
			"health dataset '", d.name, "' holds ", lib.describe(d),
			" data; it must be pseudonymised unless the tenant has an ethics approval and a data permit",
		]),
		"EHDS Art. 66; GDPR Art. 89(1) (simplified)",
		concat("", ["dataset/", d.name]),
	)
}

# METADATA
# title: Personal health data is read under a data permit
# description: |
#   Personal health data, pseudonymised included (GDPR Recital 26), is special-category
#   data (Art. 9(1)); its secondary use needs a data permit from a health data access
#   body (EHDS Art. 68), whatever the reader's sector. A missing permit denies; it
#   does not skip the permit's checks.
# custom:
#   code: HEALTH_DATA_PERMIT_MISSING
#   regulation: EHDS Art. 68; GDPR Art. 9(1), Art. 9(2)(h)-(j), Recital 26
data_violations contains v if {
	lib.data_access
	some d in _health_personal

	# After the loop on purpose: checked only when personal health data is asked for.
	# regal ignore:non-loop-expression
	not _has_permit
	v := lib.violation(
		"HEALTH_DATA_PERMIT_MISSING",
		concat("", [
			"health dataset '", d.name, "' holds ", lib.describe(d),
			" data concerning health (special-category) and the tenant has no data permit",
		]),
		"EHDS Art. 68; GDPR Art. 9(1), Art. 9(2)(h)-(j), Recital 26",
		concat("", ["dataset/", d.name]),
	)
}

# METADATA
# title: Data permit covers the sandbox purpose
# description: |
#   A sandbox reading personal health data under a data permit must state a purpose
#   the permit grants, whatever the tenant's sector.
# custom:
#   code: HEALTH_PERMIT_PURPOSE_NOT_COVERED
#   regulation: EHDS Art. 68 (simplified)
data_violations contains v if {
	lib.data_access
	_has_permit
	count(_health_personal) > 0
	purpose := lib.sandbox_purpose
	not purpose in object.get(_permit, "purposes", [])
	v := lib.violation(
		"HEALTH_PERMIT_PURPOSE_NOT_COVERED",
		concat("", ["data permit '", object.get(_permit, "id", ""), "' does not cover purpose '", purpose, "'"]),
		"EHDS Art. 68 (simplified)",
		concat("", ["sandbox/", lib.sandbox_name]),
	)
}

# METADATA
# title: Data permit covers the sandbox lifetime
# description: |
#   A sandbox working under a data permit must end no later than the permit. A
#   sandbox without an end date outlives any permit. Timestamps are UTC RFC 3339
#   strings normalised by the platform ("YYYY-MM-DDTHH:MM:SSZ"), so they compare
#   as strings.
# custom:
#   code: HEALTH_PERMIT_EXPIRES_BEFORE_SANDBOX
#   regulation: EHDS Art. 68 (simplified)
data_violations contains v if {
	lib.data_access
	_has_permit
	count(_health_personal) > 0
	ends := object.get(input.sandbox, ["lifetime", "expiresAt"], "")
	valid_until := object.get(_permit, "validUntil", "")
	_outlives(ends, valid_until)
	v := lib.violation(
		"HEALTH_PERMIT_EXPIRES_BEFORE_SANDBOX",
		concat("", [
			"sandbox ends at '", ends, "' but data permit '", object.get(_permit, "id", ""),
			"' is valid until '", valid_until, "'",
		]),
		"EHDS Art. 68 (simplified)",
		concat("", ["sandbox/", lib.sandbox_name]),
	)
}

# METADATA
# title: Data permit names the dataset
# description: |
#   A data permit covers the datasets it names (EHDS Art. 68: the permit specifies
#   the data made available). Personal health data not named in the permit is not
#   covered; a permit that names no dataset covers none.
# custom:
#   code: HEALTH_PERMIT_DATASET_NOT_COVERED
#   regulation: EHDS Art. 68
data_violations contains v if {
	lib.data_access
	_has_permit
	some d in _health_personal
	not d.name in object.get(_permit, "datasets", [])
	v := lib.violation(
		"HEALTH_PERMIT_DATASET_NOT_COVERED",
		concat("", ["data permit '", _permit_id, "' does not name dataset '", d.name, "'"]),
		"EHDS Art. 68",
		concat("", ["dataset/", d.name]),
	)
}

# METADATA
# title: Data permit names every data user
# description: |
#   Everyone who can reach the sandbox's data (the tenant's owners and members) must
#   be a data user the permit names, as a user or as a group (EHDS Art. 68: the
#   permit names the persons authorised to access the data). A member entry that is
#   a group must be named as that group. Simplified: a user is not matched against
#   the permit's groups, since the platform cannot see group membership.
# custom:
#   code: HEALTH_PERMIT_USER_NOT_COVERED
#   regulation: EHDS Art. 68
data_violations contains v if {
	lib.data_access
	_has_permit
	count(_health_personal) > 0
	some who in _data_users
	not who in _permitted
	v := lib.violation(
		"HEALTH_PERMIT_USER_NOT_COVERED",
		concat("", ["data permit '", _permit_id, "' does not name ", who, " among its data users"]),
		"EHDS Art. 68",
		concat("", ["tenant/", lib.tenant_name]),
	)
}

# METADATA
# title: Data permit is in force
# description: |
#   No data is made available under a permit before its validFrom (EHDS Art. 68);
#   its end is checked against the sandbox's lifetime above. The decision time is
#   the platform's clock (input.now); without it the permit's start cannot be
#   checked and the request is denied.
# custom:
#   code: HEALTH_PERMIT_NOT_YET_VALID
#   regulation: EHDS Art. 68
data_violations contains v if {
	lib.data_access
	_has_permit
	count(_health_personal) > 0
	valid_from := object.get(_permit, "validFrom", "")
	valid_from != ""
	not valid_from <= lib.now
	v := lib.violation(
		"HEALTH_PERMIT_NOT_YET_VALID",
		concat("", ["data permit '", _permit_id, "' is valid only from '", valid_from, "'"]),
		"EHDS Art. 68",
		concat("", ["tenant/", lib.tenant_name]),
	)
}
