"""Query resolvers: argument checks, then one call into the store / loaders."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import strawberry
from strawberry.scalars import JSON

from api.store import Page
from ledger.errors import Rejection

from .context import Info
from .log import log_member_or_error
from .errors import bad_input, from_rejection
from .types import (
    Attestation,
    Claim,
    Connection,
    Lot,
    Organization,
    OriginClass,
    Provenance,
    ProvenanceEdge,
    RelationAfter,
    RelationFirst,
    SealedOpening,
    Site,
    claims_of,
    load_attestation,
    load_lot,
    load_organization,
    load_site,
)

from .query_budget import DEFAULT_PAGE


def _page_size(info: Info, first: int) -> int:
    limit = info.context.settings.limits.max_page_size
    if not 1 <= first <= limit:
        raise bad_input(f"first must be between 1 and {limit} (got {first})")
    return first


async def _connection(
    info: Info,
    list_page: Callable[..., Awaitable[Page]],
    prime: Callable[[list[Any]], None] | None,
    node: type[Lot] | type[Organization] | type[Site] | type[SealedOpening],
    first: int,
    after: str | None,
    **filters: Any,
) -> Connection:
    """One page of a store listing as a Connection. The page's records prime
    the loaders, so the nodes' relations resolve without refetching them."""
    try:
        page = await list_page(first=_page_size(info, first), after=after, **filters)
    except ValueError:  # a malformed `after` cursor: named, never echoed back (it may be a megabyte)
        raise bad_input("after: not a cursor of this connection (pass a pageInfo.endCursor)") from None
    if prime is not None:
        prime(page.items)
    return Connection.build([node.from_record(r) for r in page.items], page.cursors, page.has_next)


def _class_value(origin_class: OriginClass | None) -> str | None:
    return origin_class.value if origin_class else None


@strawberry.type
class Query:
    @strawberry.field(description="A lot by id (null if unknown).")
    async def lot(self, info: Info, id: strawberry.ID) -> Lot | None:
        return await load_lot(info, id)

    @strawberry.field(description="Lots sorted by id, with cursor pagination and filters.")
    async def lots(
        self,
        info: Info,
        first: int = DEFAULT_PAGE,
        after: str | None = None,
        owner: strawberry.ID | None = None,
        origin_class: Annotated[
            OriginClass | None, strawberry.argument(description="Issued lots of this class.")
        ] = None,
        consumed: bool | None = None,
    ) -> Connection[Lot]:
        return await _connection(
            info,
            info.context.store.list_lots,
            info.context.loaders.prime_lots,
            Lot,
            first,
            after,
            owner=owner,
            origin_class=_class_value(origin_class),
            consumed=consumed,
        )

    @strawberry.field
    async def organization(self, info: Info, id: strawberry.ID) -> Organization | None:
        return await load_organization(info, id)

    @strawberry.field
    async def organizations(
        self, info: Info, first: int = DEFAULT_PAGE, after: str | None = None
    ) -> Connection[Organization]:
        return await _connection(
            info, info.context.store.list_organizations, info.context.loaders.prime_organizations, Organization, first, after
        )

    @strawberry.field
    async def site(self, info: Info, id: strawberry.ID) -> Site | None:
        return await load_site(info, id)

    @strawberry.field
    async def sites(
        self,
        info: Info,
        first: int = DEFAULT_PAGE,
        after: str | None = None,
        origin_class: OriginClass | None = None,
    ) -> Connection[Site]:
        return await _connection(
            info,
            info.context.store.list_sites,
            info.context.loaders.prime_sites,
            Site,
            first,
            after,
            origin_class=_class_value(origin_class),
        )

    @strawberry.field
    async def attestation(self, info: Info, id: strawberry.ID) -> Attestation | None:
        return await load_attestation(info, id)

    @strawberry.field(
        description="The ancestry DAG of a lot (one database round trip per level). "
        "maxDepth defaults to the server's limit."
    )
    async def provenance(self, info: Info, lot_id: strawberry.ID, max_depth: int | None = None) -> Provenance | None:
        limit = info.context.settings.limits.max_provenance_depth
        depth = limit if max_depth is None else max_depth
        if not 0 <= depth <= limit:
            raise bad_input(f"maxDepth must be between 0 and {limit} (got {depth})")
        graph = await info.context.store.provenance(lot_id, depth)
        if graph is None:
            return None
        # the first max_provenance_nodes lots breadth-first (the cost budget counts that many)
        kept = graph.nodes[: info.context.settings.limits.max_provenance_nodes]
        kept_ids = {n.lot_id for n in kept}
        info.context.loaders.prime_lots(kept)
        nodes = [Lot.from_record(n) for n in kept]
        return Provenance(
            root=nodes[0],
            nodes=nodes,
            edges=[
                ProvenanceEdge(parent=strawberry.ID(p), child=strawberry.ID(c))
                for p, c in graph.edges
                if p in kept_ids and c in kept_ids
            ],
            truncated=graph.truncated or len(kept) < len(graph.nodes),
            depth=graph.depth,
        )

    @strawberry.field(
        description="Claims whose set of lots contains this lot (single-lot and aggregate claims), "
        "oldest first (paged: first, after)."
    )
    async def claims(
        self, info: Info, lot_id: strawberry.ID, first: RelationFirst = None, after: RelationAfter = None
    ) -> list[Claim]:
        return await claims_of(info, lot_id, first, after)

    @strawberry.field(
        description="A self-contained disclosure bundle for a claim (over one lot or a set): verify it "
        "offline with the network's root public key (`oretrace verify`). The lots come from the claim; "
        "`lotId`, if given, must be one of them (INVALID_CLAIM otherwise)."
    )
    async def disclosure_bundle(
        self, info: Info, claim_id: strawberry.ID, lot_id: strawberry.ID | None = None
    ) -> JSON | None:
        from ledger.bundle import assemble

        try:
            events = await info.context.store.bundle_events(claim_id, lot_id)
        except Rejection as rejection:
            raise from_rejection(rejection) from None
        # packing (and serialising) every event of a whole ancestry is CPU work: off the event loop
        bundle = await asyncio.to_thread(assemble, events, claim_id, info.context.settings.network)
        member = await log_member_or_error(info, bundle["events"])
        if member is not None:
            bundle["log"] = member
        return bundle

    @strawberry.field(description="Openings sealed to an organisation (ciphertext only), oldest first.")
    async def sealed_openings(
        self, info: Info, recipient: strawberry.ID, first: int = DEFAULT_PAGE, after: str | None = None
    ) -> Connection[SealedOpening]:
        return await _connection(
            info, info.context.store.list_sealed_openings, None, SealedOpening, first, after, recipient=recipient
        )

    @strawberry.field(description="An accepted event: {id, seq, type, signer, lotIds, acceptedAt, envelope}.")
    async def event(self, info: Info, id: strawberry.ID) -> JSON | None:
        record = await info.context.store.event(id)
        return record.to_json() if record else None
