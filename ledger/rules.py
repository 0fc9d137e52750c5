"""The validation rules: what makes a signed publication acceptable.

`apply(envelope, view, policy, proofs)` is a pure function. It either raises a
`Rejection` (code + a message naming the rule and the field) and nothing
happens, or returns the `Effects` the store writes in one transaction. The
server runs it against a snapshot prefetched for `references(envelope)`; an
offline verifier runs the very same function over the events of a disclosure
bundle (see `ledger.bundle`). Range proofs go to the `proofs` sink (verified
at once, or batched); sigma proofs are verified immediately.

Concurrency is not this module's business: every rule emits the guards
(unique keys) that make a race lose at commit time.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from crypto.bulletproofs import MAX_AGGREGATION, RangeStatement
from crypto.claims import (
    in_range_batch_statement,
    nonnegative_batch_statement,
    share_batch_statement,
    share_in_range_batch_statement,
)
from crypto.errors import ProofError
from crypto.group import Point
from crypto.transcript import Transcript

from . import statements as st
from .effects import CustodyMove, Effects, Guard, SealedOpening
from .envelope import Envelope, signature_is_valid
from .errors import Code, Rejection
from .models import (
    CUSTODIAN_ROLES,
    ISSUER_ROLES,
    LOSS_CAPS,
    TRANSFORMER_ROLES,
    Attestation,
    AttestSite,
    Claim,
    ClaimKind,
    IssuanceMark,
    Issue,
    Lot,
    Organization,
    PublishClaim,
    RegisterLogKey,
    RegisterOrganization,
    RevokeAttestation,
    RevokeKey,
    Role,
    RotateKey,
    SigningKeyRecord,
    Site,
    Transfer,
    Transform,
)
from .proofs import ProofSink, decode_point, decode_range_proof, decode_zero_proof
from .view import OPERATOR, LedgerView, References

ROOT_KEY_ID = "root"
DEFAULT_CLOCK_SKEW = timedelta(minutes=5)

#: Which origin classes a site may have, by the issuing role of its operator.
SITE_CLASSES_BY_ROLE: dict[Role, frozenset[str]] = {
    Role.mine: frozenset({"industrial", "artisanal"}),
    Role.recycler: frozenset({"recycled_pre_consumer", "recycled_post_consumer"}),
}


@dataclass(frozen=True)
class Policy:
    """What the rules need from outside the ledger.

    Online, `now` is the server clock and envelopes dated further than
    `max_clock_skew` (default 5 minutes) from it are refused, which bounds how
    far a stolen key can back-date. Offline (`now=None`) freshness is skipped:
    a bundle is replayed long after the fact.
    """

    network: str
    root_public_key: str
    now: datetime | None = None
    max_clock_skew: timedelta | None = None


# --------------------------------------------------------------------------- entry points


def references(envelope: Envelope) -> References:
    """The ids `apply` will look up for this envelope, for the store to prefetch."""
    p = envelope.payload
    refs = References(organizations={envelope.signer})
    match p:
        case RegisterOrganization() | RotateKey() | RevokeKey():
            refs.organizations.add(p.org_id)
        case AttestSite():
            refs.organizations.add(p.site.operator)
            refs.sites.add(p.site.site_id)
            refs.site_attestations.add(p.site.site_id)  # and their issuance marks
            if p.supersedes is not None:  # possibly (wrongly) of another site
                refs.attestations.add(p.supersedes)
        case RevokeAttestation():
            refs.sites.add(p.site_id)
            refs.site_attestations.add(p.site_id)
            refs.attestations.add(p.attestation_id)  # possibly (wrongly) of another site
        case Issue():
            refs.sites.add(p.site_id)
            refs.attestations.add(p.attestation_id)  # and its issuance mark
        case Transfer():
            refs.organizations.add(p.to)
            refs.lots.add(p.lot_id)
        case Transform():
            refs.lots.update(p.inputs)
        case PublishClaim():
            refs.lots.update(p.lot_ids)
            if p.kind is ClaimKind.ancestry_excludes or len(p.lot_ids) > 1:  # exclusion / no-overlap walks
                refs.ancestry.update(p.lot_ids)
    return refs


def apply(envelope: Envelope, view: LedgerView, policy: Policy, proofs: ProofSink) -> Effects:
    """Validate one publication; its Effects, or Rejection. Never writes anything."""
    signer_org = _authenticate(envelope, view, policy)
    rule = _RULES[type(envelope.payload)]
    effects = rule(envelope, envelope.payload, signer_org, view, proofs)
    effects.guards.insert(0, Guard("nonce", f"{envelope.signer}:{envelope.nonce}", "nonce already used"))
    return effects


def ancestry(view: LedgerView, lot_ids: str | Sequence[str]) -> list[Lot]:
    """The lots `lot_ids` (one id or several) and every lot upstream of them, each once,
    breadth-first; LOT_NOT_FOUND if any is missing."""
    roots = [lot_ids] if isinstance(lot_ids, str) else list(lot_ids)
    found: dict[str, Lot] = {}
    queue = deque((lot_id, lot_id) for lot_id in roots)  # (lot, the root it is upstream of)
    while queue:
        current, root = queue.popleft()
        if current in found:
            continue
        lot = view.lot(current)
        if lot is None:
            where = "" if current == root else f" (an ancestor of {root})"
            raise Rejection(Code.LOT_NOT_FOUND, f"lot {current}{where} is not in the ledger")
        found[current] = lot
        queue.extend((parent, root) for parent in lot.parents)
    return list(found.values())


# --------------------------------------------------------------------------- common checks


def _authenticate(envelope: Envelope, view: LedgerView, policy: Policy) -> Organization | None:
    """Network, freshness, signer, key and signature. The signer's Organization (None for the operator)."""
    if envelope.network != policy.network:
        raise Rejection(
            Code.WRONG_NETWORK, f"envelope is for network {envelope.network!r}, this ledger is {policy.network!r}"
        )
    _require_aware("timestamp", envelope.timestamp)
    if policy.now is not None:
        skew = DEFAULT_CLOCK_SKEW if policy.max_clock_skew is None else policy.max_clock_skew
        if abs(envelope.timestamp - policy.now) > skew:
            raise Rejection(
                Code.STALE_TIMESTAMP,
                f"timestamp {envelope.timestamp.isoformat()} is more than {skew} away from the server clock",
            )
    if envelope.signer == OPERATOR:
        if envelope.key_id != ROOT_KEY_ID:
            raise Rejection(Code.UNKNOWN_KEY, f"the operator signs with key {ROOT_KEY_ID!r} only")
        org, public_key = None, policy.root_public_key
    else:
        org = view.organization(envelope.signer)
        if org is None:
            raise Rejection(Code.UNKNOWN_SIGNER, f"organisation {envelope.signer} is not registered")
        key = _signing_key(org, envelope.key_id)
        if key is None:
            raise Rejection(Code.UNKNOWN_KEY, f"{org.org_id} has no key {envelope.key_id!r}")
        if key.revoked_at is not None:
            # whatever the envelope's own date: a key revoked in the ledger publishes nothing
            # more (a stolen key could otherwise back-date within the clock skew and land after
            # its revocation; a replay refuses what is listed after it the same way)
            raise Rejection(
                Code.REVOKED_KEY, f"key {key.key_id!r} of {org.org_id} was revoked at {key.revoked_at.isoformat()}"
            )
        public_key = key.public_key
    if not signature_is_valid(envelope, public_key):
        raise Rejection(
            Code.BAD_SIGNATURE, f"signature does not verify under key {envelope.key_id!r} of {envelope.signer}"
        )
    return org


