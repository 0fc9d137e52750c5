"""Cross-publication batch verification (`api.verification_batches`, `api.service.Verifier`).

Publications waiting for a verifier at the same time are verified together in
one MSM; each must still get exactly the verdict it gets alone. These tests use
real signed envelopes (the `world` fixture) prefetched from the real embedded
database, and check, for several kinds of batch:

* honest publications only: all accepted, one MSM round;
* one bad proof at the first, middle or last position, and two bad ones: only
  those refused, with BAD_PROOF naming the proof, the same message as alone;
  the others accepted; one MSM round per bad one, plus one only if honest ones
  follow the last bad one (those before a refused one were verified by its
  bisection); an off-curve point after a false proof, with the server's
  decoding and with deferred decoding (no bisection: nothing accepted unchecked);
  the MSMs a bad publication costs its batch, counted;
* a rejection by the rules inside a batch: that one refused with the rules'
  own code, no MSM round spent on it; an unexpected fault of the rules on one
  envelope raised for that one only;
* through the ingestion service: nothing of a refused publication written,
  the honest ones of the same batch written, batch size 1, the settings bounds;
* "process" mode: a hung verifier process gives SERVICE_UNAVAILABLE within the
  request deadline, the pool is replaced, and the same envelope then lands.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal

import pytest
from pydantic import ValidationError

from api.service import Ingestion, Verifier, verify_publication
from api.settings import Settings, SettingsError
from api.verification_batches import outcome, verify_publications
from ledger import rules
from ledger.errors import Code, Rejection

from test_publication_one_msm import bump_last_scalar, snapshot, swap_point

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

LOTS = 6  # transformations in the batches below

# (payload field, corruption, the proof name the rejection must start with), used in turn
FAULTS = [
    ("range_proof", bump_last_scalar, "range proof"),
    ("loss_cap_proof", lambda h: swap_point(h, 0), "loss-cap proof"),
    ("balance_proof", bump_last_scalar, "balance proof"),
]


def policy_of(world):
    return rules.Policy(network=world.network, root_public_key=world.root_key.verify_key.encode().hex())


def verdict_alone(envelope, view, policy):
    """What verify_publication of this envelope alone says: ('ok', event id) or (code, message)."""
    try:
        return "ok", verify_publication(envelope, view, policy).event_id
    except Rejection as rejection:
        return rejection.code, rejection.message


def verdict_in_batch(verdict):
    try:
        return "ok", outcome(verdict).event_id
    except Rejection as rejection:
        return rejection.code, rejection.message


def corrupted(world, envelope, fault):
    field, corrupt, _ = fault
    payload = envelope.payload.model_copy(update={field: corrupt(getattr(envelope.payload, field))})
    return world.sign(payload, envelope.signer, nonce=envelope.nonce)


@pytest.fixture(scope="module")
async def refiner_lots(world, publish):
    """A refiner holding LOTS issued lots, and a mine (another registered signer)."""
    for org_id, role in (("aud-vb", "auditor"), ("mine-vb", "mine"), ("ref-vb", "refiner")):
        await publish(world.register(org_id, role))
    env, att = world.attest("aud-vb", "mine-vb", "site-vb", "industrial", capacity=10**10)
    await publish(env)
    lots = []
    for _ in range(LOTS):
        env, lot_id = world.issue(att, 4_000_000)
        await publish(env)
        await publish(world.transfer("mine-vb", lot_id, "ref-vb"))
        lots.append(lot_id)
    return lots, att


@pytest.fixture(scope="module")
async def honest(world, store, refiner_lots):
    """LOTS honest transformations (one per lot, not published) with their prefetched views."""
    lots, _ = refiner_lots
    envelopes = [world.transform("ref-vb", [lot_id])[0] for lot_id in lots]
    views = [await store.prefetch(rules.references(e)) for e in envelopes]
    return envelopes, views


def batch_with_bad(world, honest, bad) -> list:
    """The honest batch as `verify_publications` items, with the publications at the
    positions `bad` corrupted (FAULTS in turn)."""
    envelopes, views = honest
    policy = policy_of(world)
    batch = list(envelopes)
    for n, position in enumerate(bad):
        batch[position] = corrupted(world, envelopes[position], FAULTS[n % len(FAULTS)])
    return [(e, v, policy) for e, v in zip(batch, views, strict=True)]


@pytest.mark.parametrize(
    "bad",
    [(), (0,), (LOTS // 2,), (LOTS - 1,), (0, LOTS - 1), (1, 2)],
    ids=["none", "first", "middle", "last", "first+last", "adjacent"],
)
async def test_each_publication_of_a_batch_gets_its_own_verdict(world, honest, bad):
    envelopes, views = honest
    policy = policy_of(world)
    batch = list(envelopes)
    for n, position in enumerate(bad):
        batch[position] = corrupted(world, envelopes[position], FAULTS[n % len(FAULTS)])
    result = verify_publications([(e, v, policy) for e, v in zip(batch, views, strict=True)])

    assert len(result.verdicts) == LOTS
    for position, (envelope, view, verdict) in enumerate(zip(batch, views, result.verdicts, strict=True)):
        got = verdict_in_batch(verdict)
        assert got == verdict_alone(envelope, view, policy)  # exactly what it gets alone
        if position in bad:
            name = FAULTS[bad.index(position) % len(FAULTS)][2]
            assert got[0] is Code.BAD_PROOF and got[1].startswith(f"{name}: "), got
        else:
            assert got == ("ok", envelope.event_id)
    assert result.rounds == expected_rounds(bad)


def expected_rounds(bad) -> int:
    """One failing round per bad publication (the bisection verifies those before it),
    plus a passing round only if honest publications follow the last bad one."""
    return len(bad) + (1 if not bad or max(bad) < LOTS - 1 else 0)


async def test_a_rules_rejection_in_a_batch_involves_no_other_publication(world, honest):
    envelopes, views = honest
    policy = policy_of(world)
    # the refiner's transformation signed by the mine, which does not hold the input lot
    wrong_signer = world.sign(envelopes[2].payload, "mine-vb")
    batch = [envelopes[0], wrong_signer, envelopes[3], corrupted(world, envelopes[4], FAULTS[0])]
    batch_views = [views[0], views[2], views[3], views[4]]
    result = verify_publications([(e, v, policy) for e, v in zip(batch, batch_views, strict=True)])

    got = [verdict_in_batch(v) for v in result.verdicts]
    assert got[0] == ("ok", envelopes[0].event_id)
    assert got[1][0] is not Code.BAD_PROOF and got[1][0] != "ok"
    assert got[1] == verdict_alone(wrong_signer, views[2], policy)
    assert got[2] == ("ok", envelopes[3].event_id)
    assert got[3][0] is Code.BAD_PROOF and got[3][1].startswith("range proof: ")
    assert result.rounds == 1  # the rules' rejection took no MSM round; the bad proof's bisection verified the rest


async def test_an_unexpected_fault_on_one_publication_stays_with_it(world, honest):
    """A fault of the rules on one item (here: no ledger view at all) is raised in
    that item's request only; the others of the batch are verified as usual."""
    envelopes, views = honest
    policy = policy_of(world)
    result = verify_publications([(envelopes[0], views[0], policy), (envelopes[1], None, policy),
                                  (envelopes[2], views[2], policy)])  # fmt: skip
    assert verdict_in_batch(result.verdicts[0]) == ("ok", envelopes[0].event_id)
    assert verdict_in_batch(result.verdicts[2]) == ("ok", envelopes[2].event_id)
    with pytest.raises(Exception) as info:
        outcome(result.verdicts[1])
    assert not isinstance(info.value, Rejection)
    assert result.rounds == 1


