"""The verifier's gathering window (`api.service.Verifier`, `ORETRACE_VERIFY_GATHER_MS`).

A free verifier may hold a batch for publications announced upstream
(`Verifier.upstream()`, held by the ingestion from parsing to the verifier).
These tests use real signed transformations prefetched from the real embedded
database (the fixtures of tests/test_verification_batches.py) and assert on
what the verifier records (`batch_sizes`, `gathers`), never on time: the
window is set far longer than any test, so a batch that forms at all formed
because of the announcements, not of a timer (a publication's arrival is
moved back in time where a test needs its window to have passed). The tests
of a window's end use a short one and only wait for its outcome.

* an idle server (nothing announced) verifies one publication alone, at once,
  directly and through the ingestion service;
* publications announced together are verified as one batch, which goes as
  soon as the last announced one arrives or the batch is full;
* a bad proof in such a batch gets its own BAD_PROOF (the same verdict as
  alone), the honest ones are accepted, and only they are written;
* a request cancelled while held in the window is not verified, and the
  others still are; an announced publication that never arrives (rejected
  earlier, or a resend) releases the held batch at once;
* the setting's bounds are refused at start-up with a message naming it.
"""

from __future__ import annotations

import asyncio

import pytest
from pydantic import ValidationError

from api.service import Ingestion, Verifier
from api.settings import Settings, SettingsError
from ledger.errors import Code, Rejection

from test_verification_batches import (  # noqa: F401 - `honest`, `refiner_lots` are fixtures
    FAULTS,
    LOTS,
    assert_only_the_bad_refused,
    corrupted,
    honest,
    policy_of,
    refiner_lots,
    snapshot,
    verdict_alone,
)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

#: a window no test lasts: whatever forms, formed without the timer
LONG = 3600.0


async def arriving(verifier: Verifier, items, gates):
    """One task per item: announced (`upstream()`) now, it reaches `verifier.apply`
    when its gate is set. Returns the tasks; each ends with ('ok', event id) or
    (code, message)."""

    async def one(item, gate):
        with verifier.upstream():
            await gate.wait()
        try:
            return "ok", (await verifier.apply(*item)).event_id
        except Rejection as rejection:
            return rejection.code, rejection.message

    tasks = [asyncio.create_task(one(item, gate)) for item, gate in zip(items, gates, strict=True)]
    await asyncio.sleep(0)  # every task announced
    return tasks


async def settle() -> None:
    """Let the event loop run every ready callback a few times (no time passes)."""
    for _ in range(5):
        await asyncio.sleep(0)


async def test_an_idle_verifier_verifies_one_publication_at_once(world, honest):
    envelopes, views = honest
    verifier = Verifier("thread", workers=1, max_batch=8, gather_seconds=LONG)
    effects = await asyncio.wait_for(verifier.apply(envelopes[0], views[0], policy_of(world)), 60)
    assert effects.event_id == envelopes[0].event_id
    assert verifier.batch_sizes == {1: 1}
    assert verifier.gathers == 0  # never held


@pytest.fixture(scope="module")
async def spare(world, publish, refiner_lots):
    """Two more transformations of the refiner (not published), for the tests that
    publish: the other tests' envelopes stay unpublished."""
    _, att = refiner_lots
    envelopes = []
    for _ in range(2):
        env, lot_id = world.issue(att, 4_000_000)
        await publish(env)
        await publish(world.transfer("mine-vb", lot_id, "ref-vb"))
        envelopes.append(world.transform("ref-vb", [lot_id])[0])
    return envelopes


async def test_an_idle_server_publishes_one_transformation_without_holding_it(store, api_settings, spare):
    envelopes = spare
    ingestion = Ingestion(store, api_settings, Verifier("thread", workers=2, max_batch=8, gather_seconds=LONG))
    for envelope in envelopes:  # one after the other: each alone on the server
        outcome = await asyncio.wait_for(ingestion.publish(envelope.to_json()), 60)
        assert outcome.event_id == envelope.event_id
    assert ingestion.verifier.batch_sizes == {1: 2}
    assert ingestion.verifier.gathers == 0


