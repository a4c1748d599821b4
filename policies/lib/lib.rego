# METADATA
# title: Shared helpers
# description: |
#   Region, area and input lookups over the policy data in policies/data, shared by
#   every regsandbox policy package. Nothing here can deny on its own.
package lib

import data.data.adequacy
import data.data.areas
import data.data.regionfacts
import data.data.regions
import data.data.sectors

# How the deprecated single personalData class reads as identifiability and category
# (sandbox/api/dataset.py LEGACY_PERSONAL_DATA). The platform always sends both new
# fields; the mapping keeps hand-written inputs and custom policies' tests working.
_legacy_identifiability := {
	"none": "anonymous",
	"anonymised": "anonymous",
	"pseudonymised": "pseudonymised",
	"personal": "identified",
	"special-category": "identified",
}

_legacy_category := {"special-category": "special-category"}

# Deprecated: the personalData classes within the GDPR's scope. Kept for custom
# policies written against it; read identifiability and category (personal(d)).
personal_classes := {"pseudonymised", "personal", "special-category"}

# Lookups inside functions use object.get: the embedded engine (regopy) resolves a
# data reference with a variable key by scanning the whole object, object.get by a
# direct lookup, and both engines agree on the result.

# eea_country(c) is true when country c is in the European Economic Area (EU member
# states plus IS, LI, NO).
eea_country(c) if object.get(areas.eea, c, "") != ""

# adequate_country(c) is true when country c has a full GDPR Art. 45 adequacy
# decision. Partial decisions (limited to certified or commercial organisations) do
# not count: the platform cannot check that the recipient is covered.
adequate_country(c) if object.get(adequacy, [c, "partial"], true) == false

# eea_or_adequate(c) is true where personal data may go: the EEA and full-adequacy
# countries.
eea_or_adequate(c) if eea_country(c)

eea_or_adequate(c) if adequate_country(c)

# country(r) is the ISO 3166-1 alpha-2 country of region r, "" for an unknown region.
country(r) := object.get(regions, [r, "country"], "")

# known_region(r) is true when r is in the region catalogue.
known_region(r) if country(r) != ""

# area_name(sector) is the residency area a sector is held to, "eea" when unset.
area_name(sector) := object.get(sectors.residencyArea, sector, "eea")

# in_area(r, sector, jurisdiction) is true when region r lies in the area allowed for
# a party of that sector and jurisdiction: "national" (the jurisdiction itself),
# "eea", or "eea-adequate".
in_area(r, sector, jurisdiction) if {
	area_name(sector) == "national"
	known_region(r)
	country(r) == jurisdiction
}

in_area(r, sector, _) if {
	area_name(sector) == "eea"
	eea_country(country(r))
}

in_area(r, sector, _) if {
	area_name(sector) == "eea-adequate"
	eea_or_adequate(country(r))
}

# --- precomputed lookups -------------------------------------------------------------
# The functions above read three data documents per call. Decisions use these instead:
# one lookup in policies/data/regionfacts per region (derived from regions, areas and
# adequacy; lib_test.rego checks it still matches them), and rules rather than
# functions for what every decision needs, so each is computed once per decision.

# region_facts(r) is {"country", "eea", "eeaOrAdequate"} for region r, {} when unknown.
region_facts(r) := object.get(regionfacts, r, {})

# facts_in_area(f, area, jurisdiction) is in_area for a region whose facts are f and an
# area name as returned by area_name.
facts_in_area(f, "national", jurisdiction) if f.country == jurisdiction

facts_in_area(f, "eea", _) if f.eea

facts_in_area(f, "eea-adequate", _) if f.eeaOrAdequate

# tenant_area is the residency area of the tenant's sector.
tenant_area := area_name(sector)

# cluster_facts are the region facts of the cluster.
cluster_facts := region_facts(cluster_region)

# cluster_country is the cluster's country, "" when its region is unknown.
cluster_country := object.get(cluster_facts, "country", "")

default key_region := ""