@pytest.fixture(scope="module")
async def issuances(world, store, publish, refiner_lots):
    """Three honest issuances (not published; each the first of its own attestation,
    issuances being sequenced per attestation) with their views: smaller proofs, for py_ecc."""
    envelopes = []
    for i in range(3):
        env, att = world.attest("aud-vb", "mine-vb", f"site-vb-{i}", "industrial", capacity=10**10)
        await publish(env)
        envelopes.append(world.issue(att, 1_000_000 + i)[0])
    views = [await store.prefetch(rules.references(e)) for e in envelopes]
    return envelopes, views


@pytest.mark.parametrize("bad_position", [0, 2])
async def test_batches_of_issuances_on_both_curve_backends(world, issuances, curve, bad_position):
    """The same verdicts on both backends (three issuances, one bad range proof)."""
    envelopes, views = issuances
    policy = policy_of(world)
    batch = list(envelopes)
    batch[bad_position] = corrupted(world, envelopes[bad_position], FAULTS[0])
    result = verify_publications([(e, v, policy) for e, v in zip(batch, views, strict=True)])
    got = [verdict_in_batch(v) for v in result.verdicts]
    for position, envelope in enumerate(batch):
        if position == bad_position:
            assert got[position][0] is Code.BAD_PROOF and got[position][1].startswith("range proof: "), got
        else:
            assert got[position] == ("ok", envelope.event_id)
    assert result.rounds == (2 if bad_position < len(batch) - 1 else 1)


