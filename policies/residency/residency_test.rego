package residency_test

import data.residency

_cluster := {
	"region": "onprem:lu-national-1",
	"jurisdiction": "LU",
	"keys": {"provider": "local", "region": "onprem:lu-national-1", "perSandbox": true},
	"audit": {"retentionDays": 1826},
}

_tenant := {
	"name": "lux-bank",
	"sector": "finance",
	"jurisdiction": "LU",
	"attestations": {"supervisoryAuthority": "CSSF"},
}

_dataset := {
	"name": "tx",
	"sector": "finance",
	"jurisdiction": "LU",
	"location": {"region": "onprem:lu-national-1"},
	"personalData": "pseudonymised",
	"allowedPurposes": ["fraud"],
}

_sandbox := {
	"name": "s1",
	"purpose": "fraud",
	"region": "onprem:lu-national-1",
	"datasets": [{"name": "tx", "purpose": "fraud"}],
}

_codes(violations) := {v.code | some v in violations}

# Fixtures are bound to local variables, one per line, before `with`: regopy 1.5
# ignores `with input.x as <rule reference>` (opa applies it).

test_compliant_provision_has_no_violation if {
	cluster := _cluster
	tenant := _tenant
	dataset := _dataset
	sandbox := _sandbox
	count(residency.violations) == 0 with input.action as "sandbox.provision"
		with input.cluster as cluster
		with input.tenant as tenant
		with input.datasets as [dataset]
		with input.sandbox as sandbox
}

test_unknown_cluster_region_is_denied if {
	tenant := _tenant
	codes := _codes(residency.violations) with input.action as "sandbox.provision"
		with input.cluster as object.union(_cluster, {"region": "moon:base-1"})
		with input.tenant as tenant
		with input.sandbox as object.union(_sandbox, {"region": ""})
	"RESIDENCY_UNKNOWN_REGION" in codes
}

test_us_cluster_is_outside_finance_area if {
	sandbox := _sandbox
	tenant := _tenant
	codes := _codes(residency.violations) with input.action as "sandbox.provision"
		with input.cluster as object.union(_cluster, {"region": "aws:us-east-1"})
		with input.tenant as tenant
		with input.sandbox as sandbox
	codes == {"RESIDENCY_CLUSTER_OUTSIDE_AREA", "RESIDENCY_SANDBOX_REGION_MISMATCH"}
}

test_public_sector_stays_national if {
	codes := _codes(residency.violations) with input.action as "sandbox.provision"
		with input.cluster as object.union(_cluster, {
			"region": "gcp:europe-west3",
			"keys": {"region": "gcp:europe-west3", "perSandbox": true},
		})
		with input.tenant as object.union(_tenant, {"sector": "public"})
		with input.sandbox as object.union(_sandbox, {"region": ""})
	codes == {"RESIDENCY_CLUSTER_OUTSIDE_AREA", "RESIDENCY_KEY_OUTSIDE_AREA"}
}

test_key_outside_area_is_denied if {
	sandbox := _sandbox
	tenant := _tenant
	codes := _codes(residency.violations) with input.action as "sandbox.provision"
		with input.cluster as object.union(_cluster, {"keys": {"region": "aws:us-west-2", "perSandbox": true}})
		with input.tenant as tenant
		with input.sandbox as sandbox
	codes == {"RESIDENCY_KEY_OUTSIDE_AREA"}
}

test_personal_dataset_in_us_is_denied if {
	cluster := _cluster
	sandbox := _sandbox
	tenant := _tenant
	codes := _codes(residency.data_violations) with input.action as "dataset.grant"
		with input.cluster as cluster
		with input.tenant as tenant
		with input.datasets as [object.union(_dataset, {"location": {"region": "aws:us-east-1"}})]
		with input.sandbox as sandbox
	codes == {"RESIDENCY_DATASET_OUTSIDE_AREA", "RESIDENCY_DATASET_OUTSIDE_EEA"}
}

test_anonymised_dataset_in_adequacy_country_only_breaks_area if {
	cluster := _cluster
	sandbox := _sandbox
	tenant := _tenant
	codes := _codes(residency.data_violations) with input.action as "dataset.grant"
		with input.cluster as cluster
		with input.tenant as tenant
		with input.datasets as [object.union(_dataset, {
			"personalData": "anonymised",
			"location": {"region": "aws:eu-central-2"},
		})]
		with input.sandbox as sandbox
	codes == {"RESIDENCY_DATASET_OUTSIDE_AREA"}
}

test_partial_adequacy_does_not_count if {
	cluster := _cluster
	sandbox := _sandbox
	tenant := _tenant
	codes := _codes(residency.data_violations) with input.action as "dataset.grant"
		with input.cluster as cluster
		with input.tenant as tenant
		with input.datasets as [object.union(_dataset, {"sector": "research", "location": {"region": "aws:ca-central-1"}})]
		with input.sandbox as sandbox
	codes == {"RESIDENCY_DATASET_OUTSIDE_AREA", "RESIDENCY_DATASET_OUTSIDE_EEA"}
}

