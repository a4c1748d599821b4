package main_test

# Requests the law forbids, decided through the entry points the engines query
# (data.main.sandbox_provision, dataset_grant and model_export). Each per-dataset
# check is asked of both paths that put a dataset in reach of a sandbox
# (sandbox.provision and dataset.grant): one set of rules per dataset, whichever path.

import data.main

_lu := "onprem:lu-national-1"

_cluster := {
	"region": "onprem:lu-national-1",
	"jurisdiction": "LU",
	"keys": {"provider": "local", "region": "onprem:lu-national-1", "perSandbox": true},
	"audit": {"retentionDays": 1826},
}

_permit := {"id": "HDAB-1", "datasets": ["icu"], "purposes": ["sepsis"], "validUntil": "2035-12-31T23:59:59Z"}

_hospital := {
	"name": "hosp",
	"sector": "health",
	"jurisdiction": "LU",
	"attestations": {"ethicsApproval": "CNER-1", "dataPermit": _permit},
}

_icu := {
	"name": "icu",
	"sector": "health",
	"jurisdiction": "LU",
	"location": {"region": "onprem:lu-national-1"},
	"personalData": "pseudonymised",
	"allowedPurposes": ["sepsis"],
}

_sepsis := {
	"name": "s1",
	"purpose": "sepsis",
	"region": "onprem:lu-national-1",
	"lifetime": {"expiresAt": "2030-01-01T00:00:00Z", "seconds": 2592000},
	"datasets": [{"name": "icu", "purpose": "sepsis"}],
}

_bank := {
	"name": "bank",
	"sector": "finance",
	"jurisdiction": "LU",
	"attestations": {"supervisoryAuthority": "CSSF"},
}

_tx := {
	"name": "tx",
	"sector": "finance",
	"jurisdiction": "LU",
	"location": {"region": "onprem:lu-national-1"},
	"personalData": "pseudonymised",
	"allowedPurposes": ["fraud", "marketing"],
	"ictThirdParty": {"registerReference": "ROI-2025-017", "dataLocations": ["LU"]},
}

_fraud := {
	"name": "s2",
	"purpose": "fraud",
	"region": "onprem:lu-national-1",
	"lifetime": {"expiresAt": "2027-01-01T00:00:00Z", "seconds": 2592000},
	"datasets": [{"name": "tx", "purpose": "fraud"}],
}

_ministry := {
	"name": "ministry",
	"sector": "public",
	"jurisdiction": "LU",
	"attestations": {"dpiaReference": "DPIA-1"},
}

_claims := {
	"name": "claims",
	"sector": "public",
	"jurisdiction": "LU",
	"location": {"region": "onprem:lu-national-1"},
	"personalData": "personal",
	"allowedPurposes": ["triage"],
}

_triage := {
	"name": "s3",
	"purpose": "triage",
	"region": "onprem:lu-national-1",
	"lifetime": {"expiresAt": "2027-01-01T00:00:00Z", "seconds": 2592000},
	"datasets": [{"name": "claims", "purpose": "triage"}],
	"publicInterest": {
		"area": "public-administration",
		"whyNotAnonymised": "links between claims",
		"monitoring": "weekly review by the DPO",
		"deletion": "deleted at the end",
	},
}

# _both(tenant, datasets, sandbox) are the violation codes of provisioning and of the
# grant, which must be denied alike. Each asks the action's own entry point, as the
# engines do (main_test checks that decision answers the same).
_both(tenant, datasets, sandbox) := [_codes_of(provision), _codes_of(grant)] if {
	cluster := _cluster
	provision := main.sandbox_provision with input.action as "sandbox.provision"
		with input.now as "2026-12-06T00:00:00Z"
		with input.cluster as cluster
		with input.tenant as tenant
		with input.datasets as datasets
		with input.sandbox as sandbox
	grant := main.dataset_grant with input.action as "dataset.grant"
		with input.now as "2026-12-06T00:00:00Z"
		with input.cluster as cluster
		with input.tenant as tenant
		with input.datasets as datasets
		with input.sandbox as sandbox
}