async def concurrently(verifier: Verifier, items):
    """verifier.apply of every item at once: ('ok', event id) or (code, message) each."""

    async def one(envelope, view, policy):
        try:
            return "ok", (await verifier.apply(envelope, view, policy)).event_id
        except Rejection as rejection:
            return rejection.code, rejection.message

    return await asyncio.gather(*(one(*item) for item in items))


@pytest.mark.parametrize("max_batch", [1, 3, 8])
async def test_the_verifier_batches_what_waits_up_to_its_bound(world, honest, max_batch):
    """One worker: the first publication is verified alone at once (no timer), the
    others, which arrived meanwhile, in batches of at most `max_batch`."""
    envelopes, views = honest
    policy = policy_of(world)
    batch = list(envelopes)
    batch[3] = corrupted(world, envelopes[3], FAULTS[1])
    verifier = Verifier("thread", workers=1, max_batch=max_batch)
    got = await concurrently(verifier, [(e, v, policy) for e, v in zip(batch, views, strict=True)])
    assert got == [verdict_alone(e, v, policy) for e, v in zip(batch, views, strict=True)]
    assert got[3][0] is Code.BAD_PROOF and got[3][1].startswith("loss-cap proof: ")
    assert sum(size * n for size, n in verifier.batch_sizes.items()) == LOTS
    assert max(verifier.batch_sizes) == min(max_batch, LOTS - 1)
    assert verifier.batch_sizes[1] >= 1  # the first one did not wait for company


async def test_through_the_service_only_the_bad_publications_are_refused_and_nothing_of_them_written(
    world, store, api_settings, honest
):
    envelopes, _ = honest
    bad_positions = {0: FAULTS[2], 4: FAULTS[0]}
    batch = [corrupted(world, e, bad_positions[i]) if i in bad_positions else e for i, e in enumerate(envelopes)]
    ingestion = Ingestion(store, api_settings, Verifier("thread", workers=1, max_batch=8))
    before = await snapshot(store)

    async def one(envelope):
        try:
            return await ingestion.publish(envelope.to_json())
        except Rejection as rejection:
            return rejection

    results = await asyncio.gather(*(one(e) for e in batch))
    await assert_only_the_bad_refused(store, world, batch, results, bad_positions, before)
    # the honest versions of the refused ones land afterwards
    for i in bad_positions:
        assert (await ingestion.publish(envelopes[i].to_json())).event_id == envelopes[i].event_id


def result_ids(world, envelope) -> list[str]:
    from ledger import statements as st

    return st.output_lot_ids(world.network, envelope.signer, envelope.nonce, len(envelope.payload.outputs))

async def assert_only_the_bad_refused(store, world, batch, results, bad_positions, before) -> None:
    """Each publication at a position of `bad_positions` was refused BAD_PROOF naming its
    proof and nothing of it was written; every other one was accepted with its own event
    id; the ledger grew by exactly the accepted ones since the snapshot `before`."""
    for i, result in enumerate(results):
        if i in bad_positions:
            assert isinstance(result, Rejection) and result.code is Code.BAD_PROOF, result
            assert result.message.startswith(f"{bad_positions[i][2]}: ")
            assert await store.accepted_publication(batch[i].event_id) is None
            assert await store.lots_by_ids(result_ids(world, batch[i])) == {}
        else:
            assert not isinstance(result, Rejection), result
            assert result.event_id == batch[i].event_id
    after = await snapshot(store)
    assert after["events"] == before["events"] + len(batch) - len(bad_positions)