def _signing_key(org: Organization, key_id: str) -> SigningKeyRecord | None:
    return next((k for k in org.signing_keys if k.key_id == key_id), None)


def _require_aware(field_name: str, value: datetime) -> None:
    if value.tzinfo is None:
        raise Rejection(Code.MALFORMED, f"{field_name}: must carry a time zone")


def _require_operator(envelope: Envelope, action: str) -> None:
    if envelope.signer != OPERATOR:
        raise Rejection(Code.WRONG_ROLE, f"only the network operator may {action}")


def _require_role(org: Organization | None, roles: frozenset[Role], action: str) -> Organization:
    if org is None or not roles.intersection(org.roles):
        who = OPERATOR if org is None else org.org_id
        needed = ", ".join(sorted(r.value for r in roles))
        raise Rejection(Code.WRONG_ROLE, f"{who} may not {action}: that needs one of the roles {needed}")
    return org


def _require_org(view: LedgerView, org_id: str) -> Organization:
    org = view.organization(org_id)
    if org is None:
        raise Rejection(Code.UNKNOWN_ORGANIZATION, f"organisation {org_id} is not registered")
    return org


def _require_own_unconsumed_lot(view: LedgerView, lot_id: str, signer: str) -> Lot:
    lot = view.lot(lot_id)
    if lot is None:
        raise Rejection(Code.LOT_NOT_FOUND, f"lot {lot_id} does not exist")
    if lot.owner != signer:
        raise Rejection(Code.NOT_OWNER, f"lot {lot_id} is held by {lot.owner}, not {signer}")
    if lot.consumed_by_event is not None:
        raise Rejection(Code.LOT_CONSUMED, f"lot {lot_id} was already consumed by {lot.consumed_by_event}")
    return lot


