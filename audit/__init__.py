"""The regsandbox audit log: a signed, append-only transparency log.

Formats follow RFC 6962 / RFC 9162 and the C2SP specifications so that the log can be
verified offline with tools nobody on this project wrote.
"""

__all__: list[str] = []