@pytest.mark.parametrize("bad", [(), (0,), (2,), (3,), (0, 3)], ids=["none", "first", "middle", "last", "two"])
async def test_announced_publications_form_one_batch_each_with_its_own_verdict(world, honest, bad):
    """Four announced, arriving one by one: the first three are held (the window is
    far longer than the test), the last to arrive releases one batch of four."""
    envelopes, views = honest
    policy = policy_of(world)
    batch = [corrupted(world, e, FAULTS[n % len(FAULTS)]) if n in bad else e for n, e in enumerate(envelopes[:4])]
    items = [(e, v, policy) for e, v in zip(batch, views[:4], strict=True)]
    verifier = Verifier("thread", workers=2, max_batch=8, gather_seconds=LONG)
    gates = [asyncio.Event() for _ in items]
    tasks = await arriving(verifier, items, gates)
    for gate in gates[:-1]:
        gate.set()
        await settle()
        assert not verifier.batch_sizes  # held: more are announced
    gates[-1].set()
    got = await asyncio.wait_for(asyncio.gather(*tasks), 60)
    assert verifier.batch_sizes == {4: 1}
    assert verifier.gathers == 1
    assert got == [verdict_alone(*item) for item in items]
    for n, verdict in enumerate(got):
        if n in bad:
            name = FAULTS[n % len(FAULTS)][2]
            assert verdict[0] is Code.BAD_PROOF and verdict[1].startswith(f"{name}: "), verdict
        else:
            assert verdict == ("ok", batch[n].event_id)


@pytest.mark.parametrize("max_batch", [2, 3])
async def test_a_full_batch_goes_without_waiting_for_the_rest(world, honest, max_batch):
    envelopes, views = honest
    policy = policy_of(world)
    items = [(e, v, policy) for e, v in zip(envelopes, views, strict=True)]  # LOTS of them
    verifier = Verifier("thread", workers=1, max_batch=max_batch, gather_seconds=LONG)
    gates = [asyncio.Event() for _ in items]
    tasks = await arriving(verifier, items, gates)
    for gate in gates[:max_batch]:
        gate.set()
    await settle()
    assert verifier.batch_sizes == {max_batch: 1}  # full: went while others were still announced
    for gate in gates[max_batch:]:
        gate.set()
    got = await asyncio.wait_for(asyncio.gather(*tasks), 60)
    assert got == [("ok", e.event_id) for e in envelopes]
    assert sum(size * n for size, n in verifier.batch_sizes.items()) == LOTS
    assert max(verifier.batch_sizes) == max_batch


async def test_an_announced_publication_that_never_arrives_releases_the_held_batch(world, honest):
    envelopes, views = honest
    policy = policy_of(world)
    verifier = Verifier("thread", workers=1, max_batch=8, gather_seconds=LONG)
    refused_early = asyncio.Event()

    async def rejected_before_the_verifier():
        with verifier.upstream():
            await refused_early.wait()
            raise Rejection(Code.UNKNOWN_SIGNER, "refused before the verifier")

    doomed = asyncio.create_task(rejected_before_the_verifier())
    await asyncio.sleep(0)
    first = asyncio.create_task(verifier.apply(envelopes[0], views[0], policy))
    await settle()
    assert not verifier.batch_sizes and verifier.gathers == 1  # held for the announced one
    refused_early.set()
    assert (await asyncio.wait_for(first, 60)).event_id == envelopes[0].event_id
    assert verifier.batch_sizes == {1: 1}
    with pytest.raises(Rejection):
        await doomed


@pytest.mark.parametrize("cancelled", [0, 1])
async def test_a_request_cancelled_in_the_window_is_not_verified_and_the_others_are(world, honest, cancelled):
    """Three announced; two arrive and are held; one of those is cancelled (its
    client went away); the third arrives: a batch of the two live ones."""
    envelopes, views = honest
    policy = policy_of(world)
    items = [(e, v, policy) for e, v in zip(envelopes[:3], views[:3], strict=True)]
    verifier = Verifier("thread", workers=1, max_batch=8, gather_seconds=LONG)
    gates = [asyncio.Event() for _ in items]
    tasks = await arriving(verifier, items, gates)
    gates[0].set()
    gates[1].set()
    await settle()
    assert not verifier.batch_sizes
    tasks[cancelled].cancel()
    await settle()
    gates[2].set()
    live = [task for n, task in enumerate(tasks) if n != cancelled]
    got = await asyncio.wait_for(asyncio.gather(*live), 60)
    assert got == [("ok", envelopes[n].event_id) for n in range(3) if n != cancelled]
    assert verifier.batch_sizes == {2: 1}
    with pytest.raises(asyncio.CancelledError):
        await tasks[cancelled]


