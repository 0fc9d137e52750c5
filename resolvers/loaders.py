"""Per-request DataLoaders: every fan-out (lot -> owner, lot -> parents, site ->
attestations, ...) becomes one `$in` query per request tick, never N+1.

Created in `get_context` for each request, so caches never leak between
requests (or between organisations).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from strawberry.dataloader import DataLoader

from api.store import Store
from ledger.models import Attestation, Claim, IssuanceMark, Lot, Organization, Site

V = TypeVar("V")


def _by_key(fetch: Callable[[list[str]], Any], default: Callable[[], Any] = lambda: None):
    async def load(keys: list[str]) -> list[Any]:
        found = await fetch(list(keys))
        return [found.get(key, default()) for key in keys]

    return load


class Loaders:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.lot: DataLoader[str, Lot | None] = DataLoader(load_fn=_by_key(store.lots_by_ids))
        self.organization: DataLoader[str, Organization | None] = DataLoader(
            load_fn=_by_key(store.organizations_by_ids)
        )
        self.site: DataLoader[str, Site | None] = DataLoader(load_fn=_by_key(store.sites_by_ids))
        self.attestation: DataLoader[str, Attestation | None] = DataLoader(
            load_fn=_by_key(store.attestations_by_ids)
        )
        self.issuance_mark: DataLoader[str, IssuanceMark | None] = DataLoader(
            load_fn=_by_key(store.issuance_marks_by_ids)
        )
        self.claims_by_lot: DataLoader[str, list[Claim]] = DataLoader(
            load_fn=_by_key(store.claims_by_lot_ids, list)
        )
        self.attestations_by_site: DataLoader[str, list[Attestation]] = DataLoader(
            load_fn=_by_key(store.attestations_by_site_ids, list)
        )

    def prime_lots(self, lots: Iterable[Lot]) -> None:
        """Lots already read (a page, a provenance walk): their parents resolve from cache."""
        for lot in lots:
            self.lot.prime(lot.lot_id, lot)

    def prime_organizations(self, orgs: Iterable[Organization]) -> None:
        for org in orgs:
            self.organization.prime(org.org_id, org)

    def prime_sites(self, sites: Iterable[Site]) -> None:
        for site in sites:
            self.site.prime(site.site_id, site)
