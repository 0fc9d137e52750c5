"""Prover side: build publication payloads from openings (pure, no I/O).

The SDK calls these with the openings it holds, then signs the payload with
`ledger.envelope.sign(..., nonce=<the same nonce>)`. The nonce is an input
because lot, attestation and claim ids derive from it and every proof context
binds them, so the ids must be known before proving. A builder raises
`crypto.errors.ProvingError` when asked to prove something false (an amount
outside [0, 2^64), an issuance beyond capacity, outputs exceeding inputs, a
claim that does not hold): the honest path cannot produce a payload the rules
would reject for a false statement.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from crypto.bulletproofs import prove_range
from crypto.claims import prove_in_range, prove_nonnegative, prove_share, prove_share_in_range
from crypto.errors import ProvingError
from crypto.pedersen import Opening, commit_opening
from crypto.sigma import prove_zero

from . import statements as st
from .models import (
    CLASS_SETS,
    LOSS_CAPS,
    MAX_CLAIM_LOTS,
    ORIGIN_CLASSES,
    AttestSite,
    ClaimKind,
    Issue,
    OutputLot,
    PublishClaim,
    SiteInfo,
    Transfer,
    Transform,
)
from .openings import capacity_plaintext, lots_plaintext, seal

ClassOpenings = Mapping[str, Opening]  # origin class -> opening; a missing class is Opening.zero()


@dataclass(frozen=True)
class PlannedOutput:
    """An output lot the transformer wants to create: its product and per-class openings."""

    product: str
    openings: ClassOpenings


def _hex_points(openings: ClassOpenings) -> dict[str, str]:
    return {k: commit_opening(o).hex() for k, o in openings.items()}


def build_attestation(
    network: str,
    signer: str,
    nonce: str,
    *,
    site: SiteInfo,
    valid_from: datetime,
    valid_until: datetime,
    capacity: Opening,
    operator_sealing_key: str,
    supersedes: str | None = None,
) -> AttestSite:
    """Auditor: attest a site's class and commit to its capacity for [valid_from, valid_until),
    or (`supersedes`) replace the site's attestation for an overlapping period: a capacity
    or class correction, whose capacity then bounds the period's whole issuance."""
    att_id = st.attestation_id(network, signer, nonce)
    return AttestSite(
        site=site,
        valid_from=valid_from,
        valid_until=valid_until,
        capacity_commitment=commit_opening(capacity).hex(),
        capacity_opening_sealed=seal(capacity_plaintext(att_id, capacity), operator_sealing_key),
        supersedes=supersedes,
    )


def build_issue(
    network: str,
    signer: str,
    nonce: str,
    *,
    site_id: str,
    origin_class: str,
    attestation_id: str,
    seq: int,
    opening: Opening,
    issued_before: Opening,
    capacity: Opening,
    product: str,
    owner_sealing_key: str,
) -> Issue:
    """Site operator: issue a lot of `opening.value` grams.

    `issued_before` opens the cumulative commitment of issuances 0..seq-1 under
    the attestation (Opening.zero() for seq 0); `capacity` opens the attested
    capacity. ProvingError if the issuance would exceed the capacity.
    """
    cumulative = issued_before + opening
    headroom = capacity - cumulative
    if headroom.value < 0:
        raise ProvingError(f"issuance exceeds the attested capacity by {-headroom.value} g")
    return prove_issue(
        network, signer, nonce, site_id=site_id, origin_class=origin_class, attestation_id=attestation_id, seq=seq,
        opening=opening, cumulative=cumulative, headroom=headroom, product=product,
        owner_sealing_key=owner_sealing_key,
    )  # fmt: skip


