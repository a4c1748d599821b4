# METADATA
# title: Model export review
# description: |
#   Every model export is reviewed before release. The number of distinct reviewers
#   is set per sector in policies/data/sectors (exportReviewers); the requester never
#   reviews their own export. At submission (no approvals yet) the policy returns
#   the obligations; at release (approvals present) it checks them.
package export

import data.data.sectors
import data.lib

default required_reviewers := 1

required_reviewers := sectors.exportReviewers[lib.sector]

_requester := object.get(input, ["export", "requester"], "")

# _requester_name is the requester trimmed, "" when it is not a string.
default _requester_name := ""

_requester_name := trim_space(_requester) if is_string(_requester)

# _recorded holds the recorded approvals, null until reviews are recorded (and when
# input.export is absent or not an object: object.get on input, never on
# input.export, so both engines read a missing export alike).
_recorded := object.get(input, ["export", "approvals"], null)

# _approvers are the distinct approvers named by the recorded approvals: non-blank
# strings, trimmed. Anything else in the list (or a list that is not one) names
# nobody, so it can neither count as a review nor hide a self-review.
_approvers contains trim_space(a) if {
	is_array(_recorded)
	some a in _recorded
	lib.nonblank(a)
}

_export_subject := concat("", ["export/", object.get(input, ["export", "name"], "")])

# Obligation: the export needs this many distinct approving reviewers.
obligations contains o if {
	lib.exporting
	o := lib.obligation(
		"EXPORT_REVIEWS_REQUIRED",
		required_reviewers,
		"AI Act Art. 14 human oversight; four-eyes principle (simplified)",
	)
}

# Obligation: no reviewer may be the requester.
obligations contains o if {
	lib.exporting
	o := lib.obligation("EXPORT_REVIEWER_NOT_REQUESTER", true, "four-eyes principle")
}

# Obligation: reviewers judge the anonymity claim, whose assessment is named here.
obligations contains o if {
	lib.exporting
	reference := object.get(input, ["export", "anonymity", "assessmentReference"], "")
	lib.nonblank(reference)
	o := lib.obligation(
		"EXPORT_ANONYMITY_CLAIM_REVIEWED",
		reference,
		"GDPR Recital 26; AI Act Art. 14 human oversight (simplified)",
	)
}

# METADATA
# title: No self-review
# description: |
#   The requester of an export may not approve it. Read from the recorded approvals
#   only; an export without any (or without input.export at all) has no self-review.
# custom:
#   code: EXPORT_SELF_REVIEW
#   regulation: four-eyes principle
violations contains v if {
	lib.exporting
	_requester_name != ""
	_requester_name in _approvers
	v := lib.violation(
		"EXPORT_SELF_REVIEW",
		concat("", ["requester '", _requester, "' approved their own export"]),
		"four-eyes principle",
		_export_subject,
	)
}

# METADATA
# title: Enough distinct reviewers
# description: |
#   Once approvals are recorded, the number of distinct approvers other than the
#   requester must reach the sector's requirement (finance 2, health 1, others 1).
#   Blank names and approvals that are not a list of names count for nobody.
# custom:
#   code: EXPORT_INSUFFICIENT_REVIEWS
#   regulation: AI Act Art. 14 human oversight; four-eyes principle (simplified)
violations contains v if {
	lib.exporting
	_recorded != null
	distinct := _approvers - {_requester_name}
	count(distinct) < required_reviewers
	v := lib.violation(
		"EXPORT_INSUFFICIENT_REVIEWS",
		concat("", [
			format_int(count(distinct), 10), " distinct reviewer(s) approved; ",
			format_int(required_reviewers, 10), " required",
		]),
		"AI Act Art. 14 human oversight; four-eyes principle (simplified)",
		_export_subject,
	)
}

# METADATA
# title: The export is justified
# description: |
#   An export must say why the artifact has to leave the sandbox, for the reviewers
#   and the audit log; a justification blank after trimming is missing.
# custom:
#   code: EXPORT_JUSTIFICATION_MISSING
#   regulation: GDPR Art. 5(2) accountability; AI Act Art. 14 human oversight (simplified)
violations contains v if {
	lib.exporting
	not lib.nonblank(object.get(input, ["export", "justification"], ""))
	v := lib.violation(
		"EXPORT_JUSTIFICATION_MISSING",
		"the export does not say why the artifact must leave the sandbox",
		"GDPR Art. 5(2) accountability; AI Act Art. 14 human oversight (simplified)",
		_export_subject,
	)
}

# METADATA
# title: An anonymity claim names its assessment
# description: |
#   An export that claims its artifact is anonymous must give the reference of the
#   assessment the claim rests on, for the reviewers; a claim whose reference is
#   blank is refused rather than ignored.
# custom:
#   code: EXPORT_ANONYMITY_ASSESSMENT_MISSING
#   regulation: GDPR Recital 26, Art. 5(2) accountability
violations contains v if {
	lib.exporting
	claim := object.get(input, ["export", "anonymity"], null)
	claim != null
	not lib.nonblank(object.get(claim, "assessmentReference", ""))
	v := lib.violation(
		"EXPORT_ANONYMITY_ASSESSMENT_MISSING",
		"the export claims its artifact is anonymous but names no assessment (anonymity.assessmentReference)",
		"GDPR Recital 26, Art. 5(2) accountability",
		_export_subject,
	)
}