_export(tenant, datasets, sandbox, export) := _codes_of(d) if {
	cluster := _cluster
	d := main.model_export with input.action as "model.export"
		with input.now as "2026-12-06T00:00:00Z"
		with input.cluster as cluster
		with input.tenant as tenant
		with input.datasets as datasets
		with input.sandbox as sandbox
		with input.export as export
}

_codes_of(decision) := {v.code | some v in decision.violations}

test_baselines_are_allowed_on_both_paths if {
	_both(_hospital, [_icu], _sepsis) == [set(), set()]
	_both(_bank, [_tx], _fraud) == [set(), set()]
	_both(_ministry, [_claims], _triage) == [set(), set()]
}

# GDPR Recital 26: pseudonymised data is still personal data; health data is
# special-category data (Art. 9(1)); its secondary use needs a data permit (EHDS
# Art. 68). A missing permit denies; it does not skip the permit checks.
test_pseudonymised_health_data_without_a_permit_is_denied if {
	tenant := {"name": "hosp", "sector": "health", "jurisdiction": "LU", "attestations": {"ethicsApproval": "CNER-1"}}
	[provision, grant] := _both(tenant, [_icu], _sepsis)
	"HEALTH_DATA_PERMIT_MISSING" in provision
	"HEALTH_DATA_PERMIT_MISSING" in grant
}

test_health_data_read_by_another_sector_needs_a_permit_too if {
	tenant := {"name": "lab", "sector": "research", "jurisdiction": "LU"}
	[provision, grant] := _both(tenant, [_icu], _sepsis)
	"HEALTH_DATA_PERMIT_MISSING" in provision
	"HEALTH_DATA_PERMIT_MISSING" in grant
}

test_special_category_data_outside_health_needs_an_art_9_basis if {
	biometrics := object.union(_tx, {"personalData": "special-category"})
	[provision, grant] := _both(_bank, [biometrics], _fraud)
	"SPECIAL_CATEGORY_BASIS_MISSING" in provision
	"SPECIAL_CATEGORY_BASIS_MISSING" in grant
	basis := {"condition": "9(2)(j)", "reference": "Loi du 1er août 2018, art. 65"}
	bank := object.union(_bank, {"attestations": {"supervisoryAuthority": "CSSF", "specialCategoryBasis": basis}})
	_both(bank, [biometrics], _fraud) == [set(), set()]
}

# One set of rules per dataset: the permit's purpose and lifetime are checked when a
# dataset is granted, not only when the sandbox is provisioned.
test_grant_checks_the_permit_purpose_and_lifetime if {
	sandbox := object.union(_sepsis, {
		"purpose": "billing",
		"lifetime": {"expiresAt": "2036-06-01T00:00:00Z", "seconds": 2592000},
		"datasets": [{"name": "icu", "purpose": "billing"}],
	})
	icu := object.union(_icu, {"allowedPurposes": ["sepsis", "billing"]})
	[provision, grant] := _both(_hospital, [icu], sandbox)
	{"HEALTH_PERMIT_PURPOSE_NOT_COVERED", "HEALTH_PERMIT_EXPIRES_BEFORE_SANDBOX"} & grant == {
		"HEALTH_PERMIT_PURPOSE_NOT_COVERED",
		"HEALTH_PERMIT_EXPIRES_BEFORE_SANDBOX",
	}
	provision == grant
}

test_grant_checks_ai_act_article_59 if {
	sandbox := object.union(_triage, {"publicInterest": {"area": "marketing", "whyNotAnonymised": "x"}})
	[provision, grant] := _both(_ministry, [_claims], sandbox)
	"PUBLIC_INTEREST_AREA_MISSING" in provision
	"PUBLIC_INTEREST_AREA_MISSING" in grant
}

# GDPR Art. 5(1)(b): the sandbox's own purpose must be one the dataset allows, and a
# sandbox cannot state another purpose for one dataset than for itself.
test_sandbox_purpose_must_be_allowed_for_each_dataset if {
	sandbox := object.union(_fraud, {"purpose": "credit-scoring"})
	[provision, grant] := _both(_bank, [_tx], sandbox)
	"DATASET_SANDBOX_PURPOSE_NOT_ALLOWED" in provision
	"DATASET_SANDBOX_PURPOSE_NOT_ALLOWED" in grant
}

