"""The server verifies every proof of one publication in ONE multi-scalar multiplication.

`api.service.verify_publication` collects the balance (zero) proof, the range
proof, the loss-cap proof and the claim proof of an envelope into one folded
MSM (`ledger.proofs.BatchCollector`). These tests publish through the real
ingestion service on the embedded database (the `publish` and `store`
fixtures): one bad proof among the several of a publication is refused with
BAD_PROOF naming exactly that proof, whichever it is and however it is
corrupted (a scalar, or a point replaced by another valid point); nothing of
the refused publication is written; the honest publication then lands.
"""

from __future__ import annotations

import contextlib

import pytest

from crypto.group import ORDER, POINT_BYTES, SCALAR_BYTES, Point, backend
from ledger.errors import Code, Rejection

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def bump_last_scalar(hex_proof: str) -> str:
    """The proof with its last scalar (a range proof's b, a zero proof's last s_i) plus one."""
    raw = bytes.fromhex(hex_proof)
    k = (int.from_bytes(raw[-SCALAR_BYTES:], "big") + 1) % ORDER
    return (raw[:-SCALAR_BYTES] + k.to_bytes(SCALAR_BYTES, "big")).hex()


def swap_point(hex_proof: str, offset: int) -> str:
    """The proof with the point at `offset` replaced by another valid point (2 G)."""
    raw = bytes.fromhex(hex_proof)
    other = (Point.generator() * 2).to_bytes()
    assert raw[offset : offset + POINT_BYTES] != other
    return (raw[:offset] + other + raw[offset + POINT_BYTES :]).hex()


# (payload field, how to corrupt it, the proof name the rejection must start with)
TRANSFORM_FAULTS = [
    ("balance_proof", bump_last_scalar, "balance proof"),
    ("balance_proof", lambda h: swap_point(h, 4), "balance proof"),  # R_1 (after the u32 count)
    ("range_proof", bump_last_scalar, "range proof"),
    ("range_proof", lambda h: swap_point(h, 0), "range proof"),  # A
    ("loss_cap_proof", bump_last_scalar, "loss-cap proof"),
    ("loss_cap_proof", lambda h: swap_point(h, 3 * POINT_BYTES), "loss-cap proof"),  # T2
]


@contextlib.contextmanager
def counting_msms(monkeypatch):
    """Counts the curve backend's multi-scalar multiplications inside the block."""
    b, calls = backend(), []
    real = b.msm

    def msm(points, scalars):
        calls.append(len(points))
        return real(points, scalars)

    monkeypatch.setattr(b, "msm", msm)
    try:
        yield calls
    finally:
        monkeypatch.undo()


async def snapshot(store) -> dict[str, int]:
    """Document count of every collection (what a refused publication must leave alone)."""
    names = await store.db.list_collection_names()
    return {name: await store.db[name].count_documents({}) for name in sorted(names)}


@pytest.fixture(scope="module")
async def refiner_lots(world, publish):
    """A refiner holding two issued lots (industrial and artisanal): inputs for the transformations."""
    for org_id, role in (("aud-1msm", "auditor"), ("mine-1msm", "mine"), ("ref-1msm", "refiner")):
        await publish(world.register(org_id, role))
    lots = []
    for site, origin in (("site-1msm-i", "industrial"), ("site-1msm-a", "artisanal")):
        env, att = world.attest("aud-1msm", "mine-1msm", site, origin, capacity=10**9)
        await publish(env)
        env, lot_id = world.issue(att, 5_000_000)
        await publish(env)
        await publish(world.transfer("mine-1msm", lot_id, "ref-1msm"))
        lots.append(lot_id)
    return lots


async def refused_and_nothing_written(world, publish, store, envelope, field: str, corrupt, name: str) -> None:
    payload = envelope.payload.model_copy(update={field: corrupt(getattr(envelope.payload, field))})
    bad = world.sign(payload, envelope.signer, nonce=envelope.nonce)
    before = await snapshot(store)
    with pytest.raises(Rejection) as info:
        await publish(bad)
    assert info.value.code is Code.BAD_PROOF, info.value.message
    assert info.value.message.startswith(f"{name}: "), info.value.message
    assert await snapshot(store) == before
    assert await store.accepted_publication(bad.event_id) is None


async def test_one_bad_proof_of_a_transformation_is_named_and_nothing_is_written(
    world, publish, store, refiner_lots, monkeypatch
):
    # one envelope per fault: the world's openings are those of the honest outputs
    envelope, out_ids = world.transform("ref-1msm", refiner_lots, shares=[0.5, 0.5], process="merge")
    for field, corrupt, name in TRANSFORM_FAULTS:
        await refused_and_nothing_written(world, publish, store, envelope, field, corrupt, name)
    assert await store.lots_by_ids(out_ids) == {}
    inputs = await store.lots_by_ids(refiner_lots)
    assert all(lot.consumed_by_event is None for lot in inputs.values())

    with counting_msms(monkeypatch) as msms:
        outcome = await publish(envelope)  # the honest one lands, after all those refusals
    assert len(msms) == 1, msms  # balance, range and loss-cap proofs: one MSM
    assert outcome.lot_ids == out_ids
    assert set(await store.lots_by_ids(out_ids)) == set(out_ids)


async def test_one_bad_claim_proof_is_named_and_the_honest_claim_lands(world, publish, store, refiner_lots, monkeypatch):
    # the transformation above consumed refiner_lots; claim on a fresh refine of a new issuance
    env, att = world.attest("aud-1msm", "mine-1msm", "site-1msm-c", "industrial", capacity=10**9)
    await publish(env)
    env, lot_id = world.issue(att, 3_000_000)
    await publish(env)
    await publish(world.transfer("mine-1msm", lot_id, "ref-1msm"))
    env, (out,) = world.transform("ref-1msm", [lot_id])
    with counting_msms(monkeypatch) as msms:
        await publish(env)
    assert len(msms) == 1, msms
    claim, claim_id = world.claim_share("ref-1msm", out, "industrial", 99, 100)
    for corrupt in (bump_last_scalar, lambda h: swap_point(h, POINT_BYTES)):  # b; S
        await refused_and_nothing_written(world, publish, store, claim, "proof", corrupt, "claim proof")
    outcome = await publish(claim)
    assert outcome.claim_id == claim_id