def _check_amounts_in_range(
    proofs: ProofSink, transcript: Transcript, amounts: Sequence[Point], range_proof: str, meaning: str
) -> None:
    """The payload's `range_proof`: every committed amount a lot-creating event introduces is in [0, 2^64)."""
    statement = RangeStatement(transcript, tuple(amounts), decode_range_proof("range_proof", range_proof), st.RANGE_BITS)
    proofs.check_range("range proof", statement, meaning)


def _created_lot(
    env: Envelope, creator: Organization, lot_id: str, commitments: dict[str, str], product: str, **origin: Any
) -> Lot:
    """A lot created by `env`: its signer both issues and holds it (`origin`: site or parents)."""
    return Lot(
        lot_id=lot_id,
        owner=creator.org_id,
        issuer=creator.org_id,
        commitments=commitments,
        product=product,
        created_by_event=env.event_id,
        created_at=env.timestamp,
        **origin,
    )


def _lot_points(lot: Lot) -> dict[str, Point]:
    return {
        k: decode_point(f"lot {lot.lot_id} commitment {k}", c, allow_identity=True) for k, c in lot.commitments.items()
    }


# --------------------------------------------------------------------------- registry


def _register_organization(env: Envelope, p: RegisterOrganization, _org, view: LedgerView, _proofs) -> Effects:
    _require_operator(env, "register organisations")
    if p.org_id == OPERATOR or view.organization(p.org_id) is not None:
        raise Rejection(Code.ALREADY_EXISTS, f"organisation {p.org_id} already exists")
    if Role.operator in p.roles:
        raise Rejection(Code.WRONG_ROLE, "the operator role belongs to the root key and cannot be granted")
    if len(set(p.roles)) != len(p.roles):
        raise Rejection(Code.MALFORMED, "roles: listed twice")
    key_ids = [k.key_id for k in p.signing_keys]
    if len(set(key_ids)) != len(key_ids):
        raise Rejection(Code.MALFORMED, "signing_keys: a key id is listed twice")
    org = Organization(
        org_id=p.org_id,
        name=p.name,
        country=p.country,
        roles=p.roles,
        signing_keys=[
            SigningKeyRecord(key_id=k.key_id, public_key=k.public_key, added_at=env.timestamp) for k in p.signing_keys
        ],
        sealing_key=p.sealing_key,
        registered_by_event=env.event_id,
    )
    return Effects(env, p.type, organizations=[org])


def _rotate_key(env: Envelope, p: RotateKey, _org, view: LedgerView, _proofs) -> Effects:
    _require_operator(env, "add keys")
    org = _require_org(view, p.org_id)
    if _signing_key(org, p.new_key.key_id) is not None:
        raise Rejection(Code.ALREADY_EXISTS, f"{org.org_id} already has a key {p.new_key.key_id!r}")
    new_key = SigningKeyRecord(key_id=p.new_key.key_id, public_key=p.new_key.public_key, added_at=env.timestamp)
    updated = org.model_copy(
        update={"signing_keys": [*org.signing_keys, new_key], "sealing_key": p.sealing_key or org.sealing_key}
    )
    return Effects(env, p.type, organizations=[updated])


def _revoke_key(env: Envelope, p: RevokeKey, _org, view: LedgerView, _proofs) -> Effects:
    _require_operator(env, "revoke keys")
    org = _require_org(view, p.org_id)
    key = _signing_key(org, p.key_id)
    if key is None:
        raise Rejection(Code.UNKNOWN_KEY, f"{org.org_id} has no key {p.key_id!r}")
    if key.revoked_at is not None:
        raise Rejection(Code.REVOKED_KEY, f"key {p.key_id!r} of {org.org_id} was already revoked")
    revoked = key.model_copy(update={"revoked_at": env.timestamp})
    keys = [revoked if k.key_id == p.key_id else k for k in org.signing_keys]
    return Effects(env, p.type, organizations=[org.model_copy(update={"signing_keys": keys})])


# --------------------------------------------------------------------------- sites