test_a_sandbox_cannot_borrow_a_purpose_for_one_dataset if {
	sandbox := object.union(_fraud, {"purpose": "marketing"})
	[provision, grant] := _both(_bank, [_tx], sandbox)
	"DATASET_PURPOSE_MISMATCH" in provision
	"DATASET_PURPOSE_MISMATCH" in grant
}

# GDPR Art. 9 and Art. 44: a sandbox holding special-category data opens no egress
# outside the EEA and adequacy countries, whatever the tenant's sector.
test_special_category_egress_outside_eea_is_denied_in_every_sector if {
	us := [{"cidr": "203.0.113.0/24", "region": "aws:us-east-1"}]
	hospital := object.union(_sepsis, {"egress": us})
	[provision, grant] := _both(_hospital, [_icu], hospital)
	"RESIDENCY_SPECIAL_CATEGORY_EGRESS" in provision
	"RESIDENCY_SPECIAL_CATEGORY_EGRESS" in grant
	lab := {"name": "lab", "sector": "research", "jurisdiction": "LU", "attestations": _hospital.attestations}
	[lab_provision, _] := _both(lab, [_icu], hospital)
	"RESIDENCY_SPECIAL_CATEGORY_EGRESS" in lab_provision
	unknown := object.union(_sepsis, {"egress": [{"cidr": "203.0.113.0/24"}]})
	[unknown_provision, _] := _both(_hospital, [_icu], unknown)
	"RESIDENCY_SPECIAL_CATEGORY_EGRESS" in unknown_provision
}

# A model trained on personal data goes only where that data may go.
test_exports_follow_the_data if {
	to_de := {"name": "e1", "requester": "a", "justification": "deploy", "destination": {"region": "onprem:de-hpc-1"}}
	"RESIDENCY_EXPORT_OUTSIDE_DATA_AREA" in _export(_ministry, [_claims], _triage, to_de)
	to_gb := {"name": "e2", "requester": "a", "justification": "deploy", "destination": {"region": "azure:uksouth"}}
	"RESIDENCY_EXPORT_OUTSIDE_EEA" in _export(_hospital, [_icu], _sepsis, to_gb)
	to_lu := {"name": "e3", "requester": "a", "justification": "deploy", "destination": {"region": "onprem:lu-national-2"}}
	not "RESIDENCY_EXPORT_OUTSIDE_DATA_AREA" in _export(_ministry, [_claims], _triage, to_lu)
}

# Free text the law requires must say something: blank after trimming is missing.
test_blank_justifications_are_missing if {
	sandbox := object.union(_triage, {"publicInterest": {"area": "public-administration", "whyNotAnonymised": " \t\n "}})
	[provision, grant] := _both(_ministry, [_claims], sandbox)
	"PUBLIC_ANONYMISATION_JUSTIFICATION_MISSING" in provision
	"PUBLIC_ANONYMISATION_JUSTIFICATION_MISSING" in grant
	blank := {"name": "e1", "requester": "a", "justification": "   ", "destination": {"region": _lu}}
	"EXPORT_JUSTIFICATION_MISSING" in _export(_ministry, [_claims], _triage, blank)
	bank := object.union(_bank, {"attestations": {"supervisoryAuthority": "  "}})
	[bank_provision, _] := _both(bank, [_tx], _fraud)
	"FINANCE_SUPERVISOR_ATTESTATION_MISSING" in bank_provision
}

# GDPR Art. 5(1)(e): a lifetime of millions of days is no storage limitation.
test_an_enormous_lifetime_is_refused if {
	seconds := (3000000 * 86400) + 1
	sandbox := object.union(_fraud, {"lifetime": {"ttl": "3000000d", "seconds": seconds}})
	[provision, grant] := _both(_bank, [_tx], sandbox)
	"SANDBOX_LIFETIME_TOO_LONG" in provision
	"SANDBOX_LIFETIME_TOO_LONG" in grant
}