# key_region is where the sandbox keys are held.
key_region := input.cluster.keys.region

# key_facts are the region facts of the key store.
key_facts := region_facts(key_region)

# violation builds the one violation shape every policy returns.
violation(code, msg, regulation, subject) := {
	"code": code,
	"msg": msg,
	"regulation": regulation,
	"subject": subject,
}

# obligation builds the one obligation shape every policy returns.
obligation(code, value, regulation) := {
	"code": code,
	"value": value,
	"regulation": regulation,
}

# Input shortcuts with safe defaults, so a missing field fails a check instead of
# silently making a rule undefined.
default action := ""

action := input.action

default sector := ""

sector := input.tenant.sector

default jurisdiction := ""

jurisdiction := input.tenant.jurisdiction

default tenant_name := ""

tenant_name := input.tenant.name

default sandbox_name := ""

sandbox_name := input.sandbox.name

default cluster_region := ""

cluster_region := input.cluster.region

default attestations := {}

attestations := input.tenant.attestations

default datasets := []

datasets := input.datasets

default requested_datasets := []

requested_datasets := input.sandbox.datasets

# provisioning is true for the sandbox.provision action.
provisioning if action == "sandbox.provision"

# data_access is true for actions that put datasets in reach of a sandbox.
data_access if action in {"sandbox.provision", "dataset.grant"}

# exporting is true for the model.export action.
exporting if action == "model.export"

# identifiability(d) is anonymous, pseudonymised or identified; a dataset that says
# nothing reads as identified, the stricter case.
identifiability(d) := object.get(
	d, "identifiability",
	object.get(_legacy_identifiability, object.get(d, "personalData", ""), "identified"),
)

# category(d) is ordinary, special-category or criminal-offence as the dataset states it.
category(d) := object.get(d, "category", object.get(_legacy_category, object.get(d, "personalData", ""), "ordinary"))

# personal, special and sensitive spell out identifiability(d) and category(d) instead
# of calling them: the embedded engine (regopy) compiles a copy of a function for
# every call path under each `with` of a test, and these are called from nearly every
# rule, so the chain made `sandboxctl policy test` peak at 16 GiB. lib_test.rego
# checks they still agree with identifiability and category.

# personal(d) is true when dataset d holds data within the GDPR's scope: anything but
# anonymous. Pseudonymised data is personal data (GDPR Recital 26).
personal(d) if {
	legacy := object.get(d, "personalData", "")
	object.get(d, "identifiability", object.get(_legacy_identifiability, legacy, "identified")) != "anonymous"
}

# identified(d) is true when dataset d holds directly identifying personal data (any
# value other than anonymous or pseudonymised reads as identified).
identified(d) if not identifiability(d) in {"anonymous", "pseudonymised"}

# special(d) is true when dataset d holds special-category personal data (GDPR Art.
# 9(1)). Personal data of a health dataset is data concerning health, so special-
# category whatever category its steward gave, pseudonymised included (Recital 26).
# An unknown category reads as special-category.
special(d) if {
	legacy := object.get(d, "personalData", "")
	object.get(d, "identifiability", object.get(_legacy_identifiability, legacy, "identified")) != "anonymous"
	not object.get(d, "category", object.get(_legacy_category, legacy, "ordinary")) in {"ordinary", "criminal-offence"}
}

special(d) if {
	d.sector == "health"
	legacy := object.get(d, "personalData", "")
	object.get(d, "identifiability", object.get(_legacy_identifiability, legacy, "identified")) != "anonymous"
}

# criminal(d) is true when dataset d holds personal data on criminal convictions and
# offences (GDPR Art. 10).
criminal(d) if {
	personal(d)
	category(d) == "criminal-offence"
}

# sensitive(d) is true for special-category and criminal-offence personal data: the
# data the platform keeps inside the EEA.
sensitive(d) if {
	legacy := object.get(d, "personalData", "")
	object.get(d, "identifiability", object.get(_legacy_identifiability, legacy, "identified")) != "anonymous"
	object.get(d, "category", object.get(_legacy_category, legacy, "ordinary")) != "ordinary"
}

