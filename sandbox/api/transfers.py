"""Transfer declarations (GDPR Chapter V): how personal data lawfully reaches a third country.

A declaration names the mechanism, the document it rests on and the recipient, so a
reviewer can check it and policy can name the element that is missing. Where the data
goes is not part of it: that is the region of the Dataset or egress entry it is
declared on. Adequacy decisions (Art. 45) need no declaration; they are policy data
(``policies/data/adequacy``), with their reference and validity.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from sandbox.api.meta import WireModel

__all__ = ["AttestedTransfer", "Transfer", "TransferMechanism"]


class TransferMechanism(StrEnum):
    """The GDPR Chapter V ground a transfer rests on."""

    scc = "scc"
    """Standard contractual clauses adopted by the Commission, Art. 46(2)(c)."""
    bcr = "bcr"
    """Binding corporate rules approved under Art. 47 (Art. 46(2)(b))."""
    dpf = "dpf"
    """EU-US Data Privacy Framework (adequacy decision (EU) 2023/1795, Art. 45): the
    recipient must be certified, and the transfer go to the United States."""


class Transfer(WireModel):
    """A declared transfer of personal data to a third country."""

    mechanism: TransferMechanism
    """``scc``, ``bcr`` or ``dpf``."""
    reference: str = Field(min_length=1, max_length=1024)
    """The document it rests on: the signed SCC (module and contract id), the BCR
    approval, or the recipient's entry on the DPF list."""
    recipient: str = Field(min_length=1, max_length=1024)
    """Who receives the data (legal name)."""
    certified: bool = False
    """``dpf`` only: the recipient is certified under the Data Privacy Framework for the
    data concerned (checked on the DPF list by whoever wrote this declaration)."""


class AttestedTransfer(Transfer):
    """A transfer the platform reviewed for a tenant (Tenant ``spec.attestations.transfers``).

    A Sandbox egress entry may rely on a transfer only when the same mechanism and
    reference are attested here, so a tenant cannot declare its own way out.
    """

    country: str = Field(pattern=r"^[A-Z]{2}$")
    """ISO 3166-1 alpha-2 country of the recipient."""