def _attest_site(env: Envelope, p: AttestSite, org, view: LedgerView, _proofs) -> Effects:
    auditor = _require_role(org, frozenset({Role.auditor}), "attest sites")
    info = p.site
    operator = _require_org(view, info.operator)
    if operator.org_id == auditor.org_id:
        raise Rejection(Code.WRONG_ROLE, f"{auditor.org_id} cannot attest site {info.site_id}, which it operates")
    allowed = frozenset().union(*(SITE_CLASSES_BY_ROLE.get(r, frozenset()) for r in operator.roles))
    if info.origin_class not in allowed:
        raise Rejection(
            Code.WRONG_ROLE,
            f"site {info.site_id} of class {info.origin_class} cannot be operated by {operator.org_id}"
            f" (roles {', '.join(r.value for r in operator.roles)}): mines operate industrial or artisanal"
            " sites, recyclers recycled (pre- or post-consumer) ones",
        )
    _require_aware("valid_from", p.valid_from)
    _require_aware("valid_until", p.valid_until)
    if not p.valid_from < p.valid_until:
        raise Rejection(Code.MALFORMED, "valid_from: must be before valid_until")
    decode_point("capacity_commitment", p.capacity_commitment)

    site = Site(**info.model_dump())
    known = view.site(info.site_id)
    chain = view.site_attestations(info.site_id)
    new_id = st.attestation_id(env.network, env.signer, env.nonce)
    predecessor = None
    if p.supersedes is not None:  # a revoked attestation is superseded to re-attest its period
        predecessor = _live_attestation(view, p.supersedes, info.site_id, allow_revoked=True)
    if known is not None and predecessor is None and known != site:
        differing = sorted(f for f in Site.model_fields if getattr(known, f) != getattr(site, f))
        raise Rejection(
            Code.SITE_MISMATCH,
            f"site {info.site_id} is already attested with a different {', '.join(differing)};"
            " a correction must supersede the site's current attestation",
        )
    if known is not None and known.operator != site.operator:
        raise Rejection(Code.SITE_MISMATCH, f"site {info.site_id} is operated by {known.operator}, not {site.operator}")
    for other in chain:
        if other.superseded_by is None and other.attestation_id != p.supersedes and _overlap(other, p.valid_from, p.valid_until):
            raise Rejection(
                Code.ATTESTATION_OVERLAP,
                f"site {info.site_id} already has attestation {other.attestation_id} for"
                f" {other.valid_from.isoformat()} to {other.valid_until.isoformat()}: one capacity chain per site and"
                " period; supersede it instead",
            )
    attestation = Attestation(
        attestation_id=new_id,
        site_id=info.site_id,
        auditor=auditor.org_id,
        origin_class=info.origin_class,
        valid_from=p.valid_from,
        valid_until=p.valid_until,
        capacity_commitment=p.capacity_commitment,
        event_id=env.event_id,
        supersedes=p.supersedes,
    )
    effects = Effects(
        env,
        p.type,
        guards=[_site_chain_guard(info.site_id, chain)],
        sites=[site] if known != site else [],
        attestations=[attestation],
        sealed=[SealedOpening(operator.org_id, (), p.capacity_opening_sealed, env.event_id)],
    )
    if predecessor is not None:
        effects.attestation_updates.append(predecessor.model_copy(update={"superseded_by": new_id}))
        if predecessor.revoked_at is None:  # a revocation already closed the chain
            effects.guards.append(_close_chain_guard(view, predecessor))
        mark = view.issuance_mark(predecessor.attestation_id)
        if mark is not None:  # the period's total keeps counting under the new capacity
            effects.issuance_mark = IssuanceMark(
                attestation_id=new_id, seq=-1, cumulative=mark.cumulative, event_id=env.event_id
            )
    return effects


def _revoke_attestation(env: Envelope, p: RevokeAttestation, org, view: LedgerView, _proofs) -> Effects:
    auditor = _require_role(org, frozenset({Role.auditor}), "revoke attestations")
    attestation = _live_attestation(view, p.attestation_id, p.site_id)
    if attestation.auditor != auditor.org_id:
        raise Rejection(
            Code.WRONG_ROLE, f"attestation {attestation.attestation_id} was made by {attestation.auditor}, not {auditor.org_id}"
        )
    revoked = attestation.model_copy(update={"revoked_at": env.timestamp, "revoked_by_event": env.event_id})
    return Effects(
        env,
        p.type,
        guards=[_site_chain_guard(p.site_id, view.site_attestations(p.site_id)), _close_chain_guard(view, attestation)],
        attestation_updates=[revoked],
    )