test_special_category_stays_in_eea_even_with_adequacy if {
	codes := _codes(residency.data_violations) with input.action as "sandbox.provision"
		with input.now as "2026-12-06T00:00:00Z"
		with input.cluster as object.union(_cluster, {
			"region": "azure:switzerlandnorth",
			"keys": {"region": "azure:switzerlandnorth", "perSandbox": true},
		})
		with input.tenant as object.union(_tenant, {"sector": "research", "jurisdiction": "CH"})
		with input.datasets as [object.union(_dataset, {"sector": "research", "personalData": "special-category"})]
		with input.sandbox as object.union(_sandbox, {"region": ""})
	codes == {"RESIDENCY_SPECIAL_CATEGORY_OUTSIDE_EEA"}
}

test_export_of_personal_model_to_us_is_denied if {
	dataset := _dataset
	tenant := _tenant
	codes := _codes(residency.violations) with input.action as "model.export"
		with input.tenant as tenant
		with input.datasets as [dataset]
		with input.export as {"name": "m1", "destination": {"region": "aws:us-east-1"}}
	codes == {"RESIDENCY_EXPORT_OUTSIDE_EEA", "RESIDENCY_EXPORT_OUTSIDE_DATA_AREA"}
}

test_export_to_japan_is_allowed_for_personal_but_not_special if {
	dataset := object.union(_dataset, {"sector": "research"})
	tenant := _tenant
	count(residency.violations) == 0 with input.action as "model.export"
		with input.now as "2026-12-06T00:00:00Z"
		with input.tenant as tenant
		with input.datasets as [dataset]
		with input.export as {"name": "m1", "destination": {"region": "aws:ap-northeast-1"}}
	codes := _codes(residency.violations) with input.action as "model.export"
		with input.now as "2026-12-06T00:00:00Z"
		with input.tenant as tenant
		with input.datasets as [object.union(dataset, {"personalData": "special-category"})]
		with input.export as {"name": "m1", "destination": {"region": "aws:ap-northeast-1"}}
	codes == {"RESIDENCY_EXPORT_OUTSIDE_EEA"}
}

test_export_to_unknown_region_is_denied if {
	tenant := _tenant
	codes := _codes(residency.violations) with input.action as "model.export"
		with input.tenant as tenant
		with input.export as {"name": "m1", "destination": {"region": "nowhere"}}
	codes == {"RESIDENCY_UNKNOWN_REGION"}
}

test_finance_model_stays_in_the_eea_like_its_data if {
	dataset := _dataset
	tenant := _tenant
	codes := _codes(residency.violations) with input.action as "model.export"
		with input.now as "2026-12-06T00:00:00Z"
		with input.tenant as tenant
		with input.datasets as [dataset]
		with input.export as {"name": "m1", "destination": {"region": "aws:ap-northeast-1"}}
	codes == {"RESIDENCY_EXPORT_OUTSIDE_DATA_AREA"}
}

test_pseudonymised_health_data_is_special_category if {
	dataset := object.union(_dataset, {"sector": "health"})
	tenant := _tenant
	codes := _codes(residency.violations) with input.action as "model.export"
		with input.tenant as tenant
		with input.datasets as [dataset]
		with input.export as {"name": "m1", "destination": {"region": "gcp:europe-west6"}}
	codes == {"RESIDENCY_EXPORT_OUTSIDE_EEA", "RESIDENCY_EXPORT_OUTSIDE_DATA_AREA"}
}

test_special_category_egress_needs_eea_or_adequacy if {
	cluster := _cluster
	tenant := _tenant
	dataset := object.union(_dataset, {"personalData": "special-category"})
	egress := [
		{"cidr": "192.0.2.0/28", "region": "gcp:europe-west6"},
		{"cidr": "203.0.113.0/24", "region": "aws:us-east-1"},
		{"cidr": "198.51.100.0/24"},
	]
	found := residency.data_violations with input.action as "dataset.grant"
		with input.now as "2026-12-06T00:00:00Z"
		with input.cluster as cluster
		with input.tenant as tenant
		with input.datasets as [dataset]
		with input.sandbox as object.union(_sandbox, {"egress": egress})
	{v.subject | some v in found; v.code == "RESIDENCY_SPECIAL_CATEGORY_EGRESS"} == {"dataset/tx"}
	flagged := {cidr |
		some v in found
		v.code == "RESIDENCY_SPECIAL_CATEGORY_EGRESS"
		some cidr in ["192.0.2.0/28", "203.0.113.0/24", "198.51.100.0/24"]
		contains(v.msg, cidr)
	}
	flagged == {"203.0.113.0/24", "198.51.100.0/24"}
}
