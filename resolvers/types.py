"""GraphQL object types. Entities (federation `@key(fields: "id")`): Lot,
Organization, Site. Each type wraps a ledger record; relations resolve through
the per-request DataLoaders. Relations to entities are nullable where absence
is possible (a gateway would otherwise null the whole parent)."""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from collections.abc import Callable
from typing import Annotated, Generic, NewType, TypeVar

import strawberry
from strawberry.dataloader import DataLoader

from ledger import models as m
from ledger.models import ORIGIN_CLASSES

from api.store import RegistryTooLong

from .context import Info
from .errors import PublicError, bad_input

#: A node type built from a ledger record (Lot, Organization, Site, Attestation).
NodeT = TypeVar("NodeT")
RecordT = TypeVar("RecordT")

# --------------------------------------------------------------------------- scalars and enums

UInt64 = NewType("UInt64", int)
#: Registered through StrawberryConfig.scalar_map (see resolvers.schema).
SCALARS = {
    UInt64: strawberry.scalar(
        name="UInt64",
        serialize=str,
        parse_value=int,
        description="An unsigned 64-bit integer, as a decimal string (beyond GraphQL's 32-bit Int).",
    )
}


@strawberry.enum(description="Origin classes (versioned list; a lot carries one commitment per class).")
class OriginClass(Enum):
    industrial = "industrial"
    artisanal = "artisanal"
    recycled_pre_consumer = "recycled_pre_consumer"
    recycled_post_consumer = "recycled_post_consumer"


assert tuple(c.value for c in OriginClass) == ORIGIN_CLASSES

Role = strawberry.enum(
    Enum("Role", {role.name: role.value for role in m.Role}),  # a copy: the ledger stays GraphQL-free
    description="Roles an organisation holds in the network.",
)
ClaimKind = strawberry.enum(
    Enum("ClaimKind", {kind.name: kind.value for kind in m.ClaimKind}),
    description="Kinds of claims verifiable from a disclosure bundle.",
)


def origin_class(value: str | None) -> OriginClass | None:
    return OriginClass(value) if value is not None else None


#: Arguments of a bounded list relation (Site.attestations, Lot.claims, Query.claims).
RelationFirst = Annotated[
    int | None,
    strawberry.argument(description="At most this many items (1 to the server's page limit; default: the limit)."),
]
RelationAfter = Annotated[
    strawberry.ID | None,
    strawberry.argument(description="Only the items after the one with this id (the last id of the previous page)."),
]


def relation_page(info: Info, items: list[RecordT], first: int | None, after: str | None,
                  id_of: Callable[[RecordT], str]) -> list[RecordT]:  # fmt: skip
    """One page of a list relation, in ledger order: the items after the one
    whose id is `after` (none if that id is not in the list), at most `first`
    of them. BAD_USER_INPUT if `first` is outside 1..max_page_size.

    A relation loaded whole by its DataLoader is returned in pages so that a
    query cannot multiply unbounded lists (resolvers.query_budget counts
    `first`); existing clients that pass neither argument get the first page
    of the server's page limit."""
    limit = info.context.settings.limits.max_page_size
    size = limit if first is None else first
    if not 1 <= size <= limit:
        raise bad_input(f"first must be between 1 and {limit} (got {size})")
    start = 0
    if after is not None:
        ids = [id_of(item) for item in items]
        start = ids.index(after) + 1 if after in ids else len(items)
    return items[start : start + size]


async def _load_node(loader: DataLoader, node_type: type[NodeT], record_id: str | None) -> NodeT | None:
    """The node wrapping a record fetched through a per-request loader (batched,
    cached); None when there is no id (an optional relation) or no such record."""
    if record_id is None:
        return None
    record = await loader.load(record_id)
    return node_type.from_record(record) if record else None


# --------------------------------------------------------------------------- organisations


@strawberry.type
class SigningKey:
    key_id: str
    public_key: str = strawberry.field(description="Ed25519 public key, hex.")
    added_at: datetime
    revoked_at: datetime | None


