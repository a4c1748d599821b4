# METADATA
# title: Dataset grants
# description: |
#   A sandbox may only reach datasets the platform registered, only for a purpose
#   the dataset's steward allowed and the sandbox itself declares, and special-category
#   data only with a legal basis. Every rule here is per dataset (data_violations):
#   provisioning and every grant evaluate it alike (policies/main/main.rego).
package dataset

import data.lib

# _registered holds the names of the registered datasets.
_registered contains d.name if some d in lib.datasets

# _allowed_purposes maps each input dataset's name to its allowed purposes (dataset
# names are unique: Datasets are cluster-scoped objects).
_allowed_purposes[d.name] := object.get(d, "allowedPurposes", []) if some d in lib.datasets

# The conditions of GDPR Art. 9(2) under which special-category data may be processed.
_art9_conditions := {
	"9(2)(a)", "9(2)(b)", "9(2)(c)", "9(2)(d)", "9(2)(e)",
	"9(2)(f)", "9(2)(g)", "9(2)(h)", "9(2)(i)", "9(2)(j)",
}

_basis := object.get(lib.attestations, "specialCategoryBasis", {})

# _has_art9_basis is true when the tenant carries an attested Art. 9(2) condition
# with a non-blank reference (the law, consent record or decision relied on).
_has_art9_basis if {
	object.get(_basis, "condition", "") in _art9_conditions
	lib.nonblank(object.get(_basis, "reference", ""))
}

# METADATA
# title: Requested dataset is registered
# description: |
#   Every dataset a sandbox asks for must exist as a Dataset registered by the
#   platform; the sandbox cannot describe a dataset itself.
# custom:
#   code: DATASET_NOT_REGISTERED
#   regulation: GDPR Art. 5(1)(b), Art. 30
data_violations contains v if {
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
data_violations contains v if {
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

# METADATA
# title: The sandbox's own purpose is allowed for the dataset
# description: |
#   Purpose limitation: the purpose the sandbox declares for all of its processing
#   must be one of each requested dataset's allowed purposes. A sandbox whose
#   purpose is not allowed cannot receive the dataset by stating an allowed purpose
#   for that one request. Simplified: exact labels, as above.
# custom:
#   code: DATASET_SANDBOX_PURPOSE_NOT_ALLOWED
#   regulation: GDPR Art. 5(1)(b) (simplified)
data_violations contains v if {
	lib.data_access
	some req in lib.requested_datasets
	allowed := _allowed_purposes[req.name]
	not lib.sandbox_purpose in allowed
	v := lib.violation(
		"DATASET_SANDBOX_PURPOSE_NOT_ALLOWED",
		concat("", [
			"the sandbox's purpose '", lib.sandbox_purpose,
			"' is not among the purposes allowed for dataset '", req.name, "'",
		]),
		"GDPR Art. 5(1)(b) (simplified)",
		concat("", ["dataset/", req.name]),
	)
}

# METADATA
# title: A dataset is requested for the sandbox's own purpose
# description: |
#   Purpose limitation: the purpose stated for a dataset must be the sandbox's own
#   declared purpose; a sandbox cannot borrow another purpose for one dataset.
# custom:
#   code: DATASET_PURPOSE_MISMATCH
#   regulation: GDPR Art. 5(1)(b)
data_violations contains v if {
	lib.data_access
	some req in lib.requested_datasets
	purpose := object.get(req, "purpose", "")
	purpose != lib.sandbox_purpose
	v := lib.violation(
		"DATASET_PURPOSE_MISMATCH",
		concat("", [
			"dataset '", req.name, "' is requested for '", purpose, "' but the sandbox's purpose is '",
			lib.sandbox_purpose, "'",
		]),
		"GDPR Art. 5(1)(b)",
		concat("", ["dataset/", req.name]),
	)
}

# METADATA
# title: Special-category data has a legal basis
# description: |
#   Processing special-category data (GDPR Art. 9(1)) is prohibited unless one of
#   the conditions of Art. 9(2) applies. Outside health, the tenant must carry a
#   platform-verified basis naming the condition and its reference; a missing or
#   blank basis denies. Health datasets are governed by the health rules, where the
#   data permit is the basis (EHDS Art. 68, policies/sector/health).
# custom:
#   code: SPECIAL_CATEGORY_BASIS_MISSING
#   regulation: GDPR Art. 9(1), Art. 9(2)
data_violations contains v if {
	lib.data_access
	some d in lib.datasets
	lib.special(d)
	d.sector != "health"

	# After the loop on purpose: checked only when special-category data is asked for.
	# regal ignore:non-loop-expression
	not _has_art9_basis
	v := lib.violation(
		"SPECIAL_CATEGORY_BASIS_MISSING",
		concat("", [
			"dataset '", d.name, "' holds special-category data and the tenant has no attested ",
			"GDPR Art. 9(2) basis (specialCategoryBasis with a condition and a reference)",
		]),
		"GDPR Art. 9(1), Art. 9(2)",
		concat("", ["dataset/", d.name]),
	)
}

# METADATA
# title: Criminal-offence data is processed under official authority or law
# description: |
#   Personal data relating to criminal convictions and offences may be processed
#   only under the control of official authority or when authorised by Union or
#   Member State law (GDPR Art. 10); the tenant must carry the platform-verified
#   reference of that authority or law (criminalOffenceAuthorisation). Blank is
#   missing.
# custom:
#   code: CRIMINAL_OFFENCE_AUTHORISATION_MISSING
#   regulation: GDPR Art. 10
data_violations contains v if {
	lib.data_access
	some d in lib.datasets
	lib.criminal(d)

	# After the loop on purpose: checked only when criminal-offence data is asked for.
	# regal ignore:non-loop-expression
	not lib.attested("criminalOffenceAuthorisation")
	v := lib.violation(
		"CRIMINAL_OFFENCE_AUTHORISATION_MISSING",
		concat("", [
			"dataset '", d.name, "' holds criminal-offence data and the tenant has no attested ",
			"official authority or authorising law (criminalOffenceAuthorisation)",
		]),
		"GDPR Art. 10",
		concat("", ["dataset/", d.name]),
	)
}