# GDPR Chapter V: personal data stored in the US is lawful under complete SCCs or a
# certified DPF recipient, and denied with the missing element named otherwise.
test_a_lawful_us_transfer_is_allowed_and_an_unlawful_one_names_what_is_missing if {
	lab := {"name": "lab", "sector": "research", "jurisdiction": "LU"}
	us := {
		"name": "tx",
		"sector": "research",
		"jurisdiction": "LU",
		"location": {"region": "aws:us-east-1"},
		"identifiability": "pseudonymised",
		"category": "ordinary",
		"allowedPurposes": ["fraud"],
	}
	scc := {"mechanism": "scc", "reference": "SCC 2021/914 module 2, contract C-7", "recipient": "Survey Inc."}
	_both(lab, [object.union(us, {"transfer": scc})], _fraud) == [set(), set()]
	dpf := {"mechanism": "dpf", "reference": "DPF list entry 12345", "recipient": "Survey Inc.", "certified": true}
	_both(lab, [object.union(us, {"transfer": dpf})], _fraud) == [set(), set()]
	[missing, _] := _both(lab, [us], _fraud)
	missing == {"RESIDENCY_DATASET_OUTSIDE_EEA", "RESIDENCY_DATASET_OUTSIDE_AREA"}
	uncertified := object.union(dpf, {"certified": false})
	[still, _] := _both(lab, [object.union(us, {"transfer": uncertified})], _fraud)
	still == {"RESIDENCY_DATASET_OUTSIDE_EEA", "RESIDENCY_DATASET_OUTSIDE_AREA"}
}

# An adequacy decision counts while it is in force: the UK's runs to 2031-12-27.
test_an_adequacy_decision_must_outlast_the_sandbox if {
	lab := {"name": "lab", "sector": "research", "jurisdiction": "LU"}
	uk := {
		"name": "tx",
		"sector": "research",
		"jurisdiction": "LU",
		"location": {"region": "azure:uksouth"},
		"identifiability": "pseudonymised",
		"category": "ordinary",
		"allowedPurposes": ["fraud"],
	}
	_both(lab, [uk], _fraud) == [set(), set()]
	long := object.union(_fraud, {"lifetime": {"expiresAt": "2032-06-01T00:00:00Z", "seconds": 86400}})
	[provision, grant] := _both(lab, [uk], long)
	"RESIDENCY_DATASET_OUTSIDE_EEA" in provision
	"RESIDENCY_DATASET_OUTSIDE_EEA" in grant
	brazil := object.union(uk, {"location": {"region": "aws:sa-east-1"}})
	_both(lab, [brazil], _fraud) == [set(), set()]
}

# A special-category sandbox may reach a US destination only under a transfer the
# platform attested on the tenant, never on its own say-so.
test_special_category_egress_needs_an_attested_transfer if {
	scc := {"mechanism": "scc", "reference": "SCC-9", "recipient": "Lab Inc."}
	egress := [{"cidr": "203.0.113.0/24", "region": "aws:us-east-1", "transfer": scc}]
	sandbox := object.union(_sepsis, {"egress": egress})
	[claimed_only, _] := _both(_hospital, [_icu], sandbox)
	"RESIDENCY_SPECIAL_CATEGORY_EGRESS" in claimed_only
	attested := {"mechanism": "scc", "reference": "SCC-9", "recipient": "Lab Inc.", "country": "US"}
	hospital := object.union(_hospital, {"attestations": object.union(_hospital.attestations, {"transfers": [attested]})})
	_both(hospital, [_icu], sandbox) == [set(), set()]
}

# DORA: the register reference and the contractual data locations of a bank's data.
test_finance_data_needs_its_ict_register_entry_and_contracted_location if {
	unregistered := object.remove(_tx, ["ictThirdParty"])
	[provision, grant] := _both(_bank, [unregistered], _fraud)
	{"FINANCE_ICT_REGISTER_MISSING", "FINANCE_DATA_LOCATION_NOT_CONTRACTED"} & grant == {
		"FINANCE_ICT_REGISTER_MISSING",
		"FINANCE_DATA_LOCATION_NOT_CONTRACTED",
	}
	provision == grant
	elsewhere := object.union(_tx, {"ictThirdParty": {"registerReference": "ROI-1", "dataLocations": ["DE"]}})
	[_, located] := _both(_bank, [elsewhere], _fraud)
	located == {"FINANCE_DATA_LOCATION_NOT_CONTRACTED"}
}