def _live_attestation(view: LedgerView, attestation_id: str, site_id: str, allow_revoked: bool = False) -> Attestation:
    """The attestation, if it is of `site_id`, not superseded and (unless allowed) not revoked."""
    attestation = view.attestation(attestation_id)
    if attestation is None:
        raise Rejection(Code.ATTESTATION_NOT_FOUND, f"attestation {attestation_id} does not exist")
    if attestation.site_id != site_id:
        raise Rejection(Code.SITE_MISMATCH, f"attestation {attestation_id} is for site {attestation.site_id}")
    if attestation.superseded_by is not None:
        raise Rejection(
            Code.ATTESTATION_SUPERSEDED,
            f"attestation {attestation_id} was superseded by {attestation.superseded_by}",
        )
    if attestation.revoked_at is not None and not allow_revoked:
        raise Rejection(
            Code.ATTESTATION_REVOKED,
            f"attestation {attestation_id} was revoked at {attestation.revoked_at.isoformat()}",
        )
    return attestation


def _overlap(attestation: Attestation, valid_from: datetime, valid_until: datetime) -> bool:
    return attestation.valid_from < valid_until and valid_from < attestation.valid_until


def _site_chain_guard(site_id: str, chain: Sequence[Attestation]) -> Guard:
    """Attestations and revocations of one site are serialised: each takes the next step number."""
    step = len(chain) + sum(a.revoked_at is not None for a in chain)
    return Guard("site-attestation", f"{site_id}:{step}", "a concurrent attestation or revocation of the site won")


def _close_chain_guard(view: LedgerView, attestation: Attestation) -> Guard:
    """Takes the attestation's next issuance step, so that a concurrent issuance under it loses."""
    mark = view.issuance_mark(attestation.attestation_id)
    step = 0 if mark is None else mark.seq + 1
    return Guard("issuance", f"{attestation.attestation_id}:{step}", "the attestation was closed meanwhile")


# --------------------------------------------------------------------------- lots


def _issue(env: Envelope, p: Issue, org, view: LedgerView, proofs: ProofSink) -> Effects:
    issuer = _require_role(org, ISSUER_ROLES, "issue lots")
    site = view.site(p.site_id)
    if site is None:
        raise Rejection(Code.SITE_NOT_FOUND, f"site {p.site_id} has never been attested")
    if site.operator != issuer.org_id:
        raise Rejection(Code.WRONG_ROLE, f"only {site.operator}, the operator of site {site.site_id}, may issue there")
    attestation = _live_attestation(view, p.attestation_id, site.site_id)
    if attestation.origin_class != site.origin_class:
        # The lot takes the site's class, the capacity is the attestation's: they must
        # be about the same class (a class correction supersedes the attestation and
        # updates the site in one event, so this holds for every live attestation).
        raise Rejection(
            Code.SITE_MISMATCH,
            f"attestation {attestation.attestation_id} attests class {attestation.origin_class},"
            f" site {site.site_id} is {site.origin_class}",
        )
    if not attestation.valid_from <= env.timestamp < attestation.valid_until:
        raise Rejection(
            Code.ATTESTATION_EXPIRED,
            f"attestation {attestation.attestation_id} is valid from {attestation.valid_from.isoformat()}"
            f" until {attestation.valid_until.isoformat()}, not at {env.timestamp.isoformat()}",
        )
    mark = view.issuance_mark(attestation.attestation_id)
    expected_seq = 0 if mark is None else mark.seq + 1
    if p.seq != expected_seq:
        raise Rejection(
            Code.ISSUANCE_OUT_OF_SEQUENCE,
            f"seq: attestation {attestation.attestation_id} expects issuance {expected_seq}, got {p.seq}",
        )
    commitment = decode_point("commitment", p.commitment)
    cumulative = decode_point("cumulative", p.cumulative)
    previous = Point.identity() if mark is None else decode_point("previous cumulative", mark.cumulative)
    if cumulative != previous + commitment:
        raise Rejection(
            Code.ISSUANCE_OUT_OF_SEQUENCE,
            f"cumulative: is not the cumulative of issuances 0..{p.seq - 1} of attestation"
            f" {attestation.attestation_id} plus this commitment",
        )
    capacity = decode_point("attestation capacity_commitment", attestation.capacity_commitment)

    lot_id = st.issued_lot_id(env.network, env.signer, env.nonce)
    _check_amounts_in_range(
        proofs,
        st.issuance_range_transcript(env.network, env.signer, lot_id, attestation.attestation_id, p.seq),
        [commitment],
        p.range_proof,
        "the issued amount is not proven to lie in [0, 2^64)",
    )
    proofs.check_range(
        "capacity proof",
        nonnegative_batch_statement(
            st.capacity_transcript(env.network, env.signer, lot_id, attestation.attestation_id, p.seq),
            capacity - cumulative,
            decode_range_proof("capacity_proof", p.capacity_proof),
        ),
        "issuance exceeds the attested capacity or the proof is invalid",
    )
    lot = _created_lot(
        env,
        issuer,
        lot_id,
        {site.origin_class: p.commitment},
        p.product,
        site_id=site.site_id,
        origin_class=site.origin_class,
    )
    return Effects(
        env,
        p.type,
        lot_ids=[lot_id],
        guards=[Guard("issuance", f"{attestation.attestation_id}:{p.seq}", "issuance sequence number already used")],
        issuance_mark=IssuanceMark(
            attestation_id=attestation.attestation_id, seq=p.seq, cumulative=p.cumulative, event_id=env.event_id
        ),
        new_lots=[lot],
        sealed=[SealedOpening(issuer.org_id, (lot_id,), p.opening_sealed_to_owner, env.event_id)],
    )


