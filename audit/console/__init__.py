"""The read-only web console for compliance officers, served by the audit service.

Pages to search and filter entries, see one entry with its inclusion proof checked in
the browser, follow model exports and their reviews, read a timeline and the checkpoint
history. Officers sign in with a Kubernetes token (or send ``Authorization: Bearer``);
every page is authorised by the service's own read check for its scope, so a tenant
auditor's console shows only that tenant's slice. No framework and nothing fetched from
elsewhere: server-rendered HTML, one stylesheet and one small script, all served here.
"""

from audit.console.history import CheckpointHistory, SeenCheckpoint
from audit.console.pages import (
    CONTENT_SECURITY_POLICY,
    SCAN_BUDGET,
    ConsoleLog,
    ConsoleSettings,
    ConsoleSource,
    ReadCheck,
    mount_console,
)
from audit.console.query import Filters, Paging, search
from audit.console.sessions import DEFAULT_SESSION_SECONDS, Session, SessionStore

__all__ = [
    "CONTENT_SECURITY_POLICY",
    "DEFAULT_SESSION_SECONDS",
    "SCAN_BUDGET",
    "CheckpointHistory",
    "ConsoleLog",
    "ConsoleSettings",
    "ConsoleSource",
    "Filters",
    "Paging",
    "ReadCheck",
    "SeenCheckpoint",
    "Session",
    "SessionStore",
    "mount_console",
    "search",
]
