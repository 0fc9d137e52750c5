"""What each proof is about: statement labels, transcript contexts, value layouts.

Prover (sdk, via `ledger.builders`) and verifier (`ledger.rules`) build their
Fiat-Shamir transcripts with these functions and nothing else, so they cannot
drift apart. Each proof gets a distinct, versioned statement label, and a
context that is the RFC 8785 canonical JSON of every public fact the proof is
about: the network, the signer, the event kind, the lot ids, the attestation
and sequence number, the claim parameters, and the origin-class list. A proof
made for one lot, signer, network or claim therefore never verifies for
another, even before the envelope signature is checked.

The crypto layer itself absorbs the commitments, generators and proof
parameters (n, m) into the transcript; this module adds the domain facts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from crypto.transcript import Transcript

from .encoding import canonical_json, derive_id
from .models import CLASS_SETS, LOSS_CAPS, ORIGIN_CLASSES, ORIGIN_CLASSES_VERSION, ClaimKind

ISSUE_RANGE = b"oretrace/v2/issue/range"
ISSUE_CAPACITY = b"oretrace/v2/issue/capacity"
TRANSFORM_BALANCE = b"oretrace/v2/transform/balance"
TRANSFORM_RANGE = b"oretrace/v2/transform/range"
TRANSFORM_LOSS_CAP = b"oretrace/v2/transform/loss-cap"
CLAIM_LABELS: dict[ClaimKind, bytes] = {kind: b"oretrace/v2/claim/" + kind.value.encode() for kind in ClaimKind}
#: Domain separator of a claim's lot set in its transcript (`claim_transcript`).
CLAIM_LOTS_DOMAIN = b"oretrace/v2/claim/lots"

#: Range proofs in oretrace are all 64-bit (amounts are in [0, 2^64)).
RANGE_BITS = 64

T = TypeVar("T")


def _transcript(statement: bytes, event: str, network: str, signer: str, **facts: Any) -> Transcript:
    context = {
        "event": event,
        "network": network,
        "signer": signer,
        "origin_classes": {"version": ORIGIN_CLASSES_VERSION, "order": list(ORIGIN_CLASSES)},
        **facts,
    }
    return Transcript(statement, canonical_json(context))


# --------------------------------------------------------------------------- ids


def issued_lot_id(network: str, signer: str, nonce: str) -> str:
    return derive_id("lot", network, signer, nonce, 0)


def output_lot_ids(network: str, signer: str, nonce: str, count: int) -> list[str]:
    return [derive_id("lot", network, signer, nonce, i) for i in range(count)]


def attestation_id(network: str, signer: str, nonce: str) -> str:
    return derive_id("att", network, signer, nonce, 0)


def claim_id(network: str, signer: str, nonce: str) -> str:
    return derive_id("clm", network, signer, nonce, 0)


# --------------------------------------------------------------------------- transcripts


def issuance_range_transcript(network: str, signer: str, lot_id: str, attestation_id: str, seq: int) -> Transcript:
    """The issued amount is in [0, 2^64)."""
    return _transcript(ISSUE_RANGE, "issue", network, signer, lot_id=lot_id, attestation_id=attestation_id, seq=seq)


def capacity_transcript(network: str, signer: str, lot_id: str, attestation_id: str, seq: int) -> Transcript:
    """capacity - cumulative (after this issuance) is in [0, 2^64)."""
    return _transcript(ISSUE_CAPACITY, "issue", network, signer, lot_id=lot_id, attestation_id=attestation_id, seq=seq)


def transform_balance_transcript(
    network: str, signer: str, nonce: str, process: str, input_ids: Sequence[str], output_lot_ids: Sequence[str]
) -> Transcript:
    """Per class, inputs - outputs - loss commits to zero (knowledge of rho_k)."""
    return _transform_transcript(TRANSFORM_BALANCE, network, signer, nonce, process, input_ids, output_lot_ids)


def transform_range_transcript(
    network: str, signer: str, nonce: str, process: str, input_ids: Sequence[str], output_lot_ids: Sequence[str]
) -> Transcript:
    """Every output and loss amount is in [0, 2^64) (one aggregated proof)."""
    return _transform_transcript(TRANSFORM_RANGE, network, signer, nonce, process, input_ids, output_lot_ids)


def loss_cap_transcript(
    network: str, signer: str, nonce: str, process: str, input_ids: Sequence[str], output_lot_ids: Sequence[str]
) -> Transcript:
    """Per class k, p*In_k - q*L_k is in [0, 2^64) with (p, q) = LOSS_CAPS[process] (one aggregated proof)."""
    return _transform_transcript(TRANSFORM_LOSS_CAP, network, signer, nonce, process, input_ids, output_lot_ids)


def _transform_transcript(
    statement: bytes,
    network: str,
    signer: str,
    nonce: str,
    process: str,
    input_ids: Sequence[str],
    output_lot_ids: Sequence[str],
) -> Transcript:
    """The proofs of a transformation bind the same facts (the process and its loss
    cap included); only the label differs."""
    p, q = LOSS_CAPS[process]
    return _transcript(
        statement,
        "transform",
        network,
        signer,
        nonce=nonce,
        process=process,
        loss_cap={"p": p, "q": q},
        inputs=list(input_ids),
        outputs=list(output_lot_ids),
    )


def claim_params(
    kind: ClaimKind,
    origin_class: str | None = None,
    p: int | None = None,
    q: int | None = None,
    low: int | None = None,
    high: int | None = None,
    p_max: int | None = None,
) -> dict[str, Any]:
    """The claim's parameters as they enter its context (absent ones omitted)."""
    params = {"origin_class": origin_class, "p": p, "p_max": p_max, "q": q, "low": low, "high": high}
    return {"kind": ClaimKind(kind).value, **{k: v for k, v in params.items() if v is not None}}


