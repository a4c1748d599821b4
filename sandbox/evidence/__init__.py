"""Evidence packs: the platform's controls mapped to signed, offline-verifiable proof.

Modules by role (import them directly; this package imports nothing, so that loading
the CLI does not load the OSCAL models):

- :mod:`sandbox.evidence.catalog` — the OSCAL control catalogue shipped as data;
- :mod:`sandbox.evidence.collect` — a scope's audit entries and receipts against one
  checkpoint, and the cluster's isolation objects;
- :mod:`sandbox.evidence.remote` — the same from a running audit service's read API;
- :mod:`sandbox.evidence.receipts` — the batch receipt: every entry proven at once;
- :mod:`sandbox.evidence.assess` — the checks: one finding per control, pure functions;
- :mod:`sandbox.evidence.oscal` — the OSCAL assessment results;
- :mod:`sandbox.evidence.report` — the self-contained HTML report;
- :mod:`sandbox.evidence.pack` — writing and signing a pack;
- :mod:`sandbox.evidence.pdf` — printing the report to PDF with a headless Chromium;
- :mod:`sandbox.evidence.verify` — checking a pack offline, findings recomputed.
"""

__all__: list[str] = []
