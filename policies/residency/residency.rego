# METADATA
# title: Data residency
# description: |
#   Where data may be stored, processed and sent. The cluster, the sandbox key and
#   every dataset must lie in the area their owner's sector and jurisdiction allow;
#   personal data stays in the EEA, in a country whose adequacy decision is in force
#   (policies/data/adequacy, with references and validity) or goes elsewhere under a
#   complete transfer declaration (GDPR Chapter V); special-category and criminal-offence
#   data stays in the EEA, and so do exports derived from it unless claimed anonymous.
#   Areas are defined in policies/data/sectors (residencyArea) and policies/data/areas.
package residency

import data.lib

_personal_regulation := "GDPR Art. 44"

# _egress describes each egress entry of the sandbox: cidr, region and the region's facts.
_egress := [e |
	some entry in object.get(input, ["sandbox", "egress"], [])
	region := object.get(entry, "region", "")
	facts := lib.region_facts(region)
	transfer := object.get(entry, "transfer", null)
	country := object.get(facts, "country", "")
	e := {
		"cidr": object.get(entry, "cidr", ""),
		"region": region,
		"facts": facts,
		"gaps": (lib.transfer_gaps(transfer, country) | _unattested(transfer, country)),
	}
]

# _unattested(t, country) names the missing attestation of transfer t to country: the
# tenant's attestations.transfers must hold one with the same mechanism, reference
# and country, so a tenant cannot declare its own way out.
_unattested(t, country) := set() if {
	is_object(t)
	country != ""
	some a in object.get(lib.attestations, "transfers", [])
	object.get(a, "mechanism", "") == object.get(t, "mechanism", "")
	object.get(a, "reference", "") == object.get(t, "reference", "")
	object.get(a, "country", "") == country
} else := {"the platform's attestation of this transfer on the Tenant (attestations.transfers)"}

# _in_area(s) is true when stored dataset s lies in its sector's area, or in the
# "eea-adequate" area reached through a complete transfer declaration.
_in_area(s) if lib.facts_in_area(s.facts, lib.area_name(s.sector), s.jurisdiction)

_in_area(s) if {
	lib.area_name(s.sector) == "eea-adequate"
	is_object(s.transfer)
	count(lib.transfer_gaps(s.transfer, s.facts.country)) == 0
}

# _anonymous is true when the export claims the artifact is anonymous, with the
# reference of the assessment the reviewers judge.
_anonymous if lib.nonblank(object.get(input, ["export", "anonymity", "assessmentReference"], ""))

_export_subject := concat("", ["export/", object.get(input, ["export", "name"], "")])

# _may_receive(d, f) is true when an artifact derived from dataset d may go to a
# region with facts f.
_may_receive(d, f) if {
	lib.sensitive(d)
	f.eea
}

_may_receive(d, f) if {
	not lib.sensitive(d)
	lib.adequate_until(f, lib.now)
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
		"describe": lib.describe(d),
		"personal": d.name in _personal_names,
		"sensitive": d.name in _sensitive_names,
		"transfer": object.get(d, "transfer", null),
		"sector": object.get(d, "sector", ""),
		"jurisdiction": object.get(d, "jurisdiction", ""),
	}
]

# _personal_names and _sensitive_names name the input datasets holding personal and
# special-category or criminal-offence data.
_personal_names contains d.name if {
	some d in lib.datasets
	lib.personal(d)
}

_sensitive_names contains d.name if {
	some d in lib.datasets
	lib.sensitive(d)
}

_destination_region := object.get(input, ["export", "destination", "region"], "")

_destination_facts := lib.region_facts(_destination_region)

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
#   country whose full adequacy decision is in force; one trained on special-category
#   or criminal-offence data only inside the EEA. Simplified: a model is treated as
#   personal data whenever its training data was, unless the export claims it is
#   anonymous with an assessment reference (input.export.anonymity), which the
#   reviewers then judge before release.
# custom:
#   code: RESIDENCY_EXPORT_OUTSIDE_EEA
#   regulation: GDPR Art. 44, Art. 45; Recital 26 (simplified)
violations contains v if {
	lib.exporting
	_destination_facts.country
	not _anonymous
	some d in lib.datasets
	lib.personal(d)
	not _may_receive(d, _destination_facts)
	v := lib.violation(
		"RESIDENCY_EXPORT_OUTSIDE_EEA",
		concat("", [
			"artifact derived from ", lib.describe(d), " dataset '", d.name, "' cannot go to '",
			_destination_region, "' (", _destination_facts.country,
			") unless the export claims it is anonymous (anonymity.assessmentReference)",
		]),
		"GDPR Art. 44, Art. 45; Recital 26 (simplified)",
		concat("", ["export/", object.get(input, ["export", "name"], "")]),
	)
}

