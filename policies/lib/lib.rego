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

# Personal-data classes within the scope of the GDPR. Anonymised data is outside it
# (GDPR Recital 26), as is "none".
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

# personal(d) is true when dataset d holds data within the GDPR's scope.
# Pseudonymised data is personal data (GDPR Recital 26).
personal(d) if object.get(d, "personalData", "") in personal_classes

# special(d) is true when dataset d holds special-category data (GDPR Art. 9(1)).
# Personal data of a health dataset is data concerning health, so special-category
# whatever class its steward gave it, pseudonymised included (Recital 26, Art. 9(1)).
special(d) if object.get(d, "personalData", "") == "special-category"

special(d) if {
	d.sector == "health"
	personal(d)
}

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

# attested(key) is true when the tenant carries a non-blank attestation under key.
attested(key) if filled(attestations[key])

default sandbox_purpose := ""

# sandbox_purpose is the purpose the sandbox declares for all of its processing.
sandbox_purpose := input.sandbox.purpose