def test_the_batch_size_setting_is_bounded():
    assert Settings().verify_max_batch == 8
    assert Settings.from_env({"ORETRACE_VERIFY_MAX_BATCH": "1"}).verify_max_batch == 1
    assert Settings(verify_max_batch=64).verify_max_batch == 64
    for bad in (0, -1, 65):
        with pytest.raises(ValidationError):
            Settings(verify_max_batch=bad)
    for text in ("0", "65", "eight", "2.5"):  # a clear error naming the setting, at start-up
        with pytest.raises(SettingsError, match="verify_max_batch"):
            Settings.from_env({"ORETRACE_VERIFY_MAX_BATCH": text})
    with pytest.raises(ValueError):
        Verifier("thread", workers=1, max_batch=0)


def test_the_verifier_worker_count_is_bounded():
    """ORETRACE_VERIFY_WORKERS=100000 would start that many verifier processes (process
    mode warms every one up at start-up): refused at start-up, naming the setting, as
    `oretrace verify` refuses such an ORETRACE_BUNDLE_WORKERS."""
    from crypto.batch import most_workers

    most = most_workers()
    assert Settings.from_env({"ORETRACE_VERIFY_WORKERS": str(most)}).verify_workers == most
    assert Settings.from_env({"ORETRACE_VERIFY_WORKERS": "1"}).verify_workers == 1
    for text in ("0", "-1", str(most + 1), "100000", "9" * 40, "two"):
        with pytest.raises(SettingsError, match="verify_workers"):
            Settings.from_env({"ORETRACE_VERIFY_WORKERS": text})


