"""The model export airlock: Submitted → PolicyChecked → InReview → Approved → Released.

A ModelExport leaves the airlock as Released (its artifact copied to a registered
destination, digest checked, receipt kept), Rejected (by policy, by any accepted
rejection, or because the artifact changed after it was checked), or — after release —
Revoked (a reviewer's ``revoke`` removes the released object).

:func:`reconcile_export` is level-triggered: every call looks at the export and all of
its ExportReviews and moves it as far as it can; calling it again changes nothing.
Every transition is appended to the audit log *before* the status that shows it is
written (:class:`~sandbox.lifecycle.step.Step`), with the identities involved
(requester, reviewers, the operator); if the log cannot take an entry, nothing is
released (a copy already made is deleted again).

Identities come from the API server: admission policies make ``spec.requestedBy`` and
``spec.reviewer`` equal to the authenticated user and ``spec.groups`` a subset of the
user's groups, and specs immutable. The operator then checks what admission cannot:
the requester never reviews, reviewers hold the ``reviewer`` role on the Tenant, and a
review counts only for an export created before it.

Modules by job: :mod:`.airlock` (the stage sequence), :mod:`.request` (submission,
policy check, approvals), :mod:`.review` (judging reviews), :mod:`.release` (release,
receipt, revocation), :mod:`.decision` (the ``model.export`` decision).
"""

from sandbox.lifecycle.exports.airlock import reconcile_export
from sandbox.lifecycle.exports.decision import (
    CODE_DESTINATION_NOT_REGISTERED,
    CODE_DESTINATION_REGION_MISMATCH,
)
from sandbox.lifecycle.exports.review import (
    ReviewVerdict,
    judge_review,
    list_reviews,
    review_status,
)

__all__ = [
    "CODE_DESTINATION_NOT_REGISTERED",
    "CODE_DESTINATION_REGION_MISMATCH",
    "ReviewVerdict",
    "judge_review",
    "list_reviews",
    "reconcile_export",
    "review_status",
]