@strawberry.federation.type(keys=["id"], description="A registered organisation (mine, trader, refiner, OEM, ...).")
class Organization:
    id: strawberry.ID
    name: str
    country: str
    roles: list[Role]  # type: ignore[valid-type]
    signing_keys: list[SigningKey]
    sealing_key: str = strawberry.field(description="X25519 public key (hex) openings are sealed to.")
    registered_by_event: strawberry.ID

    @strawberry.field(
        description="Ids of the operator-signed registry events of this organisation (its registration,"
        " key rotations and key revocations), in ledger order, all of them. More than 1,000: the error"
        " REGISTRY_TOO_LONG, never a list cut short. A client that trusts only the root key replays them"
        " to learn the current keys (docs/sdk.md, 'Trusting the server for nothing')."
    )
    async def registry_events(self, info: Info) -> list[strawberry.ID]:
        try:
            ids = await info.context.store.registry_event_ids(str(self.id))
        except RegistryTooLong as exc:
            raise PublicError(str(exc), "REGISTRY_TOO_LONG") from None
        return [strawberry.ID(e) for e in ids]

    @classmethod
    def from_record(cls, org: m.Organization) -> Organization:
        return cls(
            id=strawberry.ID(org.org_id),
            name=org.name,
            country=org.country,
            roles=[Role(r.value) for r in org.roles],
            signing_keys=[
                SigningKey(key_id=k.key_id, public_key=k.public_key, added_at=k.added_at, revoked_at=k.revoked_at)
                for k in org.signing_keys
            ],
            sealing_key=org.sealing_key,
            registered_by_event=strawberry.ID(org.registered_by_event),
        )

    @classmethod
    async def resolve_reference(cls, info: Info, id: strawberry.ID) -> Organization | None:
        return await load_organization(info, id)


async def load_organization(info: Info, org_id: str | None) -> Organization | None:
    return await _load_node(info.context.loaders.organization, Organization, org_id)


# --------------------------------------------------------------------------- sites and attestations


@strawberry.type
class IssuanceMark:
    seq: int = strawberry.field(description="Seq of the latest issuance under the attestation.")
    cumulative: str = strawberry.field(description="Commitment to the cumulative issued amount (hex point).")
    event_id: strawberry.ID


@strawberry.type(description="An auditor's signed statement of a site's origin class and committed capacity.")
class Attestation:
    id: strawberry.ID
    origin_class: OriginClass
    valid_from: datetime
    valid_until: datetime
    capacity_commitment: str
    event_id: strawberry.ID
    revoked_at: datetime | None = strawberry.field(
        description="When its auditor revoked it (no issuance under it is accepted since); null if never."
    )
    auditor_id: strawberry.Private[str]
    site_id: strawberry.Private[str]
    supersedes_id: strawberry.Private[str | None]
    superseded_by_id: strawberry.Private[str | None]

    @classmethod
    def from_record(cls, att: m.Attestation) -> Attestation:
        return cls(
            id=strawberry.ID(att.attestation_id),
            origin_class=OriginClass(att.origin_class),
            valid_from=att.valid_from,
            valid_until=att.valid_until,
            capacity_commitment=att.capacity_commitment,
            event_id=strawberry.ID(att.event_id),
            revoked_at=att.revoked_at,
            auditor_id=att.auditor,
            site_id=att.site_id,
            supersedes_id=att.supersedes,
            superseded_by_id=att.superseded_by,
        )

    @strawberry.field(description="The attestation of the site this one replaced (its issuances count against this capacity).")
    async def supersedes(self, info: Info) -> Attestation | None:
        return await load_attestation(info, self.supersedes_id)

    @strawberry.field(description="The attestation that replaced this one (no issuance under this one is accepted since).")
    async def superseded_by(self, info: Info) -> Attestation | None:
        return await load_attestation(info, self.superseded_by_id)

    @strawberry.field
    async def auditor(self, info: Info) -> Organization | None:
        return await load_organization(info, self.auditor_id)

    @strawberry.field
    async def site(self, info: Info) -> Site | None:
        return await load_site(info, self.site_id)

    @strawberry.field(description="The latest issuance under this attestation (null before the first).")
    async def last_issuance(self, info: Info) -> IssuanceMark | None:
        mark = await info.context.loaders.issuance_mark.load(str(self.id))
        if mark is None:
            return None
        return IssuanceMark(seq=mark.seq, cumulative=mark.cumulative, event_id=strawberry.ID(mark.event_id))


