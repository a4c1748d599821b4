# METADATA
# title: Data residency
# description: |
#   Where data may be stored and processed. The cluster, the sandbox key and every
#   dataset must lie in the area their owner's sector and jurisdiction allow; personal
#   data stays in the EEA or an adequacy country; special-category data stays in the EEA.
#   Areas are defined in policies/data/sectors (residencyArea) and policies/data/areas.
package residency

import data.lib

_personal_regulation := "GDPR Art. 44"

# METADATA
# title: Cluster region is catalogued
# description: |
#   The attested cluster region must be in the region catalogue; an unknown region
#   cannot be placed in any country, so it is denied.
# custom:
#   code: RESIDENCY_UNKNOWN_REGION
#   regulation: GDPR Art. 44
violations contains v if {
	lib.provisioning
	not lib.known_region(lib.cluster_region)
	v := lib.violation(
		"RESIDENCY_UNKNOWN_REGION",
		concat("", ["cluster region '", lib.cluster_region, "' is not in the region catalogue"]),
		_personal_regulation,
		concat("", ["cluster/", lib.cluster_region]),
	)
}

# METADATA
# title: Cluster lies in the tenant's area
# description: |
#   The cluster's country must lie in the area the tenant's sector and jurisdiction
#   allow (national, EEA, or EEA plus adequacy countries). Simplified: sector
#   residency expectations (for example CSSF outsourcing rules) are reduced to a
#   per-sector area in policies/data/sectors.
# custom:
#   code: RESIDENCY_CLUSTER_OUTSIDE_AREA
#   regulation: GDPR Art. 44; sector residency rules (simplified)
violations contains v if {
	lib.provisioning
	lib.known_region(lib.cluster_region)
	not lib.in_area(lib.cluster_region, lib.sector, lib.jurisdiction)
	v := lib.violation(
		"RESIDENCY_CLUSTER_OUTSIDE_AREA",
		concat("", ["cluster region '", lib.cluster_region, "' (", lib.country(lib.cluster_region), ") is outside the '", lib.area_name(lib.sector), "' area allowed for a ", lib.sector, " tenant of ", lib.jurisdiction]),
		"GDPR Art. 44; sector residency rules (simplified)",
		concat("", ["cluster/", lib.cluster_region]),
	)
}

# METADATA
# title: Claimed sandbox region matches the cluster
# description: |
#   The sandbox spec may name a region, but the sandbox runs where the cluster is.
#   A claimed region other than the attested cluster region is refused rather than
#   trusted.
# custom:
#   code: RESIDENCY_SANDBOX_REGION_MISMATCH
#   regulation: GDPR Art. 44
violations contains v if {
	lib.provisioning
	claimed := input.sandbox.region
	claimed != ""
	claimed != lib.cluster_region
	v := lib.violation(
		"RESIDENCY_SANDBOX_REGION_MISMATCH",
		concat("", ["sandbox asks for region '", claimed, "' but the cluster runs in '", lib.cluster_region, "'"]),
		_personal_regulation,
		concat("", ["sandbox/", lib.sandbox_name]),
	)
}

# METADATA
# title: Sandbox key lives in an allowed region
# description: |
#   The per-sandbox encryption key must be held in a catalogued region inside the
#   tenant's area. Simplified: the key location stands for the location of the key
#   management service, not of its backups.
# custom:
#   code: RESIDENCY_KEY_OUTSIDE_AREA
#   regulation: GDPR Art. 32, Art. 44 (simplified)
violations contains v if {
	lib.provisioning
	key_region := object.get(input.cluster, ["keys", "region"], "")
	not lib.in_area(key_region, lib.sector, lib.jurisdiction)
	v := lib.violation(
		"RESIDENCY_KEY_OUTSIDE_AREA",
		concat("", ["sandbox key region '", key_region, "' is unknown or outside the '", lib.area_name(lib.sector), "' area"]),
		"GDPR Art. 32, Art. 44 (simplified)",
		concat("", ["sandbox/", lib.sandbox_name]),
	)
}

# METADATA
# title: Dataset region is catalogued
# description: Every dataset's storage region must be in the region catalogue.
# custom:
#   code: RESIDENCY_UNKNOWN_REGION
#   regulation: GDPR Art. 44
violations contains v if {
	lib.data_access
	some d in lib.datasets
	region := object.get(d, ["location", "region"], "")
	not lib.known_region(region)
	v := lib.violation(
		"RESIDENCY_UNKNOWN_REGION",
		concat("", ["dataset region '", region, "' is not in the region catalogue"]),
		_personal_regulation,
		concat("", ["dataset/", d.name]),
	)
}

# METADATA
# title: Dataset lies in its jurisdiction's area
# description: |
#   Each dataset's storage region must lie in the area allowed for the dataset's own
#   sector and jurisdiction.
# custom:
#   code: RESIDENCY_DATASET_OUTSIDE_AREA
#   regulation: GDPR Art. 44; sector residency rules (simplified)
violations contains v if {
	lib.data_access
	some d in lib.datasets
	region := object.get(d, ["location", "region"], "")
	lib.known_region(region)
	not lib.in_area(region, object.get(d, "sector", ""), object.get(d, "jurisdiction", ""))
	v := lib.violation(
		"RESIDENCY_DATASET_OUTSIDE_AREA",
		concat("", ["dataset is stored in '", region, "' (", lib.country(region), "), outside the area allowed for its jurisdiction ", object.get(d, "jurisdiction", "")]),
		"GDPR Art. 44; sector residency rules (simplified)",
		concat("", ["dataset/", d.name]),
	)
}