sensitive(d) if {
	d.sector == "health"
	legacy := object.get(d, "personalData", "")
	object.get(d, "identifiability", object.get(_legacy_identifiability, legacy, "identified")) != "anonymous"
}

# describe(d) says what dataset d holds, e.g. "pseudonymised special-category".
describe(d) := concat(" ", [identifiability(d), _described_category(d)])

_described_category(d) := "special-category" if special(d)

else := category(d)

# processes_personal_data is true when any dataset in input is personal data.
processes_personal_data if {
	some d in datasets
	personal(d)
}

# nonblank(s) is true when s is a string with something other than white space.
nonblank(s) if {
	is_string(s)
	trim_space(s) != ""
}

# filled(value) is true for a non-blank string or a non-empty object or array.
filled(value) if nonblank(value)

filled(value) if {
	not is_string(value)
	value != null
	count(value) > 0
}

# members are the tenant's users and groups with their roles.
default members := []

members := input.tenant.members

# attested(key) is true when the tenant carries a non-blank attestation under key.
attested(key) if filled(attestations[key])

default now := ""

# now is when the decision is made (the platform's clock), "" when not given.
now := input.now

default sandbox_end := "9999-12-31T23:59:59Z"

# sandbox_end is when the sandbox ends; a sandbox without an end lasts for ever.
sandbox_end := input.sandbox.lifetime.expiresAt

# adequate_until(f, until) is true when personal data may go to a region with facts f
# for a use lasting until `until` (a timestamp, "" for now only): the EEA, or a country
# whose full adequacy decision (policies/data/adequacy) is in force from now until then.
adequate_until(f, _) if f.eea == true

adequate_until(f, until) if {
	f.eea == false
	f.eeaOrAdequate == true
	decision := object.get(adequacy, f.country, {})
	object.get(decision, "adopted", "") <= now
	_in_force(object.get(decision, "validUntil", ""), until)
}

_in_force("", _)

_in_force(valid_until, until) if {
	valid_until != ""
	valid_until >= until
}

_mechanisms := {"scc", "bcr", "dpf"}

# transfer_gaps(t, country) names what transfer declaration t to country lacks: the
# empty set when it is complete (GDPR Art. 45 for the DPF, Art. 46(2)(b)/(c) for BCRs
# and SCCs). A missing declaration (null, or anything not an object) lacks everything.
transfer_gaps(t, country) := _gaps(_object(t), country)

_object(t) := t if is_object(t)

_object(t) := {} if not is_object(t)

_gaps(t, country) := {gap |
	some gap in [_no_mechanism, _no_reference, _no_recipient, _not_us, _not_certified]
	_lacks(t, country, gap)
}

_no_mechanism := "a transfer mechanism (scc, bcr or dpf)"

_no_reference := "the transfer's reference (SCC contract, BCR approval or DPF entry)"

_no_recipient := "the recipient"

_not_us := "a US recipient (the Data Privacy Framework covers only transfers to the US)"

_not_certified := "the recipient's DPF certification (certified: true)"

_lacks(t, _, gap) if {
	gap == _no_mechanism
	not object.get(t, "mechanism", "") in _mechanisms
}

_lacks(t, _, gap) if {
	gap == _no_reference
	not nonblank(object.get(t, "reference", ""))
}

_lacks(t, _, gap) if {
	gap == _no_recipient
	not nonblank(object.get(t, "recipient", ""))
}

_lacks(t, country, gap) if {
	gap == _not_us
	object.get(t, "mechanism", "") == "dpf"
	country != "US"
}

_lacks(t, _, gap) if {
	gap == _not_certified
	object.get(t, "mechanism", "") == "dpf"
	object.get(t, "certified", false) != true
}

default sandbox_purpose := ""

# sandbox_purpose is the purpose the sandbox declares for all of its processing.
sandbox_purpose := input.sandbox.purpose