def _transfer(env: Envelope, p: Transfer, _org, view: LedgerView, _proofs) -> Effects:
    lot = _require_own_unconsumed_lot(view, p.lot_id, env.signer)
    receiver = _require_org(view, p.to)
    _require_role(receiver, CUSTODIAN_ROLES, "hold lots")
    if receiver.org_id == env.signer:
        raise Rejection(Code.MALFORMED, f"to: {env.signer} already holds lot {lot.lot_id}")
    custody_seq = lot.custody_seq + 1
    return Effects(
        env,
        p.type,
        lot_ids=[lot.lot_id],
        guards=[Guard("custody", f"{lot.lot_id}:{custody_seq}", "lot was already transferred by its owner")],
        custody_moves=[CustodyMove(lot.lot_id, env.signer, receiver.org_id, custody_seq)],
        sealed=[SealedOpening(receiver.org_id, (lot.lot_id,), p.opening_sealed_to_receiver, env.event_id)],
    )


def _transform(env: Envelope, p: Transform, org, view: LedgerView, proofs: ProofSink) -> Effects:
    owner = _require_role(org, TRANSFORMER_ROLES, "transform lots")
    if len(set(p.inputs)) != len(p.inputs):
        raise Rejection(Code.MALFORMED, "inputs: a lot is listed twice")
    inputs = [_require_own_unconsumed_lot(view, lot_id, owner.org_id) for lot_id in p.inputs]
    in_points = [_lot_points(lot) for lot in inputs]
    # A missing class or the identity both commit to 0 with blinding 0: allowed for outputs and loss.
    out_points = [
        {k: decode_point(f"outputs[{i}].commitments.{k}", c, allow_identity=True) for k, c in out.commitments.items()}
        for i, out in enumerate(p.outputs)
    ]
    loss_points = {k: decode_point(f"loss.{k}", c, allow_identity=True) for k, c in p.loss.items()}
    values = st.transform_range_values(out_points, loss_points, Point.identity())
    if len(values) > MAX_AGGREGATION:
        raise Rejection(Code.MALFORMED, f"outputs: {len(values)} range values exceed the maximum of {MAX_AGGREGATION}")

    out_ids = st.output_lot_ids(env.network, env.signer, env.nonce, len(p.outputs))
    facts = (env.network, env.signer, env.nonce, p.process, p.inputs, out_ids)
    proofs.check_zero(
        "balance proof",
        st.transform_balance_transcript(*facts),
        st.class_balances(in_points, out_points, loss_points, Point.identity()),
        decode_zero_proof("balance_proof", p.balance_proof),
        "outputs exceed inputs in some class or the proof is invalid",
    )
    _check_amounts_in_range(
        proofs,
        st.transform_range_transcript(*facts),
        values,
        p.range_proof,
        "an output or loss amount is not proven to lie in [0, 2^64)",
    )
    cap_p, cap_q = LOSS_CAPS[p.process]
    cap_values = st.loss_cap_values(in_points, loss_points, p.process, Point.identity(), lambda x, n: x * n)
    proofs.check_range(
        "loss-cap proof",
        RangeStatement(
            st.loss_cap_transcript(*facts),
            tuple(cap_values),
            decode_range_proof("loss_cap_proof", p.loss_cap_proof),
            st.RANGE_BITS,
        ),
        f"the loss in some origin class exceeds {cap_p}/{cap_q} of that class's input, the cap of process"
        f" {p.process}, or the proof is invalid",
    )
    new_lots = [
        _created_lot(env, owner, lot_id, dict(out.commitments), out.product, parents=list(p.inputs))
        for lot_id, out in zip(out_ids, p.outputs, strict=True)
    ]
    return Effects(
        env,
        p.type,
        lot_ids=[*p.inputs, *out_ids],
        guards=[Guard("consume", lot_id, f"lot {lot_id} was already consumed") for lot_id in p.inputs],
        new_lots=new_lots,
        consumed=list(p.inputs),
        sealed=[SealedOpening(owner.org_id, tuple(out_ids), p.openings_sealed_to_owner, env.event_id)],
    )