# METADATA
# title: Personal data is stored in the EEA or an adequacy country
# description: |
#   Personal and pseudonymised data may be stored only in the EEA or in a country
#   with a full adequacy decision. Simplified: transfers under appropriate
#   safeguards (Art. 46, standard contractual clauses) are not modelled.
# custom:
#   code: RESIDENCY_DATASET_OUTSIDE_EEA
#   regulation: GDPR Art. 44, Art. 45 (simplified)
violations contains v if {
	lib.data_access
	some d in lib.datasets
	lib.personal(d)
	region := object.get(d, ["location", "region"], "")
	lib.known_region(region)
	not lib.eea_or_adequate(lib.country(region))
	v := lib.violation(
		"RESIDENCY_DATASET_OUTSIDE_EEA",
		concat("", [d.personalData, " data is stored in '", region, "' (", lib.country(region), "), outside the EEA and adequacy countries"]),
		"GDPR Art. 44, Art. 45 (simplified)",
		concat("", ["dataset/", d.name]),
	)
}

# METADATA
# title: Personal data is processed in the EEA or an adequacy country
# description: |
#   A sandbox that reads personal data must run on a cluster in the EEA or in a
#   country with a full adequacy decision.
# custom:
#   code: RESIDENCY_PROCESSING_OUTSIDE_EEA
#   regulation: GDPR Art. 44, Art. 45 (simplified)
violations contains v if {
	lib.data_access
	some d in lib.datasets
	lib.personal(d)
	lib.known_region(lib.cluster_region)
	not lib.eea_or_adequate(lib.country(lib.cluster_region))
	v := lib.violation(
		"RESIDENCY_PROCESSING_OUTSIDE_EEA",
		concat("", [d.personalData, " data would be processed in '", lib.cluster_region, "' (", lib.country(lib.cluster_region), "), outside the EEA and adequacy countries"]),
		"GDPR Art. 44, Art. 45 (simplified)",
		concat("", ["dataset/", d.name]),
	)
}

# METADATA
# title: Special-category data never leaves the EEA
# description: |
#   Special-category data (GDPR Art. 9: health, genetic, biometric, ...) is stored
#   and processed only inside the EEA. This is stricter than the GDPR, which allows
#   transfers to adequacy countries; it is the platform's policy choice.
# custom:
#   code: RESIDENCY_SPECIAL_CATEGORY_OUTSIDE_EEA
#   regulation: GDPR Art. 9, Art. 44 (stricter than the law)
violations contains v if {
	lib.data_access
	some d in lib.datasets
	d.personalData == "special-category"
	some place, region in {
		"stored": object.get(d, ["location", "region"], ""),
		"processed": lib.cluster_region,
	}
	lib.known_region(region)
	not lib.eea_country(lib.country(region))
	v := lib.violation(
		"RESIDENCY_SPECIAL_CATEGORY_OUTSIDE_EEA",
		concat("", ["special-category data would be ", place, " in '", region, "' (", lib.country(region), "), outside the EEA"]),
		"GDPR Art. 9, Art. 44 (stricter than the law)",
		concat("", ["dataset/", d.name]),
	)
}

# METADATA
# title: Export destination is catalogued
# description: The destination region of a model export must be in the region catalogue.
# custom:
#   code: RESIDENCY_UNKNOWN_REGION
#   regulation: GDPR Art. 44
violations contains v if {
	lib.exporting
	region := object.get(input, ["export", "destination", "region"], "")
	not lib.known_region(region)
	v := lib.violation(
		"RESIDENCY_UNKNOWN_REGION",
		concat("", ["export destination region '", region, "' is not in the region catalogue"]),
		_personal_regulation,
		concat("", ["export/", object.get(input, ["export", "name"], "")]),
	)
}

# METADATA
# title: Exports derived from personal data stay in the EEA or adequacy countries
# description: |
#   An artifact trained on personal data may only be exported to the EEA or to a
#   country with a full adequacy decision; one trained on special-category data
#   only inside the EEA. Simplified: a model is treated as personal data whenever
#   its training data was, whatever its actual memorisation risk.
# custom:
#   code: RESIDENCY_EXPORT_OUTSIDE_EEA
#   regulation: GDPR Art. 44, Art. 45 (simplified)
violations contains v if {
	lib.exporting
	region := object.get(input, ["export", "destination", "region"], "")
	lib.known_region(region)
	some d in lib.datasets
	lib.personal(d)
	not _may_receive(d, lib.country(region))
	v := lib.violation(
		"RESIDENCY_EXPORT_OUTSIDE_EEA",
		concat("", ["artifact derived from ", d.personalData, " dataset '", d.name, "' cannot go to '", region, "' (", lib.country(region), ")"]),
		"GDPR Art. 44, Art. 45 (simplified)",
		concat("", ["export/", object.get(input, ["export", "name"], "")]),
	)
}

# _may_receive(d, c) is true when an artifact derived from dataset d may go to country c.
_may_receive(d, c) if {
	d.personalData == "special-category"
	lib.eea_country(c)
}

_may_receive(d, c) if {
	d.personalData != "special-category"
	lib.eea_or_adequate(c)
}
