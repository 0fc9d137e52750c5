"""Read-only state as the rules see it.

The rules are pure functions of (envelope, view). On the server the view is a
snapshot prefetched from MongoDB for exactly the ids an envelope references
(`references`); offline it is the state replayed from a disclosure bundle.
Races between concurrent publications are settled by the store's unique keys
(see `Effects.guards`), not by this snapshot.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from .effects import Effects
from .models import Attestation, Claim, IssuanceMark, Lot, Organization, Site

OPERATOR = "operator"  # org id of the network operator, whose root key anchors the registry


class LedgerView(Protocol):
    def organization(self, org_id: str) -> Organization | None: ...
    def site(self, site_id: str) -> Site | None: ...
    def attestation(self, attestation_id: str) -> Attestation | None: ...
    def site_attestations(self, site_id: str) -> list[Attestation]: ...
    def issuance_mark(self, attestation_id: str) -> IssuanceMark | None: ...
    def lot(self, lot_id: str) -> Lot | None: ...


@dataclass
class References:
    """The ids an envelope's rule will look up; the store prefetches these."""

    organizations: set[str] = field(default_factory=set)
    sites: set[str] = field(default_factory=set)
    attestations: set[str] = field(default_factory=set)
    #: sites whose every attestation the rule reads (capacity chains, overlap)
    site_attestations: set[str] = field(default_factory=set)
    lots: set[str] = field(default_factory=set)
    #: lots whose whole ancestry (the lot and every lot upstream, via parents) the
    #: rule walks; the store prefetches them all (e.g. one $graphLookup) into `lots`.
    ancestry: set[str] = field(default_factory=set)


@dataclass
class MemoryView:
    """A dict-backed LedgerView: the server's prefetched snapshot, or replayed bundle state."""

    organizations: dict[str, Organization] = field(default_factory=dict)
    sites: dict[str, Site] = field(default_factory=dict)
    attestations: dict[str, Attestation] = field(default_factory=dict)
    issuance_marks: dict[str, IssuanceMark] = field(default_factory=dict)
    lots: dict[str, Lot] = field(default_factory=dict)
    claims: dict[str, Claim] = field(default_factory=dict)  # not read by the rules; kept by replays

    def organization(self, org_id: str) -> Organization | None:
        return self.organizations.get(org_id)

    def site(self, site_id: str) -> Site | None:
        return self.sites.get(site_id)

    def attestation(self, attestation_id: str) -> Attestation | None:
        return self.attestations.get(attestation_id)

    def site_attestations(self, site_id: str) -> list[Attestation]:
        """Every attestation of the site, oldest period first."""
        found = [a for a in self.attestations.values() if a.site_id == site_id]
        return sorted(found, key=lambda a: (a.valid_from, a.attestation_id))

    def issuance_mark(self, attestation_id: str) -> IssuanceMark | None:
        return self.issuance_marks.get(attestation_id)

    def lot(self, lot_id: str) -> Lot | None:
        return self.lots.get(lot_id)


def apply_effects_to_view(view: MemoryView, effects: Effects) -> None:
    """Write accepted Effects into a MemoryView: what the store does in MongoDB, in memory.

    Guards are not state: whoever replays events checks them (the store by
    unique indexes, `ledger.bundle` by a set).
    """
    for org in effects.organizations:
        view.organizations[org.org_id] = org
    for site in effects.sites:
        view.sites[site.site_id] = site
    for attestation in [*effects.attestations, *effects.attestation_updates]:
        view.attestations[attestation.attestation_id] = attestation
    if effects.issuance_mark is not None:
        view.issuance_marks[effects.issuance_mark.attestation_id] = effects.issuance_mark
    for lot in effects.new_lots:
        view.lots[lot.lot_id] = lot
    for lot_id in effects.consumed:
        view.lots[lot_id] = view.lots[lot_id].model_copy(update={"consumed_by_event": effects.event_id})
    for move in effects.custody_moves:
        view.lots[move.lot_id] = view.lots[move.lot_id].model_copy(
            update={"owner": move.to_owner, "custody_seq": move.custody_seq}
        )
    for claim in effects.claims:
        view.claims[claim.claim_id] = claim
