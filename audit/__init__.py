"""The regsandbox audit log: a signed, append-only transparency log.

Formats follow RFC 6962 / RFC 9162 and the C2SP specifications (signed-note,
tlog-checkpoint, tlog-proof) so that the log can be verified offline with tools nobody on
this project wrote. Typical use::

    from audit import AuditLog, Event, Actor, Resource, Signer

    log = AuditLog.create("/var/lib/audit", "audit.example/prod", Signer.generate(...))
    [index] = log.append_batch([Event(actor=..., action="dataset.read", ...)])
    receipt = log.receipt(index).to_bytes()     # after the next checkpoint
"""

from audit.anchor import CheckpointAnchor, FileCheckpointAnchor
from audit.checkpoint import Checkpoint, open_checkpoint, sign_checkpoint
from audit.entry import MAX_ENTRY_BYTES, Actor, DecisionRecord, Entry, Event, Resource
from audit.errors import (
    AnchorConflictError,
    AnchorMismatchError,
    AuditError,
    EntryTooLargeError,
    LogLockedError,
    MalformedError,
    StorageError,
    VerificationError,
)
from audit.log import AuditLog, LogReader
from audit.merkle import (
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    verify_consistency,
    verify_inclusion,
)
from audit.note import Note, Signer, Verifier, open_note, sign_note
from audit.proof import TlogProof, verify_tlog_proof
from audit.signing import generate_key_file, load_signer, load_verifier
from audit.snapshot import snapshot
from audit.verify import UnsignedTail, VerifyReport, verify_log

__all__ = [
    "MAX_ENTRY_BYTES",
    "Actor",
    "AnchorConflictError",
    "AnchorMismatchError",
    "AuditError",
    "AuditLog",
    "Checkpoint",
    "CheckpointAnchor",
    "DecisionRecord",
    "Entry",
    "EntryTooLargeError",
    "Event",
    "FileCheckpointAnchor",
    "LogLockedError",
    "LogReader",
    "MalformedError",
    "Note",
    "Resource",
    "Signer",
    "StorageError",
    "TlogProof",
    "UnsignedTail",
    "VerificationError",
    "Verifier",
    "VerifyReport",
    "consistency_proof",
    "generate_key_file",
    "inclusion_proof",
    "leaf_hash",
    "load_signer",
    "load_verifier",
    "node_hash",
    "open_checkpoint",
    "open_note",
    "sign_checkpoint",
    "sign_note",
    "snapshot",
    "verify_consistency",
    "verify_inclusion",
    "verify_log",
    "verify_tlog_proof",
]