@strawberry.federation.type(keys=["id"], description="A mine or recycling site where material enters the system.")
class Site:
    id: strawberry.ID
    name: str
    country: str
    region: str
    latitude: float
    longitude: float
    origin_class: OriginClass
    operator_id: strawberry.Private[str]

    @classmethod
    def from_record(cls, site: m.Site) -> Site:
        return cls(
            id=strawberry.ID(site.site_id),
            name=site.name,
            country=site.country,
            region=site.region,
            latitude=site.location.lat,
            longitude=site.location.lon,
            origin_class=OriginClass(site.origin_class),
            operator_id=site.operator,
        )

    @strawberry.field
    async def operator(self, info: Info) -> Organization | None:
        return await load_organization(info, self.operator_id)

    @strawberry.field(description="Attestations of this site, oldest first (paged: first, after).")
    async def attestations(self, info: Info, first: RelationFirst = None, after: RelationAfter = None) -> list[Attestation]:
        records = await info.context.loaders.attestations_by_site.load(str(self.id))
        page = relation_page(info, records, first, after, lambda a: a.attestation_id)
        return [Attestation.from_record(a) for a in page]

    @classmethod
    async def resolve_reference(cls, info: Info, id: strawberry.ID) -> Site | None:
        return await load_site(info, id)


async def load_site(info: Info, site_id: str | None) -> Site | None:
    return await _load_node(info.context.loaders.site, Site, site_id)


async def load_attestation(info: Info, attestation_id: str) -> Attestation | None:
    return await _load_node(info.context.loaders.attestation, Attestation, attestation_id)


# --------------------------------------------------------------------------- lots and claims


@strawberry.type
class ClassCommitment:
    origin_class: OriginClass
    commitment: str = strawberry.field(description="Pedersen commitment v*G + r*H (48-byte compressed point, hex).")


@strawberry.type(
    description="A claim about a set of lots (one lot: a set of one), checkable offline from its disclosure bundle."
)
class Claim:
    id: strawberry.ID
    lot_ids: list[strawberry.ID] = strawberry.field(
        description="The claimed lots, strictly ascending (1 to 64): held by the claimant or consumed by it;"
        " share and amount statements are about their sum."
    )
    kind: ClaimKind  # type: ignore[valid-type]
    origin_class: OriginClass | None
    class_set: str | None = strawberry.field(
        description='The class set the claim is about ("recycled" = pre + post consumer), when not one class.'
    )
    p: int | None
    p_max: int | None = strawberry.field(description="share_in_range: numerator of the upper bound (over q).")
    q: int | None
    low: UInt64 | None  # type: ignore[valid-type]
    high: UInt64 | None  # type: ignore[valid-type]
    event_id: strawberry.ID
    created_at: datetime
    owner_id: strawberry.Private[str]

    @classmethod
    def from_record(cls, claim: m.Claim) -> Claim:
        return cls(
            id=strawberry.ID(claim.claim_id),
            lot_ids=[strawberry.ID(i) for i in claim.lot_ids],
            kind=ClaimKind(claim.kind.value),
            origin_class=origin_class(claim.origin_class) if claim.origin_class not in m.CLASS_SETS else None,
            class_set=claim.origin_class if claim.origin_class in m.CLASS_SETS else None,
            p=claim.p,
            p_max=claim.p_max,
            q=claim.q,
            low=claim.low,
            high=claim.high,
            event_id=strawberry.ID(claim.event_id),
            created_at=claim.created_at,
            owner_id=claim.owner,
        )

    @strawberry.field
    async def owner(self, info: Info) -> Organization | None:
        return await load_organization(info, self.owner_id)


