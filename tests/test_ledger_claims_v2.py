"""Claims v2: class sets (recycled = pre + post consumer) and share_in_range (both bounds)."""

from __future__ import annotations

import secrets

import pytest
from test_ledger_world import AMOUNTS, NETWORK, World, base_world, refused

from crypto.bulletproofs import prove_range
from crypto.errors import ProvingError
from crypto.pedersen import Opening
from ledger import builders
from ledger import statements as st
from ledger.errors import Code, Rejection
from ledger.models import CLAIM_MODELS, ClaimKind, PublishClaim

IND, REC = AMOUNTS["CLEAN.industrial"], AMOUNTS["CLEAN.recycled_post_consumer"]
SHARE_PERMILLE = 1000 * REC / (IND + REC)  # 272.7...


@pytest.fixture
def w() -> World:
    return base_world().fork()


def claim_envelope(w: World, **params):
    lot, nonce = w.names["CLEAN"], secrets.token_hex(16)
    payload = builders.build_claim(NETWORK, "oem", nonce, lot_ids=[lot], openings={lot: w.openings[lot]}, **params)
    return w.sign(payload, "oem", nonce)


@pytest.mark.parametrize(("p", "p_max"), [(272, 273), (270, 280), (0, 1000), (272, 272 + 1)])
def test_a_share_in_range_that_holds_lands(w: World, backend: str, p: int, p_max: int):
    env = claim_envelope(w, kind=ClaimKind.share_in_range, origin_class="recycled", p=p, p_max=p_max, q=1000)
    claim = w.apply(env, backend=backend).claims[0]
    assert (claim.p, claim.p_max, claim.q, claim.origin_class) == (p, p_max, 1000, "recycled")


@pytest.mark.parametrize(
    ("p", "p_max"),
    [(273, 280), (280, 300), (200, 272), (0, 100)],
    ids=["just-above-lower", "far-above", "just-below-upper", "far-below"],
)
def test_a_share_outside_either_bound_is_refused(w: World, backend: str, p: int, p_max: int):
    """The honest builder refuses; a proof made for the true interval does not verify for the claimed one,
    nor does a range proof over the differences clamped at zero."""
    assert not p <= SHARE_PERMILLE <= p_max
    with pytest.raises(ProvingError, match="the claim is false"):
        claim_envelope(w, kind=ClaimKind.share_in_range, origin_class="recycled", p=p, p_max=p_max, q=1000)
    honest = claim_envelope(w, kind=ClaimKind.share_in_range, origin_class="recycled", p=272, p_max=273, q=1000)
    lie = honest.payload.model_copy(update={"p": p, "p_max": p_max})
    refused(w, w.sign(lie, "oem", honest.nonce), Code.BAD_PROOF, "claim proof", backend=backend)

    lot, nonce = w.names["CLEAN"], secrets.token_hex(16)
    split = st.share_split(w.openings[lot], "recycled", Opening.zero())
    total = split[0] + split[1]
    above, below = split[0].scale(1000) - total.scale(p), total.scale(p_max) - split[0].scale(1000)
    clamped = [o if o.value >= 0 else Opening(0, o.blinding) for o in (above, below)]
    params = st.claim_params(ClaimKind.share_in_range, "recycled", p, 1000, p_max=p_max)
    transcript = st.claim_transcript(NETWORK, "oem", st.claim_id(NETWORK, "oem", nonce), [lot], ClaimKind.share_in_range, params)
    proof, _ = prove_range(transcript, [*clamped, total - Opening(1, 0)])
    forged = PublishClaim(lot_ids=[lot], kind=ClaimKind.share_in_range, origin_class="recycled", p=p, p_max=p_max,
                          q=1000, proof=proof.to_bytes().hex())  # fmt: skip
    refused(w, w.sign(forged, "oem", nonce), Code.BAD_PROOF, "claim proof", backend=backend)


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        (dict(p=300, p_max=200, q=1000), "p <= p_max <= q"),
        (dict(p=100, p_max=1001, q=1000), "p <= p_max <= q"),
        (dict(p=100, q=1000), "needs p_max"),
    ],
)
def test_share_in_range_parameters_are_checked(w: World, params, fragment):
    honest = claim_envelope(w, kind=ClaimKind.share_in_range, origin_class="recycled", p=270, p_max=280, q=1000)
    update = {"p": None, "p_max": None, "q": None, **params}
    bad = honest.payload.model_copy(update=update)
    refused(w, w.sign(bad, "oem", honest.nonce), Code.INVALID_CLAIM, fragment)


def test_class_sets_count_pre_and_post_consumer_together(w: World):
    """CLEAN holds only post-consumer recycled cobalt: its recycled share equals its post-consumer share."""
    for origin_class in ("recycled", "recycled_post_consumer"):
        env = claim_envelope(w, kind=ClaimKind.share_at_least, origin_class=origin_class, p=27, q=100)
        w.apply(env)
    with pytest.raises(ProvingError):
        claim_envelope(w, kind=ClaimKind.share_at_least, origin_class="recycled_pre_consumer", p=1, q=100)
    lot, nonce = w.names["CLEAN"], secrets.token_hex(16)
    excludes = builders.build_claim(NETWORK, "oem", nonce, lot_ids=[lot], kind=ClaimKind.ancestry_excludes,
                                    origin_class="recycled")  # fmt: skip
    refused(w, w.sign(excludes, "oem", nonce), Code.CLAIM_DOES_NOT_HOLD, "recycled_post_consumer site site-r")


def test_every_claim_kind_states_its_iso_22095_model():
    assert set(CLAIM_MODELS) == set(ClaimKind)
    assert CLAIM_MODELS[ClaimKind.ancestry_excludes] == "segregation"
    assert {CLAIM_MODELS[k] for k in (ClaimKind.share_at_most, ClaimKind.share_in_range)} == {"mass balance"}
