# METADATA
# title: Dataset grants
# description: |
#   A sandbox may only reach datasets the platform registered, and only for a purpose
#   the dataset's steward allowed.
package dataset

import data.lib

# _registered holds the names of the registered datasets.
_registered contains d.name if some d in lib.datasets

# METADATA
# title: Requested dataset is registered
# description: |
#   Every dataset a sandbox asks for must exist as a Dataset registered by the
#   platform; the sandbox cannot describe a dataset itself.
# custom:
#   code: DATASET_NOT_REGISTERED
#   regulation: GDPR Art. 5(1)(b), Art. 30
violations contains v if {
	lib.data_access
	some req in lib.requested_datasets
	not req.name in _registered
	v := lib.violation(
		"DATASET_NOT_REGISTERED",
		concat("", ["sandbox asks for dataset '", req.name, "', which is not registered"]),
		"GDPR Art. 5(1)(b), Art. 30",
		concat("", ["dataset/", req.name]),
	)
}

# METADATA
# title: Requested purpose is allowed for the dataset
# description: |
#   Purpose limitation: the purpose stated for each requested dataset must be one of
#   the dataset's allowed purposes. Simplified: purposes are compared as exact
#   labels, not by meaning or compatibility (Art. 6(4)).
# custom:
#   code: DATASET_PURPOSE_NOT_ALLOWED
#   regulation: GDPR Art. 5(1)(b) (simplified)
violations contains v if {
	lib.data_access
	some req in lib.requested_datasets
	allowed := _allowed_purposes[req.name]
	purpose := object.get(req, "purpose", "")
	not purpose in allowed
	v := lib.violation(
		"DATASET_PURPOSE_NOT_ALLOWED",
		concat("", ["purpose '", purpose, "' is not among the purposes allowed for dataset '", req.name, "'"]),
		"GDPR Art. 5(1)(b) (simplified)",
		concat("", ["dataset/", req.name]),
	)
}

# _allowed_purposes maps each input dataset's name to its allowed purposes (dataset
# names are unique: Datasets are cluster-scoped objects).
_allowed_purposes[d.name] := object.get(d, "allowedPurposes", []) if some d in lib.datasets
