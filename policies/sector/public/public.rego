# METADATA
# title: AI Act Art. 59 (further processing of personal data in a regulatory sandbox)
# description: |
#   A sandbox that processes personal data for developing AI in the public interest
#   under AI Act Art. 59 states its public-interest area, why the processing is
#   necessary (anonymised or synthetic data will not do), how risks are monitored,
#   and its deletion commitment; the tenant has a DPIA on record; the lifetime is
#   bounded and the data deleted at the end. This applies to any participant that
#   relies on Art. 59 (a sandbox with spec.publicInterest), and to every
#   public-sector sandbox processing personal data, which must rely on it.
package sector.public

import data.data.sectors
import data.lib

# The rules apply to every decision that puts personal data in reach of a sandbox
# relying on Art. 59: provisioning and every grant (data_violations, see main.rego).
_applies if {
	_relies_on_article_59
	lib.data_access
	lib.processes_personal_data
}

_relies_on_article_59 if lib.sector == "public"

_relies_on_article_59 if is_object(input.sandbox.publicInterest)

_public_interest := object.get(input.sandbox, "publicInterest", {})

_max_seconds := sectors.public.maxLifetimeDays * 86400

# _bounded is true when the sandbox has a ttl no longer than public.maxLifetimeDays.
_bounded if {
	seconds := object.get(input.sandbox, ["lifetime", "seconds"], null)
	is_number(seconds)
	seconds <= _max_seconds
}

# METADATA
# title: Public-interest area stated
# description: |
#   The sandbox must name one of the public-interest areas of Art. 59(1)(a), as
#   listed in policies/data/sectors (public.publicInterestAreas).
# custom:
#   code: PUBLIC_INTEREST_AREA_MISSING
#   regulation: AI Act Art. 59(1)(a)
data_violations contains v if {
	_applies
	area := object.get(_public_interest, "area", "")
	not area in sectors.public.publicInterestAreas
	v := lib.violation(
		"PUBLIC_INTEREST_AREA_MISSING",
		concat("", ["public-interest area '", area, "' is missing or not one of the areas of AI Act Art. 59(1)(a)"]),
		"AI Act Art. 59(1)(a)",
		concat("", ["sandbox/", lib.sandbox_name]),
	)
}

# METADATA
# title: Why anonymised or synthetic data will not do
# description: |
#   The sandbox must say why the requirements cannot be met with anonymised,
#   synthetic or other non-personal data. A justification blank after trimming is
#   missing. Simplified: any other text is accepted; its merit is for the supervisor
#   to judge.
# custom:
#   code: PUBLIC_ANONYMISATION_JUSTIFICATION_MISSING
#   regulation: AI Act Art. 59(1)(b) (simplified)
data_violations contains v if {
	_applies
	not lib.nonblank(object.get(_public_interest, "whyNotAnonymised", ""))
	v := lib.violation(
		"PUBLIC_ANONYMISATION_JUSTIFICATION_MISSING",
		"the sandbox does not say why anonymised or synthetic data will not do",
		"AI Act Art. 59(1)(b) (simplified)",
		concat("", ["sandbox/", lib.sandbox_name]),
	)
}

# METADATA
# title: DPIA on record
# description: |
#   The tenant must carry a platform-verified reference to a data protection impact
#   assessment. Simplified: the reference is checked for presence, not content.
# custom:
#   code: PUBLIC_DPIA_MISSING
#   regulation: AI Act Art. 59(1)(c); GDPR Art. 35 (simplified)
data_violations contains v if {
	_applies
	not lib.attested("dpiaReference")
	v := lib.violation(
		"PUBLIC_DPIA_MISSING",
		"the tenant has no attested DPIA reference",
		"AI Act Art. 59(1)(c); GDPR Art. 35 (simplified)",
		concat("", ["tenant/", lib.tenant_name]),
	)
}

# METADATA
# title: Lifetime is bounded
# description: |
#   The sandbox must end: a ttl or expiry no longer than public.maxLifetimeDays in
#   policies/data/sectors. Simplified: the AI Act leaves sandbox duration to
#   implementing acts; the bound here is the platform's.
# custom:
#   code: PUBLIC_LIFETIME_UNBOUNDED
#   regulation: AI Act Art. 58(2), Art. 59(1) (simplified)
data_violations contains v if {
	_applies
	not _bounded
	v := lib.violation(
		"PUBLIC_LIFETIME_UNBOUNDED",
		concat("", [
			"the sandbox has no lifetime or one longer than ",
			format_int(sectors.public.maxLifetimeDays, 10), " days",
		]),
		"AI Act Art. 58(2), Art. 59(1) (simplified)",
		concat("", ["sandbox/", lib.sandbox_name]),
	)
}

# METADATA
# title: Data deleted at the end
# description: |
#   Personal data processed in the sandbox must be deleted when the sandbox ends;
#   the sandbox may not ask to retain it.
# custom:
#   code: PUBLIC_DATA_NOT_DELETED_AT_END
#   regulation: AI Act Art. 59(1)(g)
data_violations contains v if {
	_applies
	on_expiry := object.get(input.sandbox, ["lifetime", "onExpiry"], "delete")
	on_expiry != "delete"
	v := lib.violation(
		"PUBLIC_DATA_NOT_DELETED_AT_END",
		concat("", ["the sandbox asks to '", on_expiry, "' its data at the end instead of deleting it"]),
		"AI Act Art. 59(1)(g)",
		concat("", ["sandbox/", lib.sandbox_name]),
	)
}

# METADATA
# title: Risk monitoring stated
# description: |
#   The sandbox must say how risks to the rights and freedoms of the data subjects
#   are monitored and responded to during the processing; blank is missing.
#   Simplified: the text is for the supervisor to judge.
# custom:
#   code: PUBLIC_MONITORING_MISSING
#   regulation: AI Act Art. 59(1)(c) (simplified)
data_violations contains v if {
	_applies
	not lib.nonblank(object.get(_public_interest, "monitoring", ""))
	v := lib.violation(
		"PUBLIC_MONITORING_MISSING",
		"the sandbox does not say how risks to the data subjects are monitored (publicInterest.monitoring)",
		"AI Act Art. 59(1)(c) (simplified)",
		concat("", ["sandbox/", lib.sandbox_name]),
	)
}

# METADATA
# title: Deletion commitment stated
# description: |
#   The sandbox must commit to deleting the personal data once its participation
#   ends or the retention period is over; blank is missing. The platform enforces
#   the deletion itself (lifetime.onExpiry delete, checked above).
# custom:
#   code: PUBLIC_DELETION_COMMITMENT_MISSING
#   regulation: AI Act Art. 59(1)(g)
data_violations contains v if {
	_applies
	not lib.nonblank(object.get(_public_interest, "deletion", ""))
	v := lib.violation(
		"PUBLIC_DELETION_COMMITMENT_MISSING",
		"the sandbox states no commitment to delete the personal data at the end (publicInterest.deletion)",
		"AI Act Art. 59(1)(g)",
		concat("", ["sandbox/", lib.sandbox_name]),
	)
}
