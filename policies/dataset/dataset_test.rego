package dataset_test

import data.dataset

# Fixtures are bound to local variables, one per line, before `with`: regopy 1.5
# ignores `with input.x as <rule reference>` (opa applies it).

_datasets := [{"name": "tx", "allowedPurposes": ["fraud"]}]

_codes(violations) := {v.code | some v in violations}

test_registered_dataset_for_allowed_purpose_passes if {
	datasets := _datasets
	count(dataset.violations) == 0 with input.action as "dataset.grant"
		with input.datasets as datasets
		with input.sandbox as {"name": "s", "datasets": [{"name": "tx", "purpose": "fraud"}]}
}

test_unregistered_dataset_is_denied if {
	datasets := _datasets
	codes := _codes(dataset.violations) with input.action as "sandbox.provision"
		with input.datasets as datasets
		with input.sandbox as {"name": "s", "datasets": [{"name": "ghost", "purpose": "fraud"}]}
	codes == {"DATASET_NOT_REGISTERED"}
}

test_other_purpose_is_denied if {
	datasets := _datasets
	codes := _codes(dataset.violations) with input.action as "dataset.grant"
		with input.datasets as datasets
		with input.sandbox as {"name": "s", "datasets": [{"name": "tx", "purpose": "marketing"}]}
	codes == {"DATASET_PURPOSE_NOT_ALLOWED"}
}

test_missing_purpose_is_denied if {
	datasets := _datasets
	codes := _codes(dataset.violations) with input.action as "dataset.grant"
		with input.datasets as datasets
		with input.sandbox as {"name": "s", "datasets": [{"name": "tx"}]}
	codes == {"DATASET_PURPOSE_NOT_ALLOWED"}
}

test_exports_do_not_check_grants if {
	count(dataset.violations) == 0 with input.action as "model.export"
		with input.sandbox as {"name": "s", "datasets": [{"name": "ghost"}]}
}
