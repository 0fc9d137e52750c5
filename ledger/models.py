"""The domain model: who may publish what, and what the ledger remembers.

Two kinds of models live here:

* **Payloads** are what publishers sign (inside an `Envelope`). They carry
  commitments and proofs as hex strings; the rules decode them strictly.
  Payload models forbid unknown fields, so a signature never covers data the
  server would silently drop.
* **Records** are the ledger state derived from accepted payloads (lots,
  organisations, sites, attestations, claims). The API stores them; the rules
  read them through a `LedgerView`.

Amounts are integer grams of *contained cobalt* (not gross mass), in
[0, 2^64). They never appear here in plaintext: only Pedersen commitments and
sealed openings (ciphertext readable by one organisation) do.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import Enum
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainSerializer

#: Versioned, fixed list of origin classes (protocol v2). A lot carries one commitment
#: per class; the version and order are bound in every proof context. Recycled
#: cobalt is split as EU 2023/1542 Art. 8 and the battery passport report it:
#: pre-consumer (manufacturing waste) and post-consumer (end-of-life products).
ORIGIN_CLASSES_VERSION = 2
ORIGIN_CLASSES: tuple[str, ...] = ("industrial", "artisanal", "recycled_pre_consumer", "recycled_post_consumer")

OriginClass = Literal["industrial", "artisanal", "recycled_pre_consumer", "recycled_post_consumer"]
#: Named sets of origin classes a claim may be about ("recycled" = pre + post consumer).
CLASS_SETS: dict[str, tuple[str, ...]] = {"recycled": ("recycled_pre_consumer", "recycled_post_consumer")}
ClassSet = Literal["recycled"]

Process = Literal["refine", "split", "merge", "convert"]
#: Protocol v2 loss caps: a transformation of this process may lose, in every
#: origin class k, at most p/q of that class's input (q*L_k <= p*In_k). Part of
#: the network policy of every v2 network, bound in every transformation proof
#: context; see docs/protocol.md "Loss cap" for the figures and why they are
#: protocol constants rather than per-site attestations.
LOSS_CAPS: dict[str, tuple[int, int]] = {
    "refine": (10, 100),
    "convert": (5, 100),
    "merge": (2, 100),
    "split": (2, 100),
}
#: Integers in signed JSON stay within I-JSON's exact range: RFC 8785 refuses
#: larger ones, so they could never be signed. 2^53 - 1 g is 9 billion tonnes.
JSON_SAFE_MAX = 2**53 - 1
PointHex = Annotated[str, Field(pattern=r"^[0-9a-f]{96}$", description="48-byte compressed G1 point, hex")]
KeyHex = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$", description="32-byte public key, hex")]
ProofHex = Annotated[str, Field(pattern=r"^([0-9a-f]{2})+$", max_length=64_000)]
Sealed = Annotated[str, Field(min_length=1, max_length=200_000, description="libsodium sealed box, base64")]
Ident = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]
Country = Annotated[str, Field(pattern=r"^[A-Z]{2}$", description="ISO 3166-1 alpha-2")]
Text = Annotated[str, Field(max_length=200)]


def timestamp_text(ts: datetime) -> str:
    """The one spelling of a signed timestamp: UTC, whole seconds, "YYYY-MM-DDTHH:MM:SSZ"."""
    if ts.tzinfo is None:
        raise ValueError("timestamps must carry a time zone")
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _utc_whole_seconds(ts: datetime) -> datetime:
    if ts.tzinfo is None:
        raise ValueError("timestamps must carry a time zone (write them as YYYY-MM-DDTHH:MM:SSZ)")
    return ts.astimezone(UTC).replace(microsecond=0)


#: A signed instant. Built leniently (any aware datetime; converted to UTC, the
#: fraction of a second dropped), serialised as "YYYY-MM-DDTHH:MM:SSZ"; a received
#: envelope spelling it any other way fails `parse_envelope`'s round trip.
Timestamp = Annotated[datetime, AfterValidator(_utc_whole_seconds), PlainSerializer(timestamp_text, when_used="json")]


class Role(str, Enum):
    operator = "operator"
    auditor = "auditor"
    mine = "mine"
    trader = "trader"
    refiner = "refiner"
    cathode = "cathode"
    cell = "cell"
    recycler = "recycler"
    oem = "oem"


#: Roles that may hold custody of lots.
CUSTODIAN_ROLES = frozenset({Role.mine, Role.trader, Role.refiner, Role.cathode, Role.cell, Role.recycler, Role.oem})
#: Roles that may operate an issuing site (material enters the system there).
ISSUER_ROLES = frozenset({Role.mine, Role.recycler})
#: Roles that may transform (refine, split, merge, convert) lots.
TRANSFORMER_ROLES = frozenset({Role.trader, Role.refiner, Role.cathode, Role.cell, Role.recycler})


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------- payloads


class KeyEntry(Strict):
    key_id: Ident
    public_key: KeyHex


class RegisterOrganization(Strict):
    """Operator-signed registry entry: an organisation, its roles and keys."""

    type: Literal["register_organization"] = "register_organization"
    org_id: Ident
    name: Text
    country: Country
    roles: list[Role] = Field(min_length=1, max_length=4)
    signing_keys: list[KeyEntry] = Field(min_length=1, max_length=8)
    sealing_key: KeyHex


class RotateKey(Strict):
    """Operator-signed: add a signing key (and optionally replace the sealing key)."""

    type: Literal["rotate_key"] = "rotate_key"
    org_id: Ident
    new_key: KeyEntry
    sealing_key: KeyHex | None = None


class RevokeKey(Strict):
    """Operator-signed: the key publishes nothing more (whatever an envelope's own date), and
    envelopes by it dated at or after the revocation are invalid wherever a bundle lists them."""

    type: Literal["revoke_key"] = "revoke_key"
    org_id: Ident
    key_id: Ident
    reason: Text = ""


class Location(Strict):
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)


class SiteInfo(Strict):
    site_id: Ident
    operator: Ident  # org_id of the organisation running the site
    name: Text
    country: Country
    region: Text
    location: Location
    origin_class: OriginClass


class AttestSite(Strict):
    """Auditor-signed: the site's origin class and its committed capacity for a period.

    The capacity opening is sealed to the site operator, who needs it to prove
    every issuance stays within capacity. The attestation id is derived from the
    envelope (see `ledger.encoding.derive_id`, prefix "att").

    A site has one capacity chain per period: an attestation whose period
    overlaps that of a live attestation of the site (one not yet superseded) is
    refused (ATTESTATION_OVERLAP) unless it names it in `supersedes`. A
    superseding attestation replaces it: its capacity bounds the whole
    period's issuance (the predecessor's cumulative carries over), and its
    site description, origin class included, becomes the site's.
    """

    type: Literal["attest_site"] = "attest_site"
    site: SiteInfo
    valid_from: Timestamp
    valid_until: Timestamp
    capacity_commitment: PointHex
    capacity_opening_sealed: Sealed
    supersedes: Ident | None = None


class RevokeAttestation(Strict):
    """Signed by the auditor who made the attestation: no issuance under it is accepted any more.

    The issuances before it stand (they were audited); the period can be
    re-attested by an attestation that supersedes the revoked one.
    """

    type: Literal["revoke_attestation"] = "revoke_attestation"
    site_id: Ident
    attestation_id: Ident
    reason: Text = ""


class Issue(Strict):
    """Site operator: material enters the system as a new lot of the site's class.

    `seq` numbers the issuances under one attestation (0, 1, 2, ...) and
    `cumulative` is the sum of their commitments including this one; the
    capacity proof shows capacity - cumulative is in [0, 2^64).
    The new lot id is derive_id("lot", network, signer, nonce, 0).
    """

    type: Literal["issue"] = "issue"
    site_id: Ident
    attestation_id: Ident
    commitment: PointHex
    seq: int = Field(ge=0, le=JSON_SAFE_MAX)
    cumulative: PointHex
    range_proof: ProofHex
    capacity_proof: ProofHex
    product: Text
    opening_sealed_to_owner: Sealed


class Transfer(Strict):
    """Current owner: custody of an unconsumed lot moves to another organisation."""

    type: Literal["transfer"] = "transfer"
    lot_id: Ident
    to: Ident
    opening_sealed_to_receiver: Sealed


class OutputLot(Strict):
    commitments: dict[OriginClass, PointHex]
    product: Text


class Transform(Strict):
    """Owner: consume input lots, create output lots, with per-class mass balance.

    For every class k: sum(in C_k) - sum(out C_k) - loss_k = rho_k * H, shown by
    `balance_proof` (one ZeroProof over the classes in ORIGIN_CLASSES order), and
    every output and loss amount is in [0, 2^64), shown by one aggregated
    `range_proof` over (output 0 classes..., output 1 classes..., loss classes...),
    and for every class k the loss is within the process's cap,
    q*L_k <= p*In_k with (p, q) = LOSS_CAPS[process], shown by one aggregated
    `loss_cap_proof` over p*In_k - q*L_k (ORIGIN_CLASSES order).
    Output lot i has id derive_id("lot", network, signer, nonce, i).
    """

    type: Literal["transform"] = "transform"
    process: Process
    inputs: list[Ident] = Field(min_length=1, max_length=32)
    outputs: list[OutputLot] = Field(min_length=1, max_length=20)
    loss: dict[OriginClass, PointHex]
    balance_proof: ProofHex
    range_proof: ProofHex
    loss_cap_proof: ProofHex
    openings_sealed_to_owner: Sealed


class ClaimKind(str, Enum):
    ancestry_excludes = "ancestry_excludes"
    share_at_most = "share_at_most"
    share_at_least = "share_at_least"
    share_in_range = "share_in_range"
    amount_in_range = "amount_in_range"


#: The ISO 22095:2020 chain-of-custody model each claim kind implements (docs/protocol.md, "Claims v2").
CLAIM_MODELS: dict[ClaimKind, str] = {
    ClaimKind.ancestry_excludes: "segregation",  # no input of the excluded class anywhere upstream
    ClaimKind.share_at_most: "mass balance",  # class shares as allocated by balanced, loss-capped transformations
    ClaimKind.share_at_least: "mass balance",
    ClaimKind.share_in_range: "mass balance",
    ClaimKind.amount_in_range: "none (a quantity of the lots, independent of the model)",
}


#: At most this many lots in one claim (an aggregate over a set of lots).
MAX_CLAIM_LOTS = 64


class PublishClaim(Strict):
    """A claim about a set of lots the signer holds or consumed, checkable by anyone
    from a disclosure bundle (docs/protocol.md, "Aggregate claims").

    `lot_ids` is the set, 1 to MAX_CLAIM_LOTS ids in strictly ascending order
    (sorted, no duplicates; else MALFORMED); a single-lot claim is the set of
    one. Every lot must be currently held by the signer or consumed by a
    transformation the signer published (NOT_OWNER otherwise), and no lot of
    the set may be an ancestor of another (OVERLAPPING_LOTS: its cobalt would
    count twice). The statements below are about the aggregate: per origin
    class k, v_k = the sum over the set of the lots' class-k amounts (the
    commitments add).

    `origin_class` is one class or a class set of CLASS_SETS ("recycled" =
    pre- + post-consumer); v_S below is the aggregate amount in those classes.
    ancestry_excludes(origin_class): no proof; follows from the verified DAG
      (no lot of the set has an ancestor issued at a site of that class).
    share_at_most / share_at_least(origin_class, p, q): q*v_S <= / >= p*sum(v).
    share_in_range(origin_class, p, p_max, q): p*sum(v) <= q*v_S <= p_max*sum(v)
      (q = 1000 gives bounds to 0.1 percentage point).
    amount_in_range(low, high): low <= sum(v) <= high (grams of contained cobalt).
    The claim id is derive_id("clm", network, signer, nonce, 0).
    """

    type: Literal["publish_claim"] = "publish_claim"
    lot_ids: list[Ident] = Field(min_length=1, max_length=MAX_CLAIM_LOTS)
    kind: ClaimKind
    origin_class: OriginClass | ClassSet | None = None
    p: int | None = Field(default=None, ge=0, lt=2**16)
    p_max: int | None = Field(default=None, ge=0, lt=2**16)
    q: int | None = Field(default=None, gt=0, lt=2**16)
    low: int | None = Field(default=None, ge=0, le=JSON_SAFE_MAX)
    high: int | None = Field(default=None, ge=0, le=JSON_SAFE_MAX)
    proof: ProofHex | None = None


class RegisterLogKey(Strict):
    """Operator-signed: a key that signs the log's checkpoints (docs/log.md, "Log keys").

    `origin` is the checkpoint origin line (C2SP tlog-checkpoint) the key signs
    for and its signed-note key name; `public_key` the 32-byte Ed25519 key
    (signature type 0x01). Rotation: register the new key; the old one stays
    valid for the checkpoints it signed unless a registration lists it in
    `retire` (a compromised key), after which no checkpoint it signed is accepted.
    """

    type: Literal["register_log_key"] = "register_log_key"
    origin: str = Field(pattern=r"^[A-Za-z0-9_.:/-]{1,128}$")
    public_key: KeyHex
    retire: list[KeyHex] = Field(default_factory=list, max_length=8)


Payload = Annotated[
    RegisterOrganization
    | RotateKey
    | RevokeKey
    | AttestSite
    | RevokeAttestation
    | Issue
    | Transfer
    | Transform
    | PublishClaim
    | RegisterLogKey,
    Field(discriminator="type"),
]


# --------------------------------------------------------------------------- records


class SigningKeyRecord(Strict):
    key_id: str
    public_key: str
    added_at: datetime
    revoked_at: datetime | None = None


class Organization(Strict):
    org_id: str
    name: str
    country: str
    roles: list[Role]
    signing_keys: list[SigningKeyRecord]
    sealing_key: str
    registered_by_event: str


class Site(Strict):
    site_id: str
    operator: str
    name: str
    country: str
    region: str
    location: Location
    origin_class: str


class Attestation(Strict):
    attestation_id: str
    site_id: str
    auditor: str
    origin_class: str
    valid_from: datetime
    valid_until: datetime
    capacity_commitment: str
    event_id: str
    supersedes: str | None = None
    superseded_by: str | None = None
    revoked_at: datetime | None = None
    revoked_by_event: str | None = None


class IssuanceMark(Strict):
    """The latest issuance under an attestation: what the next one chains onto.

    A superseding attestation starts with the mark of its predecessor's chain
    (seq -1, the predecessor's cumulative), so its first issuance is seq 0 and
    the period's total keeps counting.
    """

    attestation_id: str
    seq: int
    cumulative: str
    event_id: str


class Lot(Strict):
    lot_id: str
    owner: str
    issuer: str  # who created it (issuing site operator or transformer)
    commitments: dict[str, str]  # origin class -> point hex; a missing class commits to 0
    product: str
    created_by_event: str
    created_at: datetime
    parents: list[str] = []  # input lots of the transformation that created it
    site_id: str | None = None  # for issued lots
    origin_class: str | None = None  # for issued lots
    consumed_by_event: str | None = None
    custody_seq: int = 0  # number of transfers so far


class Claim(Strict):
    claim_id: str
    lot_ids: list[str]  # the claimed set, strictly ascending
    owner: str
    kind: ClaimKind
    origin_class: str | None = None
    p: int | None = None
    q: int | None = None
    low: int | None = None
    high: int | None = None
    event_id: str
    created_at: datetime
    p_max: int | None = None
