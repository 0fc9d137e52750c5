"""Dishonest provers, for the demo and the tests: what a launderer would try.

The honest `Publisher` refuses to prove a false statement. These functions
build the payload a cheater would send instead, with every proof *well
formed* and every signature valid, so that only the server's soundness checks
stand between the cheater and the ledger:

* `forge_issue_smaller_amount`: commit to a large issuance but compute the
  capacity proof as if a small amount had been issued. The range proof is
  valid for a different point than `capacity - cumulative`: BAD_PROOF.
* `forge_issue_stale_cumulative`: chain the issuance onto a stale cumulative
  (as if the earlier issuances of the period had not happened), so that the
  capacity proof itself is true for the stale total: the server recomputes
  the chain and refuses it (ISSUANCE_OUT_OF_SEQUENCE).
* `forge_inflated_transform`: a refiner declares more output than it
  consumed. The outputs' and loss' range proof is valid (all amounts are
  non-negative), but the balance proof was made for the honest outputs, so it
  does not verify for the inflated ones: BAD_PROOF.
* `launder_loss` / `forge_laundered_transform`: a trader merges artisanal
  and industrial lots and declares (part of) the artisanal input as process
  loss beyond the process's loss cap. Balance and range proofs are true; the
  loss-cap proof is made for the cap values clamped at zero, so it does not
  verify for the true (negative) headroom: BAD_PROOF naming the loss-cap proof.
* `double_counting_claim`: an aggregate claim over a lot and one of its
  descendants (e.g. a cathode lot and the cells made from it), so that the
  same cobalt counts twice in the sums. The proof is true for those sums;
  the server walks the set's ancestry and refuses it (OVERLAPPING_LOTS).

Nothing here is used by the SDK's normal paths.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from crypto.bulletproofs import prove_range
from crypto.group import Point
from crypto.pedersen import Opening, commit_opening
from crypto.sigma import prove_zero
from ledger import statements as st
from ledger.builders import (
    ClassOpenings,
    PlannedOutput,
    balancing_loss,
    build_claim,
    prove_issue,
    prove_transform,
)
from ledger.envelope import Envelope
from ledger.models import ORIGIN_CLASSES, OutputLot, Transform
from ledger.openings import lots_plaintext, seal

from .publisher import Publisher, new_nonce


def _points(openings: Mapping[str, Opening]) -> dict[str, Point]:
    return {k: commit_opening(o) for k, o in openings.items()}


async def _issue_context(pub: Publisher, attestation_id: str) -> tuple[int, Opening, str, Opening]:
    seq, issued_before, origin_class = await pub._issuance_state(attestation_id)
    return seq, issued_before, origin_class, pub.wallet.capacity(attestation_id).opening


def _signed_issue(pub: Publisher, attestation_id: str, **claimed) -> Envelope:
    nonce = new_nonce()
    payload = prove_issue(pub.network, pub.org_id, nonce, attestation_id=attestation_id,
                          owner_sealing_key=pub.wallet.sealing_public_hex, **claimed)  # fmt: skip
    return pub.sign(payload, nonce)


async def forge_issue_smaller_amount(
    pub: Publisher, *, site_id: str, attestation_id: str, amount_g: int, pretend_g: int, product: str
) -> Envelope:
    """Issue `amount_g`, with a capacity proof computed for `pretend_g` (which fits the capacity)."""
    seq, issued_before, origin_class, capacity = await _issue_context(pub, attestation_id)
    real = Opening.fresh(amount_g)
    pretend = Opening(pretend_g, real.blinding)
    return _signed_issue(
        pub, attestation_id, site_id=site_id, seq=seq, origin_class=origin_class, product=product, opening=real,
        cumulative=issued_before + real,  # honest chain: only the proof lies
        headroom=capacity - (issued_before + pretend),
    )  # fmt: skip


async def forge_issue_stale_cumulative(
    pub: Publisher, *, site_id: str, attestation_id: str, amount_g: int, product: str
) -> Envelope:
    """Issue `amount_g` on top of a stale (zero) cumulative: the proof is true, the chain is not."""
    seq, _issued_before, origin_class, capacity = await _issue_context(pub, attestation_id)
    real = Opening.fresh(amount_g)
    stale_cumulative = real  # pretends nothing was issued before in the period
    return _signed_issue(
        pub, attestation_id, site_id=site_id, seq=seq, origin_class=origin_class, product=product, opening=real,
        cumulative=stale_cumulative, headroom=capacity - stale_cumulative,
    )  # fmt: skip


def forge_inflated_transform(
    pub: Publisher,
    *,
    process: str,
    inputs: Sequence[str],
    honest_outputs: Sequence[PlannedOutput],
    inflate_g: Mapping[str, int],
) -> Envelope:
    """Declare outputs larger than the honest ones by `inflate_g` grams per class (on output 0).

    The balance proof is the honest one (made for the honest outputs); the range
    proof covers the inflated outputs and the honest loss and is valid.
    """
    network, signer = pub.network, pub.org_id
    nonce = new_nonce()
    in_openings = [pub.wallet.lot(i).openings for i in inputs]
    out_ids = st.output_lot_ids(network, signer, nonce, len(honest_outputs))
    honest = [dict(o.openings) for o in honest_outputs]
    surplus = st.class_balances(in_openings, honest, {}, Opening.zero())
    present = {k for item in [*in_openings, *honest] for k in item}
    loss = {k: Opening.fresh(s.value) for k, s in zip(ORIGIN_CLASSES, surplus) if k in present}
    rhos = st.class_balances(in_openings, honest, loss, Opening.zero())
    honest_points = st.class_balances(
        [_points(o) for o in in_openings], [_points(o) for o in honest], _points(loss), Point.identity()
    )
    facts = (network, signer, nonce, process, list(inputs), out_ids)
    balance_proof = prove_zero(
        st.transform_balance_transcript(*facts),
        honest_points,
        [r.blinding for r in rhos],
    )
    inflated = [dict(o) for o in honest]
    for k, extra in inflate_g.items():
        base = inflated[0].get(k, Opening.zero())
        inflated[0][k] = Opening(base.value + extra, base.blinding)
    range_proof, _ = prove_range(
        st.transform_range_transcript(*facts),
        st.transform_range_values(inflated, loss, Opening.zero()),
        st.RANGE_BITS,
    )
    loss_cap_proof, _ = prove_range(
        st.loss_cap_transcript(*facts),
        st.loss_cap_values(in_openings, loss, process, Opening.zero(), Opening.scale),
        st.RANGE_BITS,
    )
    payload = Transform(
        process=process,
        inputs=list(inputs),
        outputs=[
            OutputLot(commitments={k: p.hex() for k, p in _points(o).items()}, product=plan.product)
            for plan, o in zip(honest_outputs, inflated)
        ],
        loss={k: p.hex() for k, p in _points(loss).items()},
        balance_proof=balance_proof.to_bytes().hex(),
        range_proof=range_proof.to_bytes().hex(),
        loss_cap_proof=loss_cap_proof.to_bytes().hex(),
        openings_sealed_to_owner=seal(lots_plaintext(dict(zip(out_ids, inflated))), pub.wallet.sealing_public_hex),
    )
    return pub.sign(payload, nonce)


def launder_loss(
    network: str,
    signer: str,
    nonce: str,
    *,
    process: str,
    inputs: Mapping[str, ClassOpenings],
    outputs: Sequence[PlannedOutput],
    owner_sealing_key: str,
) -> Transform:
    """A transformation whose per-class loss (inputs - outputs, balance exact) may
    exceed the process's loss cap: the loss-cap proof is made for max(0, headroom)."""
    loss = balancing_loss(inputs, outputs)
    headroom = st.loss_cap_values(list(inputs.values()), loss, process, Opening.zero(), Opening.scale)
    clamped = [h if h.value >= 0 else Opening(0, h.blinding) for h in headroom]
    return prove_transform(
        network, signer, nonce, process=process, inputs=inputs, outputs=outputs, loss=loss,
        loss_cap_witness=clamped, owner_sealing_key=owner_sealing_key,
    )  # fmt: skip


def forge_laundered_transform(
    pub: Publisher, *, process: str, inputs: Sequence[str], outputs: Sequence[PlannedOutput]
) -> Envelope:
    """`launder_loss` on lots the publisher holds, signed by it."""
    nonce = new_nonce()
    payload = launder_loss(
        pub.network, pub.org_id, nonce, process=process, inputs={i: pub.wallet.lot(i).openings for i in inputs},
        outputs=outputs, owner_sealing_key=pub.wallet.sealing_public_hex,
    )  # fmt: skip
    return pub.sign(payload, nonce)


def double_counting_claim(pub: Publisher, lot_ids: Sequence[str], kind: str, **params) -> Envelope:
    """An aggregate claim over `lot_ids` (lots the publisher holds or consumed), proven by the
    honest builder from the wallet's openings but without the SDK's check of the set
    (`Publisher._check_claim_set`): with a lot and its descendant, the sums count their
    common cobalt twice."""
    nonce = new_nonce()
    payload = build_claim(
        pub.network, pub.org_id, nonce, lot_ids=lot_ids, kind=kind,
        openings={i: pub.wallet.lot(i).openings for i in lot_ids}, **params,
    )  # fmt: skip
    return pub.sign(payload, nonce)