# METADATA
# title: Exports derived from personal data stay where that data may be stored
# description: |
#   A model trained on personal data goes only where that data itself may be
#   stored: inside the area allowed for the dataset's own sector and jurisdiction
#   (for example national for public-sector data), unless the export claims it is
#   anonymous with an assessment reference. Simplified as above.
# custom:
#   code: RESIDENCY_EXPORT_OUTSIDE_DATA_AREA
#   regulation: GDPR Art. 44; sector residency rules (simplified)
violations contains v if {
	lib.exporting
	_destination_facts.country
	not _anonymous
	some s in _stored
	s.personal
	area := lib.area_name(s.sector)
	not lib.facts_in_area(_destination_facts, area, s.jurisdiction)
	v := lib.violation(
		"RESIDENCY_EXPORT_OUTSIDE_DATA_AREA",
		concat("", [
			"artifact derived from dataset '", s.name, "' cannot go to '", _destination_region,
			"' (", _destination_facts.country, "), outside the '", area,
			"' area where that data may be stored (jurisdiction ", s.jurisdiction,
			") unless the export claims it is anonymous (anonymity.assessmentReference)",
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
#   sector and jurisdiction. For the "eea-adequate" area, a complete transfer
#   declaration (see below) also places the data lawfully.
# custom:
#   code: RESIDENCY_DATASET_OUTSIDE_AREA
#   regulation: GDPR Art. 44; sector residency rules (simplified)
data_violations contains v if {
	lib.data_access
	some s in _stored
	s.facts.country
	not _in_area(s)
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
#   Personal data (pseudonymised included) may be stored only in the EEA, in a
#   country whose full adequacy decision is in force until the sandbox ends
#   (policies/data/adequacy, Art. 45), or elsewhere under a complete transfer
#   declaration on the Dataset: standard contractual clauses (Art. 46(2)(c)) or
#   binding corporate rules (Art. 47) with their reference and recipient, or the
#   EU-US Data Privacy Framework for a certified US recipient. The violation names
#   what the declaration lacks. Simplified: the declaration is the data steward's;
#   transfer impact assessments are not modelled.
# custom:
#   code: RESIDENCY_DATASET_OUTSIDE_EEA
#   regulation: GDPR Art. 44-47 (simplified)
data_violations contains v if {
	lib.data_access
	some s in _stored
	s.personal
	s.facts.country
	not lib.adequate_until(s.facts, lib.sandbox_end)
	gaps := lib.transfer_gaps(s.transfer, s.facts.country)
	count(gaps) > 0
	v := lib.violation(
		"RESIDENCY_DATASET_OUTSIDE_EEA",
		concat("", [
			s.describe, " data is stored in '", s.region, "' (", s.facts.country,
			"), outside the EEA and without an adequacy decision in force until ", lib.sandbox_end,
			"; its transfer declaration lacks ", concat(", ", sort(gaps)),
		]),
		"GDPR Art. 44-47 (simplified)",
		concat("", ["dataset/", s.name]),
	)
}

# METADATA
# title: Personal data is processed in the EEA or an adequacy country
# description: |
#   A sandbox that reads personal data must run on a cluster in the EEA or in a
#   country whose full adequacy decision is in force until the sandbox ends.
# custom:
#   code: RESIDENCY_PROCESSING_OUTSIDE_EEA
#   regulation: GDPR Art. 44, Art. 45 (simplified)
data_violations contains v if {
	lib.data_access
	lib.cluster_country != ""
	not lib.adequate_until(lib.cluster_facts, lib.sandbox_end)
	some d in lib.datasets
	lib.personal(d)
	v := lib.violation(
		"RESIDENCY_PROCESSING_OUTSIDE_EEA",
		concat("", [
			lib.describe(d), " data would be processed in '", lib.cluster_region, "' (",
			lib.cluster_country, "), outside the EEA and adequacy countries in force until ", lib.sandbox_end,
		]),
		"GDPR Art. 44, Art. 45 (simplified)",
		concat("", ["dataset/", d.name]),
	)
}

# METADATA
# title: Special-category data never leaves the EEA
# description: |
#   Special-category data (GDPR Art. 9: health, genetic, biometric, ...) and data on
#   criminal offences (Art. 10) are stored and processed only inside the EEA. This is
#   stricter than the GDPR, which allows transfers to adequacy countries; it is the
#   platform's policy choice.
# custom:
#   code: RESIDENCY_SPECIAL_CATEGORY_OUTSIDE_EEA
#   regulation: GDPR Art. 9, Art. 44 (stricter than the law)
data_violations contains v if {
	lib.data_access
	some s in _stored
	s.sensitive
	some place, where in {
		"stored": [s.region, s.facts],
		"processed": [lib.cluster_region, lib.cluster_facts],
	}
	[region, facts] := where
	facts.eea == false
	v := lib.violation(
		"RESIDENCY_SPECIAL_CATEGORY_OUTSIDE_EEA",
		concat("", [s.describe, " data would be ", place, " in '", region, "' (", facts.country, "), outside the EEA"]),
		"GDPR Art. 9, Art. 44 (stricter than the law)",
		concat("", ["dataset/", s.name]),
	)
}

# METADATA
# title: Special-category data opens no egress outside the EEA and adequacy countries
# description: |
#   A sandbox holding special-category data (GDPR Art. 9(1); personal health data
#   included, pseudonymised or not) or criminal-offence data (Art. 10) may open
#   egress, in every sector, only to catalogued regions in the EEA or in a country
#   whose full adequacy decision is in force until the sandbox ends, or to a
#   destination whose entry declares a complete transfer (SCCs, BCRs or the DPF, as
#   for datasets) that the platform also attested on the Tenant (same mechanism,
#   reference and country): an egress rule is a channel through which the data can
#   be transferred. An entry without a region is treated as outside. Simplified: an
#   entry's location is the region it names.
# custom:
#   code: RESIDENCY_SPECIAL_CATEGORY_EGRESS
#   regulation: GDPR Art. 9, Art. 10, Art. 44-47 (simplified)
data_violations contains v if {
	lib.data_access
	some s in _stored
	s.sensitive
	some entry in _egress
	not lib.adequate_until(entry.facts, lib.sandbox_end)
	count(entry.gaps) > 0
	v := lib.violation(
		"RESIDENCY_SPECIAL_CATEGORY_EGRESS",
		concat("", [
			"the sandbox holds ", s.describe, " data from '", s.name, "' and opens egress to '",
			entry.cidr, "' in region '", entry.region, "', unknown or outside the EEA and adequacy countries; ",
			"the entry's transfer lacks ", concat(", ", sort(entry.gaps)),
		]),
		"GDPR Art. 9, Art. 10, Art. 44-47 (simplified)",
		concat("", ["dataset/", s.name]),
	)
}

# METADATA
# title: Personal data opens no egress outside the EEA and adequacy countries
# description: |
#   GDPR Chapter V applies to all personal data, in every sector: a sandbox holding
#   identified or pseudonymised personal data of an ordinary category (Recital 26:
#   pseudonymised data is personal data) may open egress only to catalogued regions
#   in the EEA or in a country whose full adequacy decision (Art. 45) is in force
#   until the sandbox ends, or to a destination whose entry declares a complete
#   transfer under appropriate safeguards (Art. 46(2)(c) SCCs, Art. 46(2)(b) and 47
#   BCRs, or the Art. 45 EU-US Data Privacy Framework for a certified US recipient)
#   that the platform also attested on the Tenant (same mechanism, reference and
#   country). Any transfer must meet these conditions (Art. 44); an egress rule is a
#   channel through which the data can be transferred. Special-category and
#   criminal-offence data are held to the rule above instead. An entry without a
#   region is treated as outside. Simplified: an entry's location is the region it
#   names; Art. 49 derogations are not modelled.
# custom:
#   code: RESIDENCY_PERSONAL_DATA_EGRESS
#   regulation: GDPR Art. 44, Art. 45, Art. 46 (simplified)
data_violations contains v if {
	lib.data_access
	some s in _stored
	s.personal
	not s.sensitive
	some entry in _egress
	not lib.adequate_until(entry.facts, lib.sandbox_end)
	count(entry.gaps) > 0
	v := lib.violation(
		"RESIDENCY_PERSONAL_DATA_EGRESS",
		concat("", [
			"the sandbox holds ", s.describe, " personal data from '", s.name, "' and opens egress to '",
			entry.cidr, "' in region '", entry.region, "', unknown or outside the EEA and adequacy countries; ",
			"the entry's transfer lacks ", concat(", ", sort(entry.gaps)),
		]),
		"GDPR Art. 44, Art. 45, Art. 46 (simplified)",
		concat("", ["dataset/", s.name]),
	)
}