def test_one_verification_lane_by_default_its_msms_on_every_core():
    """Thread mode: one lane (a batch keeps the publications in flight together) whose
    MSMs run on every core; process mode: a process per core, one thread each."""
    from crypto.batch import cores

    assert Settings().verify_workers is None and Settings().msm_threads is None
    lane = Verifier("thread")
    assert (lane.workers, lane.msm_threads) == (1, cores())
    processes = Verifier("process")
    assert (processes.workers, processes.msm_threads) == (cores(), 1)
    assert Verifier("thread", workers=3).msm_threads == max(1, cores() // 3)
    assert Verifier("process", workers=1, msm_threads=5).msm_threads == 5
    for bad in (0, -1, True, 2.5, "2"):
        with pytest.raises(ValueError, match="msm_threads"):
            Verifier("thread", msm_threads=bad)


def test_the_msm_thread_setting_is_bounded():
    from crypto.batch import most_workers

    most = most_workers()
    assert Settings.from_env({"ORETRACE_MSM_THREADS": "2"}).msm_threads == 2
    assert Settings.from_env({"ORETRACE_MSM_THREADS": str(most)}).msm_threads == most
    for text in ("0", "-1", str(most + 1), "9" * 40, "two", "1.5"):
        with pytest.raises(SettingsError, match="msm_threads"):
            Settings.from_env({"ORETRACE_MSM_THREADS": text})


async def test_the_verifier_gives_its_workers_their_msm_threads(store, api_settings):
    """The setting reaches the server's verifier, in this process (thread mode) and in
    each verifier process (process mode)."""
    from crypto.group import msm_threads, set_msm_threads

    before = msm_threads()
    try:
        ingestion = Ingestion(store, api_settings.model_copy(update={"msm_threads": 3}))
        assert ingestion.verifier.msm_threads == 3
        await ingestion.start()
        assert msm_threads() == 3
        ingestion.close()
        verifier = Verifier("process", workers=1, msm_threads=2)
        try:
            await verifier.start()
            loop = asyncio.get_running_loop()
            assert await loop.run_in_executor(verifier._process_pool(), msm_threads) == 2
        finally:
            verifier.close()
    finally:
        set_msm_threads(before)


@pytest.mark.parametrize("bad", [(), (0,), (LOTS - 1,), (1, 2)], ids=["none", "first", "last", "adjacent"])
async def test_the_same_verdicts_with_the_msms_split_over_threads(world, honest, bad, monkeypatch):
    """The server's lane splits every MSM of a batch (and of its bisection) over the
    cores: the verdicts and the MSM rounds are those of one thread."""
    from crypto import group

    items = batch_with_bad(world, honest, bad)
    before = group.msm_threads()
    try:
        group.set_msm_threads(1)
        one = verify_publications(items)
        group.set_msm_threads(2)
        parts = []
        submit = group._msm_threads.pool.submit
        monkeypatch.setattr(group._msm_threads.pool, "submit", lambda *a: parts.append(1) or submit(*a))
        split = verify_publications(items)
    finally:
        group.set_msm_threads(before)
    assert [verdict_in_batch(v) for v in split.verdicts] == [verdict_in_batch(v) for v in one.verdicts]
    assert split.rounds == one.rounds == expected_rounds(bad)
    assert len(parts) >= split.rounds  # every round's MSM ran in two parts at least


async def test_a_hung_verifier_process_is_service_unavailable_within_the_deadline_and_replaced(
    world, store, api_settings
):
    """SIGSTOP the warmed-up worker (a hang: it neither answers nor dies); the
    publication answers SERVICE_UNAVAILABLE once the request deadline passes,
    the hung process is killed, nothing is written, and the same envelope lands
    on a fresh pool."""
    ingestion = Ingestion(
        store, api_settings.model_copy(update={"request_deadline_seconds": 5.0}), Verifier("process", workers=1)
    )
    try:
        await ingestion.start()
        (hung_pid,) = list(ingestion.verifier._pool._processes)  # the executor's own table of live workers
        envelope = world.register("vb-hung", "oem").to_json()
        before = await snapshot(store)
        os.kill(hung_pid, signal.SIGSTOP)
        with pytest.raises(Rejection) as info:
            await ingestion.publish(envelope)
        assert info.value.code is Code.SERVICE_UNAVAILABLE, info.value
        assert await snapshot(store) == before
        for _ in range(100):  # the pool's kill is sent when the batch's deadline passes
            if not pid_alive(hung_pid):
                break
            await asyncio.sleep(0.1)
        assert not pid_alive(hung_pid)
        # the retry, on a fresh (cold) pool, with room for its start-up
        ingestion.settings = api_settings
        outcome = await ingestion.publish(envelope)
        assert outcome.type == "register_organization"
        assert (await snapshot(store))["events"] == before["events"] + 1
    finally:
        ingestion.close()


def pid_alive(pid: int) -> bool:
    """False once the process is gone (or a zombie: killed, not yet reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


def off_curve_point(hex_proof: str, offset: int) -> str:
    """The proof with the point at `offset` replaced by a compressed encoding whose x
    is not on the curve (it passes the proof's shape checks; only decoding refuses it)."""
    from crypto.group import POINT_BYTES, DecodeError, backend, decode_checked

    raw = bytes.fromhex(hex_proof)
    for x in range(1, 100):
        enc = bytes([0x80]) + x.to_bytes(POINT_BYTES - 1, "big")
        try:
            decode_checked(backend(), enc)
        except DecodeError:
            return (raw[:offset] + enc + raw[offset + POINT_BYTES :]).hex()
    raise AssertionError("no off-curve x below 100")


@pytest.mark.parametrize("deferred", [False, True], ids=["server", "deferred-decoding"])
@pytest.mark.parametrize("false_at, malformed_at", [(0, 2), (1, LOTS - 1), (3, 4)])
async def test_a_malformed_point_after_a_false_proof_leaves_neither_accepted(
    world, honest, false_at, malformed_at, deferred
):
    """An envelope with a false equation before one with an off-curve point.

    In the server (points decoded by the rules) the off-curve point is the rules'
    MALFORMED; with deferred decoding (`ledger.proofs.batch_scope`) the batch names
    it first WITHOUT a bisection, so nothing before it was checked: the envelope
    with the false equation must still be re-checked and refused. (Accepting the
    envelopes before a named one is only sound when a bisection verified them.)"""
    from ledger.proofs import batch_scope

    envelopes, views = honest
    policy = policy_of(world)
    batch = list(envelopes)
    batch[false_at] = corrupted(world, envelopes[false_at], FAULTS[0])
    batch[malformed_at] = corrupted(
        world, envelopes[malformed_at], ("range_proof", lambda h: off_curve_point(h, 0), "range proof")
    )
    scope = batch_scope(workers=0) if deferred else contextlib.nullcontext()
    with scope:
        result = verify_publications([(e, v, policy) for e, v in zip(batch, views, strict=True)])
    got = [verdict_in_batch(v) for v in result.verdicts]
    for position, (envelope, view) in enumerate(zip(batch, views, strict=True)):
        with batch_scope(workers=0) if deferred else contextlib.nullcontext():
            assert got[position] == verdict_alone(envelope, view, policy)
        if position not in (false_at, malformed_at):
            assert got[position] == ("ok", envelope.event_id)
    assert got[false_at][0] is Code.BAD_PROOF and got[false_at][1].startswith("range proof: "), got
    if deferred:
        assert got[malformed_at][0] is Code.BAD_PROOF and "malformed point" in got[malformed_at][1], got
    else:
        assert got[malformed_at][0] is Code.MALFORMED, got


@pytest.mark.parametrize("bad", [(), (0,), (LOTS - 1,), (0, 1), tuple(range(LOTS - 1))],
                         ids=["none", "first", "last", "two", "all-but-one"])  # fmt: skip
async def test_the_msms_a_bad_publication_costs_its_batch(world, honest, bad, monkeypatch):
    """Counts the MSMs (`crypto.batch._local_sum`) of a batch: each bad publication
    costs one failing MSM, the bisection over the batch's relations (ceil(log2 R)
    MSMs, each of them including the shared bases) and the confirmation alone;
    then one passing round. Prints the counts and sizes (docs/performance.md)."""
    import math

    import crypto.batch as batch_module

    sizes: list[int] = []
    local_sum = batch_module._local_sum

    def counting(f):
        sizes.append(2 * len(f.g_vec) + 2 + len(f.decoded) + len(f.deferred))
        return local_sum(f)

    monkeypatch.setattr(batch_module, "_local_sum", counting)
    items = batch_with_bad(world, honest, bad)
    relation_count = 0
    for envelope, view, policy in items:
        from ledger.proofs import BatchCollector

        proofs = BatchCollector()
        rules.apply(envelope, view, policy, proofs)
        relation_count += len(proofs.relations)
    sizes.clear()
    result = verify_publications(items)
    print(f"\nbad={len(bad)} of {LOTS}, {relation_count} relations: {len(sizes)} MSMs, sizes {sizes}")
    assert [verdict_in_batch(v)[0] == "ok" for v in result.verdicts] == [i not in bad for i in range(LOTS)]
    bound = len(bad) * (2 + math.ceil(math.log2(relation_count))) + expected_rounds(bad) - len(bad)
    assert len(sizes) <= bound
    if bad:  # the bisection's MSMs do not halve: the shared bases are in (nearly) every one
        assert sorted(sizes)[len(sizes) // 2] >= 1000


class ExplodingView:
    """A ledger view whose every lookup raises crypto's DecodeError: an unexpected
    fault of the rules with an exception that does not survive pickling (its
    __init__ takes two arguments), as any bug in a verifier process could."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        from crypto.errors import DecodeError

        raise DecodeError("point", "a fault of the rules (test)")


async def test_in_process_mode_a_fault_on_one_publication_stays_with_it(world, honest):
    """Process mode: the faulting publication gets an error of its own; the honest
    ones of its batch their verdicts (not SERVICE_UNAVAILABLE from a broken pool)."""
    envelopes, views = honest
    policy = policy_of(world)
    verifier = Verifier("process", workers=1, max_batch=3)
    try:
        await verifier.start()
        items = [(envelopes[0], views[0], policy), (envelopes[1], ExplodingView(), policy),
                 (envelopes[2], views[2], policy)]  # fmt: skip

        async def one(item):
            try:
                return "ok", (await verifier.apply(*item)).event_id
            except Rejection as rejection:
                return rejection.code, rejection.message
            except Exception as exc:  # noqa: BLE001 - the unexpected fault, for this one only
                return "error", f"{type(exc).__name__}: {exc}"

        got = await asyncio.gather(*(one(item) for item in items))
        assert got[0] == ("ok", envelopes[0].event_id), got
        assert got[2] == ("ok", envelopes[2].event_id), got
        assert got[1][0] == "error" and "DecodeError" in got[1][1], got
    finally:
        verifier.close()
