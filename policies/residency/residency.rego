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
	lib.cluster_country == ""
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
	lib.cluster_country != ""
	not lib.facts_in_area(lib.cluster_facts, lib.tenant_area, lib.jurisdiction)
	v := lib.violation(
		"RESIDENCY_CLUSTER_OUTSIDE_AREA",
		concat("", [
			"cluster region '", lib.cluster_region, "' (", lib.cluster_country,
			") is outside the '", lib.tenant_area, "' area allowed for a ", lib.sector,
			" tenant of ", lib.jurisdiction,
		]),
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
	not lib.facts_in_area(lib.key_facts, lib.tenant_area, lib.jurisdiction)
	v := lib.violation(
		"RESIDENCY_KEY_OUTSIDE_AREA",
		concat("", ["sandbox key region '", lib.key_region, "' is unknown or outside the '", lib.tenant_area, "' area"]),
		"GDPR Art. 32, Art. 44 (simplified)",
		concat("", ["sandbox/", lib.sandbox_name]),
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
	not _destination_facts.country
	v := lib.violation(
		"RESIDENCY_UNKNOWN_REGION",
		concat("", ["export destination region '", _destination_region, "' is not in the region catalogue"]),
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
	_destination_facts.country
	some d in lib.datasets
	lib.personal(d)
	not _may_receive(d, _destination_facts)
	v := lib.violation(
		"RESIDENCY_EXPORT_OUTSIDE_EEA",
		concat("", [
			"artifact derived from ", d.personalData, " dataset '", d.name, "' cannot go to '",
			_destination_region, "' (", _destination_facts.country, ")",
		]),
		"GDPR Art. 44, Art. 45 (simplified)",
		concat("", ["export/", object.get(input, ["export", "name"], "")]),
	)
}

# METADATA
# title: Exports derived from personal data stay where that data may be stored
# description: |
#   A model trained on personal data goes only where that data itself may be
#   stored: inside the area allowed for the dataset's own sector and jurisdiction
#   (for example national for public-sector data). Simplified as above.
# custom:
#   code: RESIDENCY_EXPORT_OUTSIDE_DATA_AREA
#   regulation: GDPR Art. 44; sector residency rules (simplified)
violations contains v if {
	lib.exporting
	_destination_facts.country
	some s in _stored
	s.personal
	area := lib.area_name(s.sector)
	not lib.facts_in_area(_destination_facts, area, s.jurisdiction)
	v := lib.violation(
		"RESIDENCY_EXPORT_OUTSIDE_DATA_AREA",
		concat("", [
			"artifact derived from dataset '", s.name, "' cannot go to '", _destination_region,
			"' (", _destination_facts.country, "), outside the '", area,
			"' area where that data may be stored (jurisdiction ", s.jurisdiction, ")",
		]),
		"GDPR Art. 44; sector residency rules (simplified)",
		_export_subject,
	)
}

# METADATA
# title: Dataset region is catalogued
# description: Every dataset's storage region must be in the region catalogue.
# custom:
#   code: RESIDENCY_UNKNOWN_REGION
#   regulation: GDPR Art. 44
data_violations contains v if {
	lib.data_access
	some s in _stored
	not s.facts.country
	v := lib.violation(
		"RESIDENCY_UNKNOWN_REGION",
		concat("", ["dataset region '", s.region, "' is not in the region catalogue"]),
		_personal_regulation,
		concat("", ["dataset/", s.name]),
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
data_violations contains v if {
	lib.data_access
	some s in _stored
	s.facts.country
	not lib.facts_in_area(s.facts, lib.area_name(s.sector), s.jurisdiction)
	v := lib.violation(
		"RESIDENCY_DATASET_OUTSIDE_AREA",
		concat("", [
			"dataset is stored in '", s.region, "' (", s.facts.country,
			"), outside the area allowed for its jurisdiction ", s.jurisdiction,
		]),
		"GDPR Art. 44; sector residency rules (simplified)",
		concat("", ["dataset/", s.name]),
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
data_violations contains v if {
	lib.data_access
	some s in _stored
	s.class in lib.personal_classes
	s.facts.eeaOrAdequate == false
	v := lib.violation(
		"RESIDENCY_DATASET_OUTSIDE_EEA",
		concat("", [
			s.class, " data is stored in '", s.region, "' (", s.facts.country,
			"), outside the EEA and adequacy countries",
		]),
		"GDPR Art. 44, Art. 45 (simplified)",
		concat("", ["dataset/", s.name]),
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
data_violations contains v if {
	lib.data_access
	lib.cluster_facts.eeaOrAdequate == false
	some d in lib.datasets
	lib.personal(d)
	v := lib.violation(
		"RESIDENCY_PROCESSING_OUTSIDE_EEA",
		concat("", [
			d.personalData, " data would be processed in '", lib.cluster_region, "' (",
			lib.cluster_country, "), outside the EEA and adequacy countries",
		]),
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
data_violations contains v if {
	lib.data_access
	some s in _stored
	s.special
	some place, where in {
		"stored": [s.region, s.facts],
		"processed": [lib.cluster_region, lib.cluster_facts],
	}
	[region, facts] := where
	facts.eea == false
	v := lib.violation(
		"RESIDENCY_SPECIAL_CATEGORY_OUTSIDE_EEA",
		concat("", ["special-category data would be ", place, " in '", region, "' (", facts.country, "), outside the EEA"]),
		"GDPR Art. 9, Art. 44 (stricter than the law)",
		concat("", ["dataset/", s.name]),
	)
}

# METADATA
# title: Special-category data opens no egress outside the EEA and adequacy countries
# description: |
#   A sandbox holding special-category data (GDPR Art. 9(1); personal health data
#   included, pseudonymised or not) may open egress only to catalogued regions in
#   the EEA or in a country with a full adequacy decision, in every sector: an
#   egress rule is a channel through which the data can be transferred. An entry
#   without a region is treated as outside. Simplified: an entry's location is the
#   region it names.
# custom:
#   code: RESIDENCY_SPECIAL_CATEGORY_EGRESS
#   regulation: GDPR Art. 9, Art. 44, Art. 45 (simplified)
data_violations contains v if {
	lib.data_access
	some s in _stored
	s.special
	some entry in _egress
	not entry.facts.eeaOrAdequate
	v := lib.violation(
		"RESIDENCY_SPECIAL_CATEGORY_EGRESS",
		concat("", [
			"the sandbox holds special-category data from '", s.name, "' and opens egress to '",
			entry.cidr, "' in region '", entry.region, "', unknown or outside the EEA and adequacy countries",
		]),
		"GDPR Art. 9, Art. 44, Art. 45 (simplified)",
		concat("", ["dataset/", s.name]),
	)
}

# _egress describes each egress entry of the sandbox: cidr, region and the region's facts.
_egress := [e |
	some entry in object.get(input, ["sandbox", "egress"], [])
	region := object.get(entry, "region", "")
	e := {"cidr": object.get(entry, "cidr", ""), "region": region, "facts": lib.region_facts(region)}
]

_export_subject := concat("", ["export/", object.get(input, ["export", "name"], "")])

# _may_receive(d, f) is true when an artifact derived from dataset d may go to a
# region with facts f.
_may_receive(d, f) if {
	lib.special(d)
	f.eea
}

_may_receive(d, f) if {
	not lib.special(d)
	f.eeaOrAdequate
}

# _stored describes where each input dataset is stored: name, region, the region's facts,
# personal-data class, sector and jurisdiction. Built once per decision (one region
# lookup per dataset); the dataset rules above only filter it.
_stored := [s |
	some d in lib.datasets
	region := object.get(d, ["location", "region"], "")
	s := {
		"name": d.name,
		"region": region,
		"facts": lib.region_facts(region),
		"class": object.get(d, "personalData", ""),
		"personal": d.name in _personal_names,
		"special": d.name in _special_names,
		"sector": object.get(d, "sector", ""),
		"jurisdiction": object.get(d, "jurisdiction", ""),
	}
]

# _personal_names and _special_names name the input datasets holding personal and
# special-category data.
_personal_names contains d.name if {
	some d in lib.datasets
	lib.personal(d)
}

_special_names contains d.name if {
	some d in lib.datasets
	lib.special(d)
}

_destination_region := object.get(input, ["export", "destination", "region"], "")

_destination_facts := lib.region_facts(_destination_region)