def prove_issue(
    network: str,
    signer: str,
    nonce: str,
    *,
    site_id: str,
    origin_class: str,
    attestation_id: str,
    seq: int,
    opening: Opening,
    cumulative: Opening,
    headroom: Opening,
    product: str,
    owner_sealing_key: str,
) -> Issue:
    """Prove and pack an issuance exactly as told: `cumulative` is declared and the
    capacity proof is made for `headroom`. `build_issue` derives both honestly; the
    demo's cheaters (sdk.attacks) lie through them, and the rules catch the lie."""
    lot_id = st.issued_lot_id(network, signer, nonce)
    range_proof, (commitment,) = prove_range(
        st.issuance_range_transcript(network, signer, lot_id, attestation_id, seq), [opening], st.RANGE_BITS
    )
    capacity_proof = prove_nonnegative(
        st.capacity_transcript(network, signer, lot_id, attestation_id, seq), commit_opening(headroom), headroom
    )
    return Issue(
        site_id=site_id,
        attestation_id=attestation_id,
        commitment=commitment.hex(),
        seq=seq,
        cumulative=commit_opening(cumulative).hex(),
        range_proof=range_proof.to_bytes().hex(),
        capacity_proof=capacity_proof.to_bytes().hex(),
        product=product,
        opening_sealed_to_owner=seal(lots_plaintext({lot_id: {origin_class: opening}}), owner_sealing_key),
    )


def build_transfer(*, lot_id: str, to: str, openings: ClassOpenings, receiver_sealing_key: str) -> Transfer:
    """Owner: hand a lot to `to`, sealing its openings to the receiver."""
    return Transfer(
        lot_id=lot_id,
        to=to,
        opening_sealed_to_receiver=seal(lots_plaintext({lot_id: openings}), receiver_sealing_key),
    )


def balancing_loss(inputs: Mapping[str, ClassOpenings], outputs: Sequence[PlannedOutput]) -> dict[str, Opening]:
    """The loss per class that balances a transformation exactly: what the inputs hold
    beyond the outputs (grams), each committed with a fresh blinding, for every class
    present in an input or output. ProvingError if outputs exceed inputs in some class."""
    in_openings = list(inputs.values())
    out_openings = [o.openings for o in outputs]
    present = {k for item in [*in_openings, *out_openings] for k in item}
    surpluses = st.class_balances(in_openings, out_openings, {}, Opening.zero())
    loss: dict[str, Opening] = {}
    for k, surplus in zip(ORIGIN_CLASSES, surpluses, strict=True):
        if surplus.value < 0:
            raise ProvingError(f"outputs exceed inputs in class {k} by {-surplus.value} g")
        if k in present:
            loss[k] = Opening.fresh(surplus.value)
    return loss


def build_transform(
    network: str,
    signer: str,
    nonce: str,
    *,
    process: str,
    inputs: Mapping[str, ClassOpenings],
    outputs: Sequence[PlannedOutput],
    owner_sealing_key: str,
) -> Transform:
    """Owner: consume `inputs` (lot id -> openings, in payload order), create `outputs`.

    The loss per class is whatever the inputs hold beyond the outputs, committed
    with a fresh blinding. ProvingError if outputs exceed inputs in some class,
    or if the loss in some class exceeds the process's cap
    (`ledger.models.LOSS_CAPS`: q*L_k <= p*In_k).
    """
    loss = balancing_loss(inputs, outputs)
    cap_p, cap_q = LOSS_CAPS[process]
    headroom = st.loss_cap_values(list(inputs.values()), loss, process, Opening.zero(), Opening.scale)
    for k, h in zip(ORIGIN_CLASSES, headroom, strict=True):
        if h.value < 0:
            raise ProvingError(
                f"the loss in class {k} exceeds {cap_p}/{cap_q} of its input, the loss cap of process {process}"
            )
    return prove_transform(
        network, signer, nonce, process=process, inputs=inputs, outputs=outputs, loss=loss,
        loss_cap_witness=headroom, owner_sealing_key=owner_sealing_key,
    )  # fmt: skip


