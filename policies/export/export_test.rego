package export_test

import data.export

_codes(violations) := {v.code | some v in violations}

test_submission_returns_reviewer_obligations if {
	obligations := export.obligations with input.action as "model.export"
		with input.tenant as {"name": "b", "sector": "finance"}
		with input.export as {"name": "e1", "justification": "deploy", "requester": "alice"}
	obligations == {
		{
			"code": "EXPORT_REVIEWS_REQUIRED",
			"value": 2,
			"regulation": "AI Act Art. 14 human oversight; four-eyes principle (simplified)",
		},
		{"code": "EXPORT_REVIEWER_NOT_REQUESTER", "value": true, "regulation": "four-eyes principle"},
	}
	count(export.violations) == 0 with input.action as "model.export"
		with input.tenant as {"name": "b", "sector": "finance"}
		with input.export as {"name": "e1", "justification": "deploy", "requester": "alice"}
}

test_finance_needs_two_distinct_reviewers if {
	codes := _codes(export.violations) with input.action as "model.export"
		with input.tenant as {"name": "b", "sector": "finance"}
		with input.export as {"name": "e1", "justification": "deploy", "requester": "alice", "approvals": ["bob", "bob"]}
	codes == {"EXPORT_INSUFFICIENT_REVIEWS"}
	count(export.violations) == 0 with input.action as "model.export"
		with input.tenant as {"name": "b", "sector": "finance"}
		with input.export as {"name": "e1", "justification": "deploy", "requester": "alice", "approvals": ["bob", "carol"]}
}

test_self_review_does_not_count if {
	codes := _codes(export.violations) with input.action as "model.export"
		with input.tenant as {"name": "h", "sector": "health"}
		with input.export as {"name": "e1", "justification": "deploy", "requester": "alice", "approvals": ["alice"]}
	codes == {"EXPORT_SELF_REVIEW", "EXPORT_INSUFFICIENT_REVIEWS"}
}

test_unknown_sector_needs_one_reviewer if {
	export.required_reviewers == 1 with input.tenant as {"name": "x", "sector": "unknown"}
}

test_a_blank_justification_is_missing if {
	codes := _codes(export.violations) with input.action as "model.export"
		with input.tenant as {"name": "h", "sector": "health"}
		with input.export as {"name": "e1", "requester": "alice", "justification": " \n\t"}
	codes == {"EXPORT_JUSTIFICATION_MISSING"}
}

# Four-eyes principle: a self-review needs a recorded approval by the requester. With
# no export in the input there is nothing approved, so nothing self-reviewed.
test_no_export_is_no_self_review if {
	codes := _codes(export.violations) with input.action as "model.export"
		with input.tenant as {"name": "h", "sector": "health"}
	codes == {"EXPORT_JUSTIFICATION_MISSING"}
}

test_a_padded_self_approval_is_still_a_self_review if {
	codes := _codes(export.violations) with input.action as "model.export"
		with input.tenant as {"name": "h", "sector": "health"}
		with input.export as {"name": "e1", "justification": "deploy", "requester": "alice", "approvals": [" alice "]}
	codes == {"EXPORT_SELF_REVIEW", "EXPORT_INSUFFICIENT_REVIEWS"}
}

# A blank name or an approval list that is not a list of names approves nothing.
test_blank_or_malformed_approvals_count_for_nobody if {
	codes := _codes(export.violations) with input.action as "model.export"
		with input.tenant as {"name": "b", "sector": "finance"}
		with input.export as {"name": "e1", "justification": "deploy", "requester": "alice", "approvals": ["", " ", 7, "bob"]}
	codes == {"EXPORT_INSUFFICIENT_REVIEWS"}
	object_codes := _codes(export.violations) with input.action as "model.export"
		with input.tenant as {"name": "h", "sector": "health"}
		with input.export as {"name": "e1", "justification": "deploy", "requester": "alice", "approvals": {"bob": true}}
	object_codes == {"EXPORT_INSUFFICIENT_REVIEWS"}
}
