package lib_test

import data.data.regionfacts
import data.data.regions
import data.lib

# policies/data/regionfacts is derived from regions, areas and adequacy; when this
# test fails, regenerate it: for every region, its country, whether the country is in
# the EEA, and whether it is in the EEA or has a full adequacy decision.
test_region_facts_match_their_sources if {
	object.keys(regionfacts) == object.keys(regions)
	every r, f in regionfacts {
		f.country == lib.country(r)
	}

	# regopy 1.5 cannot parse "some k, v in ..." inside a set comprehension.
	eea_facts := {r |
		some r in object.keys(regionfacts)
		regionfacts[r].eea
	}
	eea_regions := {r |
		some r in object.keys(regions)
		lib.eea_country(lib.country(r))
	}
	eea_facts == eea_regions
	adequate_facts := {r |
		some r in object.keys(regionfacts)
		regionfacts[r].eeaOrAdequate
	}
	adequate_regions := {r |
		some r in object.keys(regions)
		lib.eea_or_adequate(lib.country(r))
	}
	adequate_facts == adequate_regions
}

test_facts_in_area_matches_in_area if {
	cases := {[r, sector, jurisdiction] |
		some r in object.keys(regions)
		some sector in ["finance", "public", "research", "unknown"]
		some jurisdiction in ["LU", "DE", "US"]
	}
	slow := {c |
		some c in cases
		lib.in_area(c[0], c[1], c[2])
	}
	count(slow) > 0
	fast := {c |
		some c in cases
		lib.facts_in_area(regionfacts[c[0]], lib.area_name(c[1]), c[2])
	}
	slow == fast
}

# personal, special and sensitive spell out identifiability and category (see
# lib.rego); over every class and legacy personalData value, with and without a
# sector, they must say what the definitions through those two functions say.
test_spelled_out_classes_match_identifiability_and_category if {
	datasets := [d |
		some ident in [null, "anonymous", "pseudonymised", "identified", "unknown"]
		some cat in [null, "ordinary", "special-category", "criminal-offence", "unknown"]
		some legacy in [null, "none", "anonymised", "pseudonymised", "personal", "special-category"]
		some sector in [null, "health", "finance"]
		full := {"name": "d", "identifiability": ident, "category": cat, "personalData": legacy, "sector": sector}
		d := object.remove(full, [k | some k in object.keys(full); full[k] == null])
	]
	count(datasets) == 450
	every d in datasets {
		_personal(d) == _personal_by_definition(d)
		_special(d) == _special_by_definition(d)
		_sensitive(d) == _sensitive_by_definition(d)
	}
}

_personal(d) if lib.personal(d)

else := false

_special(d) if lib.special(d)

else := false

_sensitive(d) if lib.sensitive(d)

else := false

_special_by_definition(d) if {
	lib.identifiability(d) != "anonymous"
	not lib.category(d) in {"ordinary", "criminal-offence"}
} else if {
	d.sector == "health"
	lib.identifiability(d) != "anonymous"
} else := false

_sensitive_by_definition(d) if {
	_special_by_definition(d)
} else if {
	lib.identifiability(d) != "anonymous"
	lib.category(d) == "criminal-offence"
} else := false

_personal_by_definition(d) if {
	lib.identifiability(d) != "anonymous"
} else := false