# An export claimed anonymous with an assessment may leave the data's area; the claim
# is an obligation the reviewers see, and a claim without an assessment is refused.
test_an_anonymity_claim_lets_a_reviewed_model_leave if {
	claim := {"assessmentReference": "ANON-2026-04 (membership inference)"}
	to_de := {
		"name": "e1", "requester": "a", "justification": "deploy",
		"destination": {"region": "onprem:de-hpc-1"}, "anonymity": claim,
	}
	_export(_ministry, [_claims], _triage, to_de) == set()
	blank := object.union(to_de, {"anonymity": {"assessmentReference": " "}})
	_export(_ministry, [_claims], _triage, blank) == {
		"EXPORT_ANONYMITY_ASSESSMENT_MISSING",
		"RESIDENCY_EXPORT_OUTSIDE_DATA_AREA",
	}
}

test_criminal_offence_data_needs_an_authorisation if {
	records := object.union(_tx, {"identifiability": "pseudonymised", "category": "criminal-offence"})
	[provision, grant] := _both(_bank, [records], _fraud)
	"CRIMINAL_OFFENCE_AUTHORISATION_MISSING" in provision
	"CRIMINAL_OFFENCE_AUTHORISATION_MISSING" in grant
}

# GDPR Art. 44-46: Chapter V covers all personal data, pseudonymised included
# (Recital 26), in every sector. Egress of ordinary personal data goes to the EEA, to
# an adequacy country while its decision is in force, or under a declared transfer
# the platform attested; anonymous data is outside the GDPR.
test_ordinary_personal_data_egress_follows_chapter_v_in_every_sector if {
	survey := {
		"name": "survey",
		"sector": "research",
		"jurisdiction": "LU",
		"location": {"region": "onprem:lu-national-1"},
		"identifiability": "pseudonymised",
		"category": "ordinary",
		"allowedPurposes": ["fraud"],
		"ictThirdParty": {"registerReference": "ROI-1", "dataLocations": ["LU"]},
	}
	us := [{"cidr": "203.0.113.0/24", "region": "aws:us-east-1"}]
	sandbox := object.union(_fraud, {"datasets": [{"name": "survey", "purpose": "fraud"}], "egress": us})
	_personal_egress_denied("finance", survey, sandbox)
	_personal_egress_denied("health", survey, sandbox)
	_personal_egress_denied("public", survey, sandbox)
	_personal_egress_denied("research", survey, sandbox)
	_personal_egress_denied("space", survey, sandbox)
	lab := {"name": "lab", "sector": "research", "jurisdiction": "LU"}
	anonymous := object.union(survey, {"identifiability": "anonymous"})
	_both(lab, [anonymous], sandbox) == [set(), set()]
	to_uk := object.union(sandbox, {"egress": [{"cidr": "203.0.113.0/24", "region": "azure:uksouth"}]})
	_both(lab, [survey], to_uk) == [set(), set()]
	scc := {"mechanism": "scc", "reference": "SCC-7", "recipient": "Survey Inc."}
	declared := object.union(sandbox, {"egress": [object.union(us[0], {"transfer": scc})]})
	_both(lab, [survey], declared) == [{"RESIDENCY_PERSONAL_DATA_EGRESS"}, {"RESIDENCY_PERSONAL_DATA_EGRESS"}]
	attested := object.union(lab, {"attestations": {"transfers": [object.union(scc, {"country": "US"})]}})
	_both(attested, [survey], declared) == [set(), set()]
}

# _personal_egress_denied is true when a tenant of sector holding dataset in sandbox is
# denied RESIDENCY_PERSONAL_DATA_EGRESS on both paths. (regopy cannot call _both from
# inside an iteration, hence one call per sector.)
_personal_egress_denied(sector, dataset, sandbox) if {
	tenant := {"name": "t", "sector": sector, "jurisdiction": "LU", "attestations": _hospital.attestations}
	[provision, grant] := _both(tenant, [dataset], sandbox)
	"RESIDENCY_PERSONAL_DATA_EGRESS" in provision
	"RESIDENCY_PERSONAL_DATA_EGRESS" in grant
}