# --------------------------------------------------------------------------- claims

#: The parameters each claim kind takes (all of them required, no others allowed).
CLAIM_PARAMETERS: dict[ClaimKind, frozenset[str]] = {
    ClaimKind.ancestry_excludes: frozenset({"origin_class"}),
    ClaimKind.share_at_most: frozenset({"origin_class", "p", "q", "proof"}),
    ClaimKind.share_at_least: frozenset({"origin_class", "p", "q", "proof"}),
    ClaimKind.share_in_range: frozenset({"origin_class", "p", "p_max", "q", "proof"}),
    ClaimKind.amount_in_range: frozenset({"low", "high", "proof"}),
}


def _publish_claim(env: Envelope, p: PublishClaim, _org, view: LedgerView, proofs: ProofSink) -> Effects:
    """A claim about a set of lots its signer holds or consumed (docs/protocol.md, "Aggregate claims").

    Share and amount claims are range proofs on linear combinations of the
    aggregate class commitments (per class, the sum of the lots' commitments).
    Share claims are sound only because every class amount of every lot is
    already proven to lie in [0, 2^64) upstream (by the issuance or
    transformation range proof that created the lot; transfers never change
    commitments), the set has at most MAX_CLAIM_LOTS lots and p, q < 2^16:
    then p*sum(v) - q*v_S cannot wrap around the group order, and a 64-bit
    range proof on it proves the integer inequality. Amount claims need no such
    precondition. No lot of the set may be upstream of another
    (OVERLAPPING_LOTS), or its cobalt would count twice in the sums.
    """
    lots = _claimed_lots(view, p.lot_ids, env.signer)
    _check_claim_parameters(p)
    if len(lots) > 1:
        _refuse_overlapping_lots(view, p.lot_ids)
    claim_id = st.claim_id(env.network, env.signer, env.nonce)
    if p.kind is ClaimKind.ancestry_excludes:
        excluded = st.members(p.origin_class)
        for ancestor in ancestry(view, p.lot_ids):
            if ancestor.origin_class in excluded:
                if ancestor.lot_id in p.lot_ids:
                    which = f"lot {ancestor.lot_id} was"
                else:
                    claimed = f"lot {p.lot_ids[0]}" if len(p.lot_ids) == 1 else "a lot of the set"
                    which = f"{claimed} descends from lot {ancestor.lot_id},"
                raise Rejection(
                    Code.CLAIM_DOES_NOT_HOLD, f"{which} issued at {ancestor.origin_class} site {ancestor.site_id}"
                )
    else:
        params = st.claim_params(p.kind, p.origin_class, p.p, p.q, p.low, p.high, p.p_max)
        transcript = st.claim_transcript(env.network, env.signer, claim_id, p.lot_ids, p.kind, params)
        points = st.aggregate([_lot_points(lot) for lot in lots], Point.identity())
        proof = decode_range_proof("proof", p.proof)
        try:
            if p.kind is ClaimKind.amount_in_range:
                total = sum(st.per_class(points, Point.identity()), Point.identity())
                statement = in_range_batch_statement(transcript, total, p.low, p.high, proof)
            elif p.kind is ClaimKind.share_in_range:
                split = st.share_split(points, p.origin_class, Point.identity())
                statement = share_in_range_batch_statement(transcript, split, 0, p.p, p.p_max, p.q, proof)
            else:
                split = st.share_split(points, p.origin_class, Point.identity())
                at_least = p.kind is ClaimKind.share_at_least
                statement = share_batch_statement(transcript, split, 0, p.p, p.q, at_least, proof)
        except ProofError as exc:
            raise Rejection(Code.INVALID_CLAIM, exc.reason) from None
        what = "the lot does not" if len(lots) == 1 else f"the aggregate of the {len(lots)} lots does not"
        proofs.check_range("claim proof", statement, f"{what} satisfy {p.kind.value} or the proof is invalid")
    claim = Claim(
        claim_id=claim_id,
        lot_ids=list(p.lot_ids),
        owner=env.signer,
        kind=p.kind,
        origin_class=p.origin_class,
        p=p.p,
        q=p.q,
        low=p.low,
        high=p.high,
        p_max=p.p_max,
        event_id=env.event_id,
        created_at=env.timestamp,
    )
    return Effects(env, p.type, lot_ids=list(p.lot_ids), claims=[claim])


