package sector.health_test

import data.sector.health

# Fixtures are bound to local variables, one per line, before `with`: regopy 1.5
# ignores `with input.x as <rule reference>` (opa applies it).

_permit := {
	"id": "P-1",
	"datasets": ["icu"],
	"users": ["dr.alice"],
	"groups": ["icu-researchers"],
	"purposes": ["sepsis"],
	"validFrom": "2025-01-01T00:00:00Z",
	"validUntil": "2035-12-31T23:59:59Z",
}

_members := [
	{"user": "dr.alice", "role": "owner"},
	{"group": "icu-researchers", "role": "member"},
	{"user": "dr.bob", "role": "reviewer"},
]

_tenant := {
	"name": "hosp",
	"sector": "health",
	"jurisdiction": "LU",
	"members": _members,
	"attestations": {"ethicsApproval": "E-1", "dataPermit": _permit},
}

_records := {"name": "icu", "sector": "health", "personalData": "special-category"}

_sandbox := {"name": "s1", "purpose": "sepsis", "lifetime": {"expiresAt": "2030-01-01T00:00:00Z"}}

_codes(violations) := {v.code | some v in violations}

test_permitted_identifying_data_passes if {
	tenant := _tenant
	records := _records
	sandbox := _sandbox
	count(health.violations) == 0 with input.action as "sandbox.provision"
		with input.now as "2026-12-06T00:00:00Z"
		with input.cluster as {"audit": {"retentionDays": 365}}
		with input.tenant as tenant
		with input.datasets as [records]
		with input.sandbox as sandbox
	count(health.data_violations) == 0 with input.action as "dataset.grant"
		with input.now as "2026-12-06T00:00:00Z"
		with input.tenant as tenant
		with input.datasets as [records]
		with input.sandbox as sandbox
}

test_identifying_data_without_permit_is_denied if {
	records := _records
	sandbox := _sandbox
	codes := _codes(health.data_violations) with input.action as "dataset.grant"
		with input.now as "2026-12-06T00:00:00Z"
		with input.tenant as {"name": "lab", "sector": "research", "attestations": {"ethicsApproval": "E-1"}}
		with input.datasets as [records]
		with input.sandbox as sandbox
	codes == {"HEALTH_DATA_NOT_PSEUDONYMISED", "HEALTH_DATA_PERMIT_MISSING"}
}

# GDPR Recital 26: pseudonymised data is still personal data, and health data is
# special-category data (Art. 9(1)): it needs the permit, not the ethics approval.
test_pseudonymised_data_needs_a_permit if {
	sandbox := _sandbox
	codes := _codes(health.data_violations) with input.action as "dataset.grant"
		with input.now as "2026-12-06T00:00:00Z"
		with input.tenant as {"name": "hosp", "sector": "health", "attestations": {"ethicsApproval": "E-1"}}
		with input.datasets as [{"name": "icu", "sector": "health", "personalData": "pseudonymised"}]
		with input.sandbox as sandbox
	codes == {"HEALTH_DATA_PERMIT_MISSING"}
	count(health.data_violations) == 0 with input.action as "dataset.grant"
		with input.now as "2026-12-06T00:00:00Z"
		with input.tenant as {"name": "hosp", "sector": "health", "attestations": {"dataPermit": _permit}}
		with input.datasets as [{"name": "icu", "sector": "health", "personalData": "pseudonymised"}]
		with input.sandbox as sandbox
}

test_anonymised_health_data_needs_no_permit if {
	sandbox := _sandbox
	count(health.data_violations) == 0 with input.action as "dataset.grant"
		with input.now as "2026-12-06T00:00:00Z"
		with input.tenant as {"name": "lab", "sector": "research"}
		with input.datasets as [{"name": "icu", "sector": "health", "personalData": "anonymised"}]
		with input.sandbox as sandbox
}

test_permit_must_cover_purpose_and_lifetime if {
	tenant := _tenant
	records := _records
	codes := _codes(health.data_violations) with input.action as "sandbox.provision"
		with input.now as "2026-12-06T00:00:00Z"
		with input.cluster as {"audit": {"retentionDays": 365}}
		with input.tenant as tenant
		with input.datasets as [records]
		with input.sandbox as {"name": "s1", "purpose": "billing", "lifetime": {"expiresAt": "2036-01-01T00:00:00Z"}}
	codes == {"HEALTH_PERMIT_PURPOSE_NOT_COVERED", "HEALTH_PERMIT_EXPIRES_BEFORE_SANDBOX"}
}