def claim_transcript(
    network: str, signer: str, claim_id: str, lot_ids: Sequence[str], kind: ClaimKind, params: Mapping[str, Any]
) -> Transcript:
    """The proof of a share or amount claim about a set of lots (`lot_ids`, strictly ascending).

    The context binds the network, signer, claim id and parameters; the lot set
    follows, domain-separated (CLAIM_LOTS_DOMAIN) and length-prefixed: the u64
    `lots.len`, then each id as a `lot` message (UTF-8), in the given order.
    A proof made for one set therefore never verifies for another (nor for a
    subset, a superset or a reordering)."""
    kind = ClaimKind(kind)
    transcript = _transcript(
        CLAIM_LABELS[kind], "publish_claim", network, signer, claim_id=claim_id, params=dict(params)
    )
    transcript.domain_separator(CLAIM_LOTS_DOMAIN)
    transcript.append_u64(b"lots.len", len(lot_ids))
    for lot_id in lot_ids:
        transcript.append_message(b"lot", lot_id.encode())
    return transcript


# --------------------------------------------------------------------------- value layouts


def aggregate(per_lot: Sequence[Mapping[str, T]], zero: T) -> dict[str, T]:
    """Per origin class (ORIGIN_CLASSES order), the sum over a claim's lots of their
    class amounts: commitments (Points) or openings, since Pedersen commitments add.
    A class missing from every lot is `zero`."""
    totals: dict[str, T] = {}
    for k in ORIGIN_CLASSES:
        total = zero
        for lot in per_lot:
            total = total + lot.get(k, zero)
        totals[k] = total
    return totals


def members(origin_class: str) -> tuple[str, ...]:
    """The origin classes a claim's `origin_class` names: a class, or a set of CLASS_SETS."""
    return CLASS_SETS.get(origin_class, (origin_class,))


def share_split(commitments: Mapping[str, T], origin_class: str, zero: T) -> list[T]:
    """[amount in `origin_class` (a class or class set), amount in every other class]:
    the two values a share claim is proven over (index 0 is the share's numerator)."""
    selected = members(origin_class)
    inside, rest = zero, zero
    for k in ORIGIN_CLASSES:
        if k in selected:
            inside = inside + commitments.get(k, zero)
        else:
            rest = rest + commitments.get(k, zero)
    return [inside, rest]


def per_class(commitments: Mapping[str, T], missing: T) -> list[T]:
    """One item per origin class, in ORIGIN_CLASSES order; a missing class is `missing`."""
    return [commitments.get(k, missing) for k in ORIGIN_CLASSES]


def transform_range_values(outputs: Sequence[Mapping[str, T]], loss: Mapping[str, T], missing: T) -> list[T]:
    """The values of a transformation's aggregated range proof, in proof order:
    output 0 x ORIGIN_CLASSES, output 1 x ORIGIN_CLASSES, ..., then loss x ORIGIN_CLASSES.

    Generic so that the prover passes Openings (missing = Opening.zero()) and the
    verifier passes Points (missing = the identity) through the same layout.
    """
    values: list[T] = []
    for output in outputs:
        values.extend(per_class(output, missing))
    values.extend(per_class(loss, missing))
    return values


def class_balances(
    inputs: Sequence[Mapping[str, T]], outputs: Sequence[Mapping[str, T]], loss: Mapping[str, T], zero: T
) -> list[T]:
    """Per class k (ORIGIN_CLASSES order): sum(inputs_k) - sum(outputs_k) - loss_k.

    On Points these are the D_k the balance proof shows to be multiples of H;
    on Openings the prover reads off the rho_k (and checks every value is 0).
    """
    balances = []
    for k in ORIGIN_CLASSES:
        d = zero
        for item in inputs:
            d = d + item.get(k, zero)
        for item in outputs:
            d = d - item.get(k, zero)
        balances.append(d - loss.get(k, zero))
    return balances


def loss_cap_values(
    inputs: Sequence[Mapping[str, T]],
    loss: Mapping[str, T],
    process: str,
    zero: T,
    scale: Callable[[T, int], T],
) -> list[T]:
    """Per class k (ORIGIN_CLASSES order): p*In_k - q*L_k, (p, q) = LOSS_CAPS[process].

    In_k is the sum of the inputs' class-k commitments (or openings), L_k the
    loss. Non-negative iff the loss is at most p/q of the class's input. No
    wrap-around mod the group order: every In_k term and L_k is proven in
    [0, 2^64) (upstream / by the transformation's range proof), at most 32
    inputs and p, q < 2^16, so |p*In_k - q*L_k| < 2^86.
    `scale(x, n)` multiplies by an integer (Point: x * n; Opening: x.scale(n)).
    """
    p, q = LOSS_CAPS[process]
    totals = class_balances(inputs, [], {}, zero)
    return [scale(total, p) - scale(loss.get(k, zero), q) for k, total in zip(ORIGIN_CLASSES, totals, strict=True)]