async def test_the_only_held_request_cancelled_leaves_nothing_behind(world, honest):
    envelopes, views = honest
    verifier = Verifier("thread", workers=1, max_batch=8, gather_seconds=LONG)
    with verifier.upstream():  # announced, never arrives while the other is held
        held = asyncio.create_task(verifier.apply(envelopes[0], views[0], policy_of(world)))
        await settle()
        held.cancel()
        await settle()
    await settle()
    assert held.cancelled()
    assert not verifier.batch_sizes
    # the verifier still serves the next one, alone and at once
    effects = await asyncio.wait_for(verifier.apply(envelopes[1], views[1], policy_of(world)), 60)
    assert effects.event_id == envelopes[1].event_id
    assert verifier.batch_sizes == {1: 1}


async def test_through_the_service_concurrent_publications_are_gathered_and_only_the_bad_refused(
    world, store, api_settings, honest
):
    """Publications sent together are all announced before the first reaches the
    verifier (each task runs to its first database round trip inside its
    `upstream()` scope): one batch of all of them."""
    envelopes, _ = honest
    bad_positions = {1: FAULTS[0], 4: FAULTS[1]}
    batch = [corrupted(world, e, bad_positions[i]) if i in bad_positions else e for i, e in enumerate(envelopes)]
    ingestion = Ingestion(store, api_settings, Verifier("thread", workers=2, max_batch=8, gather_seconds=LONG))
    before = await snapshot(store)

    async def one(envelope):
        try:
            return await ingestion.publish(envelope.to_json())
        except Rejection as rejection:
            return rejection

    results = await asyncio.wait_for(asyncio.gather(*(one(e) for e in batch)), 120)
    assert ingestion.verifier.batch_sizes == {LOTS: 1}
    await assert_only_the_bad_refused(store, world, batch, results, bad_positions, before)


def test_the_gathering_window_setting_is_bounded():
    assert Settings().verify_gather_ms == DEFAULT_GATHER_MS
    assert Settings.from_env({"ORETRACE_VERIFY_GATHER_MS": "0"}).verify_gather_ms == 0
    assert Settings.from_env({"ORETRACE_VERIFY_GATHER_MS": "2.5"}).verify_gather_ms == 2.5
    assert Settings(verify_gather_ms=50).verify_gather_ms == 50
    for bad in (-1, -0.001, 50.001, 1000, float("nan"), float("inf")):
        with pytest.raises(ValidationError):
            Settings(verify_gather_ms=bad)
    for text in ("-1", "51", "nan", "inf", "five", "5ms"):  # a clear error naming the setting, at start-up
        with pytest.raises(SettingsError, match="verify_gather_ms"):
            Settings.from_env({"ORETRACE_VERIFY_GATHER_MS": text})
    for bad in (-1, -0.5, float("nan")):
        with pytest.raises(ValueError, match="gather_seconds"):
            Verifier("thread", workers=1, gather_seconds=bad)


@pytest.fixture
def one_busy_batch(monkeypatch):
    """`api.service.verify_publications` that holds the batch starting with a given
    envelope in its worker until released: a worker kept busy on demand."""
    import threading

    import api.service

    verify = api.service.verify_publications
    held: dict = {}

    def holding(items):
        gate = held.get(id(items[0][0]))
        if gate is not None:
            gate.wait(60)
        return verify(items)

    def hold(envelope) -> threading.Event:
        held[id(envelope)] = threading.Event()
        return held[id(envelope)]

    monkeypatch.setattr(api.service, "verify_publications", holding)
    yield hold
    for gate in held.values():  # a test that failed early must not leave a worker blocked
        gate.set()


#: the window of the case where it must run out: short enough for a test to outwait
SHORT = 0.2