def prove_transform(
    network: str,
    signer: str,
    nonce: str,
    *,
    process: str,
    inputs: Mapping[str, ClassOpenings],
    outputs: Sequence[PlannedOutput],
    loss: ClassOpenings,
    loss_cap_witness: Sequence[Opening],
    owner_sealing_key: str,
) -> Transform:
    """Prove and pack a transformation exactly as told: `loss` is declared as given
    and the loss-cap proof is made for `loss_cap_witness` (one opening per class,
    ORIGIN_CLASSES order). `build_transform` derives both honestly; the demo's
    loss launderer (sdk.attacks) lies through them, and the rules catch the lie.
    ProvingError if an output, loss or witness value is outside [0, 2^64)."""
    input_ids = list(inputs)
    out_ids = st.output_lot_ids(network, signer, nonce, len(outputs))
    in_openings = [inputs[i] for i in input_ids]
    out_openings = [o.openings for o in outputs]
    facts = (network, signer, nonce, process, input_ids, out_ids)
    # Per class, inputs - outputs - loss opens to (0, rho_k) when the books balance: rho_k*H.
    rhos = st.class_balances(in_openings, out_openings, loss, Opening.zero())
    balance_proof = prove_zero(
        st.transform_balance_transcript(*facts), [commit_opening(r) for r in rhos], [r.blinding for r in rhos]
    )
    values = st.transform_range_values(out_openings, loss, Opening.zero())
    range_proof, _ = prove_range(st.transform_range_transcript(*facts), values, st.RANGE_BITS)
    loss_cap_proof, _ = prove_range(st.loss_cap_transcript(*facts), list(loss_cap_witness), st.RANGE_BITS)
    return Transform(
        process=process,
        inputs=input_ids,
        outputs=[OutputLot(commitments=_hex_points(plan.openings), product=plan.product) for plan in outputs],
        loss=_hex_points(loss),
        balance_proof=balance_proof.to_bytes().hex(),
        range_proof=range_proof.to_bytes().hex(),
        loss_cap_proof=loss_cap_proof.to_bytes().hex(),
        openings_sealed_to_owner=seal(lots_plaintext(dict(zip(out_ids, out_openings))), owner_sealing_key),
    )


def build_claim(
    network: str,
    signer: str,
    nonce: str,
    *,
    lot_ids: Sequence[str],
    kind: ClaimKind,
    openings: Mapping[str, ClassOpenings] | None = None,
    origin_class: str | None = None,
    p: int | None = None,
    q: int | None = None,
    low: int | None = None,
    high: int | None = None,
    p_max: int | None = None,
) -> PublishClaim:
    """A claim about a set of lots the signer holds or consumed (one lot: a set of one).

    `lot_ids` in any order (the payload lists them sorted); ProvingError if one is
    listed twice, or if there are more than MAX_CLAIM_LOTS. Share and amount
    claims need `openings`: lot id -> that lot's class openings, for every lot of
    the set; the proof is over the per-class sums (`statements.aggregate`).
    `origin_class` is a class of ORIGIN_CLASSES or a class set of CLASS_SETS.
    Ownership and overlap (no lot upstream of another) are the rules' to check:
    the builder cannot see the ledger."""
    kind = ClaimKind(kind)
    ordered = sorted(lot_ids)
    if len(set(ordered)) != len(ordered):
        raise ProvingError("a claim lists each lot once")
    if not 1 <= len(ordered) <= MAX_CLAIM_LOTS:
        raise ProvingError(f"a claim covers 1 to {MAX_CLAIM_LOTS} lots, not {len(ordered)}")
    params = st.claim_params(kind, origin_class, p, q, low, high, p_max)
    proof = None
    if kind is not ClaimKind.ancestry_excludes:
        missing = [lot_id for lot_id in ordered if openings is None or lot_id not in openings]
        if missing:
            raise ProvingError(f"a {kind.value} claim needs the openings of lot(s) {', '.join(missing)}")
        named = (*ORIGIN_CLASSES, *CLASS_SETS)
        if kind is not ClaimKind.amount_in_range and origin_class not in named:
            raise ProvingError(f"a {kind.value} claim needs an origin class or class set, one of {', '.join(named)}")
        transcript = st.claim_transcript(network, signer, st.claim_id(network, signer, nonce), ordered, kind, params)
        summed = st.aggregate([openings[lot_id] for lot_id in ordered], Opening.zero())
        if kind is ClaimKind.amount_in_range:
            total = sum(st.per_class(summed, Opening.zero()), Opening.zero())
            proof = prove_in_range(transcript, commit_opening(total), total, low, high)
        else:
            split = st.share_split(summed, origin_class, Opening.zero())
            points = [commit_opening(o) for o in split]
            if kind is ClaimKind.share_in_range:
                proof = prove_share_in_range(transcript, points, split, 0, p, p_max, q)
            else:
                proof = prove_share(transcript, points, split, 0, p, q, kind is ClaimKind.share_at_least)
    return PublishClaim(
        lot_ids=ordered,
        kind=kind,
        origin_class=origin_class,
        p=p,
        q=q,
        low=low,
        high=high,
        p_max=p_max,
        proof=None if proof is None else proof.to_bytes().hex(),
    )