def _claimed_lots(view: LedgerView, lot_ids: Sequence[str], signer: str) -> list[Lot]:
    """The lots of a claim's set: strictly ascending ids (MALFORMED), each in the ledger
    (LOT_NOT_FOUND) and held by the signer: currently, or when a transformation the
    signer published consumed it (NOT_OWNER). A lot's `owner` is frozen at its
    consumption (only its owner may transform it, and a consumed lot cannot be
    transferred), so `owner == signer` is exactly "held or consumed by the signer"."""
    if any(a >= b for a, b in zip(lot_ids, lot_ids[1:])):
        raise Rejection(Code.MALFORMED, "lot_ids: must be strictly ascending (sorted, each lot once)")
    lots = []
    for lot_id in lot_ids:
        lot = view.lot(lot_id)
        if lot is None:
            raise Rejection(Code.LOT_NOT_FOUND, f"lot {lot_id} does not exist")
        if lot.owner != signer:
            held = f"was consumed while held by {lot.owner}" if lot.consumed_by_event else f"is held by {lot.owner}"
            raise Rejection(
                Code.NOT_OWNER,
                f"lot {lot_id} {held}, not {signer}: a claim covers lots its signer holds or consumed",
            )
        lots.append(lot)
    return lots


def _refuse_overlapping_lots(view: LedgerView, lot_ids: Sequence[str]) -> None:
    """OVERLAPPING_LOTS if a lot of the set is upstream of another (its cobalt would count
    twice in the aggregate). One breadth-first walk over the union of the lots' proper
    ancestries, each lot visited once; the server prefetched them with a capped walk
    (`api.store.Store.ancestry_lots`), a bundle carries them. LOT_NOT_FOUND for a
    missing ancestor."""
    claimed = set(lot_ids)
    seen: set[str] = set()
    # (an ancestor, the lot of the set it is upstream of)
    queue = deque((parent, lot_id) for lot_id in lot_ids for parent in view.lot(lot_id).parents)
    while queue:
        current, below = queue.popleft()
        if current in seen:
            continue
        if current in claimed:
            raise Rejection(
                Code.OVERLAPPING_LOTS,
                f"lot_ids: lot {current} is an ancestor of lot {below}; both are in the set, so the cobalt of"
                f" {current} would count twice",
            )
        lot = view.lot(current)
        if lot is None:
            raise Rejection(Code.LOT_NOT_FOUND, f"lot {current} (an ancestor of {below}) is not in the ledger")
        seen.add(current)
        queue.extend((parent, below) for parent in lot.parents)


def _check_claim_parameters(p: PublishClaim) -> None:
    expected = CLAIM_PARAMETERS[p.kind]
    given = {
        name for name in ("origin_class", "p", "p_max", "q", "low", "high", "proof") if getattr(p, name) is not None
    }
    if missing := expected - given:
        raise Rejection(Code.INVALID_CLAIM, f"{p.kind.value} needs {', '.join(sorted(missing))}")
    if extra := given - expected:
        raise Rejection(Code.INVALID_CLAIM, f"{p.kind.value} takes no {', '.join(sorted(extra))}")
    if p.q is not None and not p.p <= p.q:
        raise Rejection(Code.INVALID_CLAIM, f"p/q = {p.p}/{p.q} is not a share in [0, 1]")
    if p.p_max is not None and not p.p <= p.p_max <= p.q:
        raise Rejection(Code.INVALID_CLAIM, f"need p <= p_max <= q, got {p.p}, {p.p_max}, {p.q}")
    if p.low is not None and not p.low <= p.high:
        raise Rejection(Code.INVALID_CLAIM, f"low {p.low} is above high {p.high}")


def _register_log_key(env: Envelope, p: RegisterLogKey, _org, _view: LedgerView, _proofs) -> Effects:
    """Operator only; a key is registered once (guard `log_key:<public key>`) and may not retire itself."""
    _require_operator(env, "register log keys")
    if p.public_key in p.retire:
        raise Rejection(Code.MALFORMED, "a log key registration cannot retire the key it registers")
    return Effects(env, p.type, guards=[Guard("log_key", p.public_key, f"log key {p.public_key} is already registered")])


_Rule = Callable[[Envelope, object, Organization | None, LedgerView, ProofSink], Effects]
_RULES: dict[type, _Rule] = {
    RegisterOrganization: _register_organization,
    RotateKey: _rotate_key,
    RevokeKey: _revoke_key,
    AttestSite: _attest_site,
    RevokeAttestation: _revoke_attestation,
    Issue: _issue,
    Transfer: _transfer,
    Transform: _transform,
    PublishClaim: _publish_claim,
    RegisterLogKey: _register_log_key,
}
