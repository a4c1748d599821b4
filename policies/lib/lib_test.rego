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