@pytest.mark.parametrize("cohort_arrives", [True, False], ids=["cohort-arrives", "cohort-never-arrives"])
async def test_a_publication_queued_behind_a_busy_worker_still_waits_for_its_cohort(
    world, honest, one_busy_batch, cohort_arrives
):
    """One worker, busy. The first of a cohort arrives and queues; two more are
    announced. By the time the worker frees, the first has waited longer than the
    window. It is still held, from when the worker freed (not from its arrival),
    and goes in one batch with the two others when they arrive; if they never do,
    its own window (counted from the worker's freeing) sends it alone."""
    envelopes, views = honest
    policy = policy_of(world)
    items = [(e, v, policy) for e, v in zip(envelopes[:4], views[:4], strict=True)]
    window = LONG if cohort_arrives else SHORT
    verifier = Verifier("thread", workers=1, max_batch=8, gather_seconds=window)
    release = one_busy_batch(envelopes[0])
    busy = asyncio.create_task(verifier.apply(*items[0]))  # nothing announced: goes at once
    await settle()
    gates = [asyncio.Event(), asyncio.Event()]
    cohort = await arriving(verifier, items[2:], gates)  # announced, not arrived
    first = asyncio.create_task(verifier.apply(*items[1]))  # queues behind the busy worker
    await settle()
    verifier._waiting[0].arrived -= 2 * window  # its window, counted from its arrival, has passed
    assert verifier.batch_sizes == {1: 1} and verifier._running == 1
    release.set()
    assert (await asyncio.wait_for(busy, 60)).event_id == envelopes[0].event_id
    await settle()
    # the first is held, in the callback that freed the worker (not sent at once); with the
    # short window its timer may already have sent it by now on a slow machine: count gathers
    assert verifier.gathers == 1
    if cohort_arrives:
        assert verifier.batch_sizes == {1: 1}
        for gate in gates:
            gate.set()
        got = await asyncio.wait_for(asyncio.gather(first, *cohort), 60)
        assert [v.event_id for v in got[:1]] + [v[1] for v in got[1:]] == [e.event_id for e in envelopes[1:4]]
        assert verifier.batch_sizes == {1: 1, 3: 1} and verifier.gathers == 1
    else:
        assert (await asyncio.wait_for(first, 60)).event_id == envelopes[1].event_id  # the timer sent it
        assert verifier.batch_sizes == {1: 2}
        for gate in gates:  # late: the first of them is held for the second, a new window
            gate.set()
        got = await asyncio.wait_for(asyncio.gather(*cohort), 60)
        assert [v[1] for v in got] == [e.event_id for e in envelopes[2:4]]
        assert verifier.batch_sizes == {1: 2, 2: 1} and verifier.gathers == 2


async def test_a_hold_that_ends_early_leaves_no_timer_behind(world, honest):
    """A hold released because nothing is announced any more (or the batch is full)
    cancels its timer: left pending, it would end the NEXT hold early, counted from
    the old publication's arrival instead of the new one's."""
    envelopes, views = honest
    policy = policy_of(world)
    items = [(e, v, policy) for e, v in zip(envelopes[:2], views[:2], strict=True)]
    verifier = Verifier("thread", workers=1, max_batch=8, gather_seconds=LONG)
    gates = [asyncio.Event(), asyncio.Event()]
    tasks = await arriving(verifier, items, gates)
    gates[0].set()
    await settle()
    assert verifier.gathers == 1 and verifier._gather_timer is not None  # the first is held
    gates[1].set()  # the last announced arrives: the batch goes without its timer
    got = await asyncio.wait_for(asyncio.gather(*tasks), 60)
    assert [v[1] for v in got] == [e.event_id for e in envelopes[:2]]
    assert verifier.batch_sizes == {2: 1} and verifier._gather_timer is None


#: the documented default (docs/operations.md)
DEFAULT_GATHER_MS = 10.0


@pytest.mark.parametrize("renewed", [False, True], ids=["one-never-arrives", "a-stream-of-slow-ones"])
async def test_announcements_that_never_stop_cannot_hold_a_publication_past_its_window(world, honest, renewed):
    """An attacker keeps `Verifier.upstream()` busy for ever: one announcement that
    never reaches the verifier, or a stream of them, each entering before the
    previous leaves (slow publications, or ones refused before the verifier).
    The held publication still goes alone when its own window ends (the timer),
    and the next one is held at most its own window too: no wait lasts longer."""
    envelopes, views = honest
    policy = policy_of(world)
    verifier = Verifier("thread", workers=1, max_batch=8, gather_seconds=0.05)
    stop = asyncio.Event()

    async def announcing_for_ever():
        scope = verifier.upstream()
        scope.__enter__()
        while not stop.is_set():
            if renewed:  # the next announcement enters before this one leaves: never 0 announced
                await asyncio.sleep(0.01)
                following = verifier.upstream()
                following.__enter__()
                scope.__exit__(None, None, None)
                scope = following
            else:
                await stop.wait()
        scope.__exit__(None, None, None)

    attacker = asyncio.create_task(announcing_for_ever())
    await asyncio.sleep(0)
    try:
        for n in range(2):
            effects = await asyncio.wait_for(verifier.apply(envelopes[n], views[n], policy), 60)
            assert effects.event_id == envelopes[n].event_id
            assert verifier._upstream > 0  # announced the whole time
        assert verifier.batch_sizes == {1: 2}
        assert verifier.gathers == 2  # each was held, once, and released by its own window's end
    finally:
        stop.set()
        await asyncio.wait_for(attacker, 60)
