"""What an accepted publication changes, as data the store applies atomically.

`Effects` is produced by the pure rules and written by the API in ONE
multi-document transaction. `guards` are unique keys the store inserts in that
same transaction; a duplicate key means a concurrent publication won the race
(double consumption, double transfer, forked issuance sequence, replayed
nonce), and the whole transaction is aborted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .envelope import Envelope
from .models import Attestation, Claim, IssuanceMark, Lot, Organization, Site


@dataclass(frozen=True)
class Guard:
    """A unique key: (namespace, key). Namespaces: nonce, consume, custody, issuance, site-attestation."""

    namespace: str
    key: str
    reason: str  # the message when the key already exists


@dataclass(frozen=True)
class SealedOpening:
    """Ciphertext of lot openings readable only by `recipient` (X25519 sealed box)."""

    recipient: str
    lot_ids: tuple[str, ...]
    ciphertext: str
    event_id: str


@dataclass(frozen=True)
class CustodyMove:
    lot_id: str
    from_owner: str
    to_owner: str
    custody_seq: int  # the new value; the store updates only if the lot still has custody_seq - 1


@dataclass
class Effects:
    envelope: Envelope
    event_type: str
    lot_ids: list[str] = field(default_factory=list)  # every lot the event touches (for queries)
    guards: list[Guard] = field(default_factory=list)
    organizations: list[Organization] = field(default_factory=list)  # upserts (whole record)
    sites: list[Site] = field(default_factory=list)  # upserts (whole record)
    attestations: list[Attestation] = field(default_factory=list)  # inserts (new ids)
    attestation_updates: list[Attestation] = field(default_factory=list)  # superseded / revoked: whole record
    issuance_mark: IssuanceMark | None = None  # replaces the attestation's mark
    new_lots: list[Lot] = field(default_factory=list)
    consumed: list[str] = field(default_factory=list)  # lot ids, set consumed_by_event
    custody_moves: list[CustodyMove] = field(default_factory=list)
    claims: list[Claim] = field(default_factory=list)
    sealed: list[SealedOpening] = field(default_factory=list)

    @property
    def event_id(self) -> str:
        return self.envelope.event_id