test_unbounded_sandbox_outlives_permit if {
	tenant := _tenant
	records := _records
	codes := _codes(health.data_violations) with input.action as "sandbox.provision"
		with input.now as "2026-12-06T00:00:00Z"
		with input.cluster as {"audit": {"retentionDays": 365}}
		with input.tenant as tenant
		with input.datasets as [records]
		with input.sandbox as {"name": "s1", "purpose": "sepsis"}
	codes == {"HEALTH_PERMIT_EXPIRES_BEFORE_SANDBOX"}
}

test_short_access_log_retention_is_denied if {
	tenant := _tenant
	sandbox := _sandbox
	codes := _codes(health.violations) with input.action as "sandbox.provision"
		with input.now as "2026-12-06T00:00:00Z"
		with input.cluster as {"audit": {"retentionDays": 364}}
		with input.tenant as tenant
		with input.sandbox as sandbox
	codes == {"HEALTH_ACCESS_LOG_RETENTION_TOO_SHORT"}
}

test_only_models_and_aggregates_leave if {
	tenant := _tenant
	count(health.violations) == 0 with input.action as "model.export"
		with input.now as "2026-12-06T00:00:00Z"
		with input.tenant as tenant
		with input.export as {"name": "e1", "artifact": {"kind": "aggregate"}}
	codes := _codes(health.violations) with input.action as "model.export"
		with input.now as "2026-12-06T00:00:00Z"
		with input.tenant as tenant
		with input.export as {"name": "e1", "artifact": {"kind": "dataset"}}
	codes == {"HEALTH_EXPORT_ARTIFACT_NOT_ALLOWED"}
}

# EHDS Art. 68: a permit names the data, the data users and its validity.
test_permit_names_datasets_users_and_validity if {
	records := _records
	sandbox := _sandbox
	tenant := object.union(_tenant, {"members": [
		{"user": "dr.alice", "role": "owner"},
		{"user": "intern", "role": "member"},
		{"group": "all-staff", "role": "member"},
		{"user": "dr.bob", "role": "reviewer"},
	]})
	found := health.data_violations with input.action as "dataset.grant"
		with input.now as "2026-12-06T00:00:00Z"
		with input.tenant as tenant
		with input.datasets as [records, object.union(records, {"name": "genomes"})]
		with input.sandbox as sandbox
	{v.code | some v in found} == {"HEALTH_PERMIT_DATASET_NOT_COVERED", "HEALTH_PERMIT_USER_NOT_COVERED"}
	{v.msg | some v in found; v.code == "HEALTH_PERMIT_USER_NOT_COVERED"} == {
		"data permit 'P-1' does not name user:intern among its data users",
		"data permit 'P-1' does not name group:all-staff among its data users",
	}
	hospital := _tenant
	early := _codes(health.data_violations) with input.action as "dataset.grant"
		with input.now as "2024-12-06T00:00:00Z"
		with input.tenant as hospital
		with input.datasets as [records]
		with input.sandbox as sandbox
	early == {"HEALTH_PERMIT_NOT_YET_VALID"}
}

test_identified_is_read_from_the_two_fields if {
	sandbox := _sandbox
	lab := {"name": "lab", "sector": "research", "attestations": {"dataPermit": _permit}}
	codes := _codes(health.data_violations) with input.action as "dataset.grant"
		with input.now as "2026-12-06T00:00:00Z"
		with input.tenant as lab
		with input.datasets as [{"name": "icu", "sector": "health", "identifiability": "identified", "category": "ordinary"}]
		with input.sandbox as sandbox
	codes == {"HEALTH_DATA_NOT_PSEUDONYMISED"}
}

test_a_malformed_permit_is_no_permit if {
	sandbox := _sandbox
	codes := _codes(health.data_violations) with input.action as "dataset.grant"
		with input.now as "2026-12-06T00:00:00Z"
		with input.tenant as {"name": "lab", "sector": "research", "attestations": {"dataPermit": "HDAB-1"}}
		with input.datasets as [{"name": "icu", "sector": "health", "identifiability": "pseudonymised"}]
		with input.sandbox as sandbox
	codes == {"HEALTH_DATA_PERMIT_MISSING"}
}
