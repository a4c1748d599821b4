package dataset_test

import data.dataset

# Fixtures are bound to local variables, one per line, before `with`: regopy 1.5
# ignores `with input.x as <rule reference>` (opa applies it).

_datasets := [{"name": "tx", "allowedPurposes": ["fraud"]}]

_codes(violations) := {v.code | some v in violations}

test_registered_dataset_for_allowed_purpose_passes if {
	datasets := _datasets
	count(dataset.data_violations) == 0 with input.action as "dataset.grant"
		with input.datasets as datasets
		with input.sandbox as {"name": "s", "purpose": "fraud", "datasets": [{"name": "tx", "purpose": "fraud"}]}
}

test_unregistered_dataset_is_denied if {
	datasets := _datasets
	codes := _codes(dataset.data_violations) with input.action as "sandbox.provision"
		with input.datasets as datasets
		with input.sandbox as {"name": "s", "purpose": "fraud", "datasets": [{"name": "ghost", "purpose": "fraud"}]}
	codes == {"DATASET_NOT_REGISTERED"}
}

test_other_purpose_is_denied if {
	datasets := _datasets
	codes := _codes(dataset.data_violations) with input.action as "dataset.grant"
		with input.datasets as datasets
		with input.sandbox as {"name": "s", "purpose": "fraud", "datasets": [{"name": "tx", "purpose": "marketing"}]}
	codes == {"DATASET_PURPOSE_NOT_ALLOWED", "DATASET_PURPOSE_MISMATCH"}
}

test_missing_purpose_is_denied if {
	datasets := _datasets
	codes := _codes(dataset.data_violations) with input.action as "dataset.grant"
		with input.datasets as datasets
		with input.sandbox as {"name": "s", "purpose": "fraud", "datasets": [{"name": "tx"}]}
	codes == {"DATASET_PURPOSE_NOT_ALLOWED", "DATASET_PURPOSE_MISMATCH"}
}

test_exports_do_not_check_grants if {
	count(dataset.data_violations) == 0 with input.action as "model.export"
		with input.sandbox as {"name": "s", "datasets": [{"name": "ghost"}]}
}

test_sandbox_purpose_must_be_allowed_too if {
	datasets := _datasets
	codes := _codes(dataset.data_violations) with input.action as "dataset.grant"
		with input.datasets as datasets
		with input.sandbox as {"name": "s", "purpose": "marketing", "datasets": [{"name": "tx", "purpose": "fraud"}]}
	codes == {"DATASET_SANDBOX_PURPOSE_NOT_ALLOWED", "DATASET_PURPOSE_MISMATCH"}
}

_bad := {"condition": "9(2)(k)", "reference": "x"}

_blank := {"condition": "9(2)(a)", "reference": " "}

_good := {"condition": "9(2)(a)", "reference": "consent records C-1"}

test_special_category_basis_needs_a_condition_and_a_reference if {
	special := [{"name": "bio", "sector": "finance", "personalData": "special-category", "allowedPurposes": ["kyc"]}]
	sandbox := {"name": "s", "purpose": "kyc", "datasets": [{"name": "bio", "purpose": "kyc"}]}
	codes := _codes(dataset.data_violations) with input.action as "dataset.grant"
		with input.datasets as special
		with input.sandbox as sandbox
		with input.tenant as {"name": "b", "attestations": {"specialCategoryBasis": _bad}}
	codes == {"SPECIAL_CATEGORY_BASIS_MISSING"}
	blank := _codes(dataset.data_violations) with input.action as "dataset.grant"
		with input.datasets as special
		with input.sandbox as sandbox
		with input.tenant as {"name": "b", "attestations": {"specialCategoryBasis": _blank}}
	blank == {"SPECIAL_CATEGORY_BASIS_MISSING"}
	count(dataset.data_violations) == 0 with input.action as "dataset.grant"
		with input.datasets as special
		with input.sandbox as sandbox
		with input.tenant as {"name": "b", "attestations": {"specialCategoryBasis": _good}}
}