@strawberry.federation.type(keys=["id"], description="A lot of cobalt-bearing material with committed per-class amounts.")
class Lot:
    id: strawberry.ID
    product: str
    commitments: list[ClassCommitment]
    origin_class: OriginClass | None = strawberry.field(description="For issued lots: the site's class.")
    consumed: bool
    consumed_by_event: strawberry.ID | None
    custody_seq: int = strawberry.field(description="Number of custody transfers so far.")
    created_at: datetime
    created_by_event: strawberry.ID
    parent_ids: list[strawberry.ID]
    record: strawberry.Private[m.Lot]

    @classmethod
    def from_record(cls, lot: m.Lot) -> Lot:
        return cls(
            id=strawberry.ID(lot.lot_id),
            product=lot.product,
            commitments=[
                ClassCommitment(origin_class=OriginClass(k), commitment=lot.commitments[k]) for k in ORIGIN_CLASSES if k in lot.commitments
            ],
            origin_class=origin_class(lot.origin_class),
            consumed=lot.consumed_by_event is not None,
            consumed_by_event=strawberry.ID(lot.consumed_by_event) if lot.consumed_by_event else None,
            custody_seq=lot.custody_seq,
            created_at=lot.created_at,
            created_by_event=strawberry.ID(lot.created_by_event),
            parent_ids=[strawberry.ID(p) for p in lot.parents],
            record=lot,
        )

    @strawberry.field
    async def owner(self, info: Info) -> Organization | None:
        return await load_organization(info, self.record.owner)

    @strawberry.field(description="Who created the lot: the issuing site's operator or the transformer.")
    async def issuer(self, info: Info) -> Organization | None:
        return await load_organization(info, self.record.issuer)

    @strawberry.field(description="Input lots of the transformation that created this lot.")
    async def parents(self, info: Info) -> list[Lot]:
        records = await info.context.loaders.lot.load_many(self.record.parents)
        return [Lot.from_record(r) for r in records if r is not None]

    @strawberry.field(description="For issued lots: the issuing site.")
    async def site(self, info: Info) -> Site | None:
        return await load_site(info, self.record.site_id)

    @strawberry.field(description="Claims whose set contains this lot, oldest first (paged: first, after).")
    async def claims(self, info: Info, first: RelationFirst = None, after: RelationAfter = None) -> list[Claim]:
        return await claims_of(info, self.record.lot_id, first, after)

    @classmethod
    async def resolve_reference(cls, info: Info, id: strawberry.ID) -> Lot | None:
        return await load_lot(info, id)


async def claims_of(info: Info, lot_id: str, first: int | None, after: str | None) -> list[Claim]:
    """A page of the claims whose set contains the lot (see relation_page)."""
    records = await info.context.loaders.claims_by_lot.load(lot_id)
    return [Claim.from_record(c) for c in relation_page(info, records, first, after, lambda c: c.claim_id)]


async def load_lot(info: Info, lot_id: str) -> Lot | None:
    return await _load_node(info.context.loaders.lot, Lot, lot_id)


# --------------------------------------------------------------------------- provenance, openings, results


@strawberry.type
class ProvenanceEdge:
    parent: strawberry.ID
    child: strawberry.ID


@strawberry.type(description="The ancestry DAG of a lot, breadth-first up to maxDepth levels.")
class Provenance:
    root: Lot
    nodes: list[Lot] = strawberry.field(
        description="The root first, then its ancestors level by level (at most the server's provenance node limit)."
    )
    edges: list[ProvenanceEdge] = strawberry.field(description="parent -> child, both in nodes.")
    truncated: bool = strawberry.field(
        description="True when some ancestors lie deeper than maxDepth, or beyond the node limit."
    )
    depth: int = strawberry.field(description="Levels of ancestors fetched.")


@strawberry.type(description="Lot openings sealed to one organisation (ciphertext only).")
class SealedOpening:
    recipient: strawberry.ID
    lot_ids: list[strawberry.ID]
    ciphertext: str = strawberry.field(description="libsodium sealed box, base64.")
    event_id: strawberry.ID

    @classmethod
    def from_record(cls, r) -> SealedOpening:
        return cls(
            recipient=strawberry.ID(r.recipient),
            lot_ids=[strawberry.ID(x) for x in r.lot_ids],
            ciphertext=r.ciphertext,
            event_id=strawberry.ID(r.event_id),
        )


@strawberry.type(description="An accepted publication.")
class PublishResult:
    event_id: strawberry.ID
    type: str
    lot_ids: list[strawberry.ID] = strawberry.field(description="Lots created by the event (issue, transform).")
    claim_id: strawberry.ID | None
    attestation_id: strawberry.ID | None
    log_index: int | None = strawberry.field(
        default=None, description="The event's leaf index in the transparency log (never changes)."
    )


# --------------------------------------------------------------------------- connections

N = TypeVar("N")


@strawberry.type
class PageInfo:
    has_next_page: bool
    end_cursor: str | None


@strawberry.type
class Edge(Generic[N]):
    cursor: str
    node: N


@strawberry.type
class Connection(Generic[N]):
    edges: list[Edge[N]]
    page_info: PageInfo

    @classmethod
    def build(cls, nodes: list[N], cursors: list[str], has_next: bool) -> Connection[N]:
        return cls(
            edges=[Edge(cursor=c, node=n) for c, n in zip(cursors, nodes, strict=True)],
            page_info=PageInfo(has_next_page=has_next, end_cursor=cursors[-1] if cursors else None),
        )
