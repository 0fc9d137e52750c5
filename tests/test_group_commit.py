"""Group commit (batched sequencing): several publications per transaction (issue 11).

`Store.apply_effects` writes the publications that waited for the sequencer in
one transaction. Every scenario here is run twice on fresh databases of the real
embedded SecantusDB, with the same envelopes in the same queue order: once with
ORETRACE_MAX_PUBLICATIONS_PER_TRANSACTION=1 (each publication alone in its
transaction: the reference) and once batched. Both runs must give every
publication the same outcome (event id, lots, seq and log index; or the same
code and message) and leave the same ledger; the batched run must actually have
committed transactions of more than one publication (`StoreStats.batch_sizes`).

How a batch is formed without timing: the test holds the store's
`log_sequencer`, publishes a "plug" (taken by the sequencer, which then waits
for the lock), then each member in turn, each waiting in the queue before the
next is sent (so the queue order is the list order); releasing the lock
commits the plug alone and then the members together.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings as hsettings, strategies as st
from nacl.signing import SigningKey
from pymongo import AsyncMongoClient

from api.service import Ingestion, PublishOutcome
from api.settings import Settings, SettingsError
from api import translog
from api.store import Store
from conftest import LedgerWorld, fresh_database_name
from ledger import merkle, rules
from ledger.encoding import canonical_json
from ledger.errors import Code, Rejection
from ledger.proofs import VerifyNow
from ledger.view import MemoryView
from test_api_faults import admin, failpoint, fault_db  # noqa: F401 - the fault database (fixtures) and failpoints

BATCHED = 8


# --------------------------------------------------------------------------- scenario


@dataclass
class Setup:
    """Registered organisations, an attested site, issued lots (held by the mine) and
    some of them transferred to the trader: the same envelopes for every database."""

    world: LedgerWorld
    envelopes: list[Any]
    mine_lots: list[str]  # held by the mine
    trader_lots: list[str]  # held by the trader


def build_setup(world: LedgerWorld, tag: str, mine_lots: int = 3, trader_lots: int = 3) -> Setup:
    auditor, mine, trader = f"gc-aud-{tag}", f"gc-mine-{tag}", f"gc-trader-{tag}"
    envelopes = [world.register(auditor, "auditor"), world.register(mine, "mine"), world.register(trader, "trader")]
    env, att = world.attest(auditor, mine, f"gc-site-{tag}")
    envelopes.append(env)
    lots = []
    for i in range(mine_lots + trader_lots):
        env, lot_id = world.issue(att, 1_000_000 + i)
        envelopes.append(env)
        lots.append(lot_id)
    for lot_id in lots[mine_lots:]:
        envelopes.append(world.transfer(mine, lot_id, trader))
    return Setup(world, envelopes, lots[:mine_lots], lots[mine_lots:])


@dataclass
class Names:
    mine: str
    trader: str


def names(tag: str) -> Names:
    return Names(f"gc-mine-{tag}", f"gc-trader-{tag}")


# --------------------------------------------------------------------------- running a scenario


@dataclass
class Run:
    outcomes: list[Any]  # per member: ("accepted", event id, lots, seq, log index) or (code, message)
    plug: Any
    ledger: dict[str, Any]
    batch_sizes: dict[int, int] = field(default_factory=dict)


async def until(condition: Callable[[], bool], what: str) -> None:
    """Wait for a state of the store (not for a time); fail if it never comes."""
    for _ in range(12_000):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"never reached: {what}")


def normal(result: Any) -> Any:
    if isinstance(result, PublishOutcome):
        return ("accepted", result.event_id, tuple(result.lot_ids), result.seq, result.log_index)
    if isinstance(result, Rejection):
        return (result.code, result.message)
    raise result


async def ledger_of(store: Store) -> dict[str, Any]:
    """The ledger's content that must not depend on batching (no acceptance times)."""
    events = await store.events.find({}, {"accepted_at": 0}).sort("seq", 1).to_list(None)
    out: dict[str, Any] = {"events": events}
    for name in ("lots", "nonces", "guards", "sealed_openings", "claims", "issuance_marks", "organizations"):
        docs = await store.db[name].find({}, {"_signed_events": 0}).sort("_id", 1).to_list(None)
        out[name] = docs
    out["head"] = await store.db.log_state.find_one({"_id": "head"})
    return out


@contextlib.asynccontextmanager
async def fresh_ingestion(mongo_uri: str, base: Settings, per_transaction: int) -> AsyncIterator[Ingestion]:
    settings = base.model_copy(
        update={"database": fresh_database_name("gc"), "max_publications_per_transaction": per_transaction}
    )
    store = await Store.connect(mongo_uri, settings.database)
    await store.ensure_indexes()
    ingestion = Ingestion(store, settings)
    try:
        yield ingestion
    finally:
        ingestion.close()
        await store.drop()
        await store.close()


async def in_one_batch(store: Store, send: Callable[[Any], Awaitable[Any]], plug, members: list) -> tuple[Any, list[Any]]:
    """`send(plug)`, then `send(m)` for each of `members` in this queue order, all waiting for
    one sequencer turn of `store`; the raw results (exceptions returned, not raised). `send` is
    any path to `store` (the ingestion service, a GraphQL mutation through the app)."""
    async with store.log_sequencer:
        plug_task = asyncio.create_task(send(plug))
        await until(
            lambda: store._sequencer is not None and not store._sequencer.done() and not store._pending,
            "the plug taken by the sequencer",
        )
        tasks = []
        for i, env in enumerate(members):
            tasks.append(asyncio.create_task(send(env)))
            # a member the rules refuse never waits: then its task is done
            await until(lambda: len(store._pending) == i + 1 - sum(t.done() for t in tasks), f"member {i} waiting")
    results = await asyncio.gather(*tasks, return_exceptions=True)
    plug_result = await asyncio.gather(plug_task, return_exceptions=True)
    return plug_result[0], results


async def publish_in_one_batch(ingestion: Ingestion, plug, members: list) -> tuple[Any, list[Any]]:
    """Publish `plug`, then `members` in this queue order, all waiting for one sequencer turn."""

    async def publish(env):
        return await ingestion.publish(env.to_json())

    plug_result, results = await in_one_batch(ingestion.store, publish, plug, members)
    return normal(plug_result), [normal(r) for r in results]


async def run_scenario(mongo_uri: str, base: Settings, per_transaction: int, setup: Setup, plug, members) -> Run:
    async with fresh_ingestion(mongo_uri, base, per_transaction) as ingestion:
        for env in setup.envelopes:
            await ingestion.publish(env.to_json())
        ingestion.store.stats.batch_sizes.clear()
        plug_outcome, outcomes = await publish_in_one_batch(ingestion, plug, members)
        ledger = await ledger_of(ingestion.store)
        return Run(outcomes, plug_outcome, ledger, dict(ingestion.store.stats.batch_sizes))


async def alone_and_batched(mongo_uri: str, base: Settings, setup: Setup, plug, members) -> Run:
    """Both runs; asserts they agree and that the batched one formed a batch; the batched run."""
    alone = await run_scenario(mongo_uri, base, 1, setup, plug, members)
    batched = await run_scenario(mongo_uri, base, BATCHED, setup, plug, members)
    assert set(alone.batch_sizes) == {1}
    assert batched.plug == alone.plug
    assert batched.outcomes == alone.outcomes
    assert batched.ledger == alone.ledger
    written = {o[1] for o in batched.outcomes if o[0] == "accepted"}  # resends share their original's
    if len(written) > 1:
        assert max(batched.batch_sizes) > 1, batched.batch_sizes
    assert_ledger_order(batched.ledger)
    return batched


def assert_ledger_order(ledger: dict[str, Any]) -> None:
    seqs = [e["seq"] for e in ledger["events"]]
    indices = [e["log_index"] for e in ledger["events"]]
    assert seqs == list(range(1, len(seqs) + 1))
    assert indices == list(range(len(indices)))
    assert ledger["head"]["size"] == len(indices) and ledger["head"]["seq"] == len(seqs)


def codes(run: Run) -> list[Any]:
    return [o[0] for o in run.outcomes]


A = "accepted"


# --------------------------------------------------------------------------- valid batches


@pytest.mark.parametrize("k", [2, 5])
async def test_concurrent_valid_publications_share_a_transaction_and_match_one_at_a_time(
    mongo_uri, api_settings, root_key, k
):
    tag = f"ok{k}"
    world = LedgerWorld(root_key)
    setup = build_setup(world, tag)
    n, t, m = names(tag), setup.trader_lots, setup.mine_lots
    plug, _ = world.transform(n.trader, [t[0]])
    builders = [
        lambda: world.transform(n.trader, [t[1]])[0],
        lambda: world.transfer(n.mine, m[0], n.trader),
        lambda: world.transform(n.trader, [t[2]], shares=[0.5, 0.5])[0],
        lambda: world.transfer(n.mine, m[1], n.trader),
        lambda: world.transfer(n.mine, m[2], n.trader),
    ]
    members = [build() for build in builders[:k]]
    run = await alone_and_batched(mongo_uri, api_settings, setup, plug, members)
    assert codes(run) == [A] * k
    assert run.batch_sizes == {1: 1, k: 1}  # the plug alone, then the members in one transaction


async def test_the_log_over_batched_events_verifies(mongo_uri, api_settings, root_key):
    """Leaves of a batch, integrated by the log: in seq order, each with an RFC 9162 inclusion
    proof that verifies against the root of the entries recomputed here."""
    tag = "logv"
    world = LedgerWorld(root_key)
    setup = build_setup(world, tag)
    n, t, m = names(tag), setup.trader_lots, setup.mine_lots
    plug, _ = world.transform(n.trader, [t[0]])
    members = [world.transform(n.trader, [t[1]])[0], world.transfer(n.mine, m[0], n.trader),
               world.transform(n.trader, [t[2]])[0], world.transfer(n.mine, m[1], n.trader)]  # fmt: skip
    async with fresh_ingestion(mongo_uri, api_settings, BATCHED) as ingestion:
        store = ingestion.store
        for env in setup.envelopes:
            await ingestion.publish(env.to_json())
        _, outcomes = await publish_in_one_batch(ingestion, plug, members)
        assert [o[0] for o in outcomes] == [A] * len(members) and max(store.stats.batch_sizes) == len(members)
        shown = {"log_index": 1, "seq": 1, "envelope": 1}
        events = await store.events.find({}, shown).sort("log_index", 1).to_list(None)
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
        log = translog.TransparencyLog(store.db, "oretrace.log/gc-test", SigningKey(bytes([5] * 32)))
        size = await log.integrate()
        assert size == len(events)
        leaves = [merkle.leaf_hash(canonical_json(e["envelope"])) for e in events]
        root = merkle.MemoryTree.from_leaf_hashes(leaves).root()
        batched = [o[4] for o in outcomes]
        for index, proof in zip(batched, await log.inclusion_proofs(batched, size), strict=True):
            merkle.verify_inclusion(leaves[index], index, size, proof, root)


async def test_identical_envelopes_in_one_batch_get_the_same_outcome(mongo_uri, api_settings, root_key):
    world = LedgerWorld(root_key)
    setup = build_setup(world, "dup", mine_lots=2, trader_lots=1)
    n = names("dup")
    plug = world.transfer(n.mine, setup.mine_lots[0], n.trader)
    env = world.transfer(n.mine, setup.mine_lots[1], n.trader)
    run = await alone_and_batched(mongo_uri, api_settings, setup, plug, [env, env, env])
    assert codes(run) == [A, A, A] and len(set(run.outcomes)) == 1  # the resend finds the original


# --------------------------------------------------------------------------- conflicts in a batch


def conflict_case(world: LedgerWorld, setup: Setup, n: Names, case: str) -> tuple[Any, list, list]:
    """(plug, members, expected outcome of each member) of scenario `case`."""
    from ledger.builders import build_transfer

    t, m = setup.trader_lots, setup.mine_lots

    def transfer_with_nonce(lot_id: str, nonce: str):
        openings = world.members[n.mine].openings[lot_id]
        payload = build_transfer(lot_id=lot_id, to=n.trader, openings=openings,
                                 receiver_sealing_key=world.members[n.trader].sealing_public)  # fmt: skip
        return world.sign(payload, n.mine, nonce=nonce)

    if case == "double spend in the batch":  # the same lot consumed twice, between valid members
        first, _ = world.transform(n.trader, [t[1]])
        second, _ = world.transform(n.trader, [t[1]], shares=[0.4, 0.6])
        return (
            world.transfer(n.mine, m[0], n.trader),
            [world.transfer(n.mine, m[1], n.trader), first, second, world.transform(n.trader, [t[2]])[0]],
            [A, A, Code.CONFLICT, A],
        )
    if case == "double spend against a committed lot":  # consumed by the plug, validated before it committed
        plug, _ = world.transform(n.trader, [t[0]])
        return (
            plug,
            [world.transform(n.trader, [t[1]])[0], world.transform(n.trader, [t[0]], shares=[0.3, 0.7])[0],
             world.transfer(n.mine, m[1], n.trader)],
            [A, Code.CONFLICT, A],
        )  # fmt: skip
    if case == "replayed nonces in the batch and against the plug":
        nonce, other = world.nonce(), world.nonce()
        return (
            transfer_with_nonce(m[0], nonce),
            [world.transform(n.trader, [t[1]])[0], transfer_with_nonce(m[1], other),
             transfer_with_nonce(m[2], other), transfer_with_nonce(m[2], nonce)],
            [A, A, Code.REPLAYED_NONCE, Code.REPLAYED_NONCE],
        )  # fmt: skip
    if case == "a key revoked just before the batch":  # by the plug, after the members were verified
        return (
            world.revoke(n.trader),
            [world.transfer(n.mine, m[0], n.trader), world.transform(n.trader, [t[1]])[0],
             world.transfer(n.mine, m[1], n.trader), world.transform(n.trader, [t[2]])[0]],
            [A, Code.REVOKED_KEY, A, Code.REVOKED_KEY],
        )  # fmt: skip
    # one lot transferred and consumed by two members (custody move against consumption,
    # no shared guard), in both orders: the first in the queue wins, as in sequence
    if case == "transfer then consumption of one lot":
        return (
            world.transfer(n.mine, m[0], n.trader),
            [world.transfer(n.trader, t[1], n.mine), world.transform(n.trader, [t[1]])[0]],
            [A, Code.CONFLICT],
        )
    if case == "consumption then transfer of one lot":
        return (
            world.transfer(n.mine, m[0], n.trader),
            [world.transform(n.trader, [t[2]])[0], world.transfer(n.trader, t[2], n.mine)],
            [A, Code.CONFLICT],
        )
    raise ValueError(case)


CONFLICTS = [
    "double spend in the batch",
    "double spend against a committed lot",
    "replayed nonces in the batch and against the plug",
    "a key revoked just before the batch",
    "transfer then consumption of one lot",
    "consumption then transfer of one lot",
]


@pytest.mark.parametrize("case", CONFLICTS)
async def test_refused_members_get_their_alone_outcome_and_the_others_are_written(
    mongo_uri, api_settings, root_key, case
):
    tag = f"c{CONFLICTS.index(case)}"
    world = LedgerWorld(root_key)
    setup = build_setup(world, tag)
    plug, members, expected = conflict_case(world, setup, names(tag), case)
    run = await alone_and_batched(mongo_uri, api_settings, setup, plug, members)
    assert codes(run) == expected
    assert run.plug[0] == A


# --------------------------------------------------------------------------- random mixes (hypothesis)


def collect_mixes(pool_size: int, examples: int) -> list[list[int]]:
    """Random queue orders of pool members (hypothesis draws them; the async runs follow)."""
    mixes: list[list[int]] = []

    @given(st.lists(st.integers(min_value=0, max_value=pool_size - 1), min_size=2, max_size=6))
    @hsettings(max_examples=examples, deadline=None, derandomize=True, database=None)
    def collect(mix: list[int]) -> None:
        mixes.append(mix)

    collect()
    return mixes


async def test_random_mixes_of_valid_and_conflicting_publications_match_one_at_a_time(
    mongo_uri, api_settings, root_key
):
    world = LedgerWorld(root_key)
    setup = build_setup(world, "mix")
    n = names("mix")
    t, m = setup.trader_lots, setup.mine_lots
    pool = [
        world.transform(n.trader, [t[0]])[0],
        world.transform(n.trader, [t[0]], shares=[0.5, 0.5])[0],  # the same lot again
        world.transform(n.trader, [t[1]])[0],
        world.transfer(n.trader, t[1], n.mine),  # against the transform of t[1]
        world.transfer(n.mine, m[0], n.trader),
        world.transfer(n.mine, m[1], n.trader),
        world.transform(n.trader, [t[2]], shares=[0.2, 0.8])[0],
    ]
    plug = world.transfer(n.mine, m[2], n.trader)
    refused = 0
    for mix in collect_mixes(len(pool), 6):
        run = await alone_and_batched(mongo_uri, api_settings, setup, plug, [pool[i] for i in mix])
        refused += sum(c != A for c in codes(run))
    assert refused > 0  # the mixes did contain conflicts


# --------------------------------------------------------------------------- faults during a batch


#: (failCommand data, the members' code: None = a write-concern error after the write). The
#: plug (alone, just before the batch) fails too, except on commitTransaction, where the
#: failpoint skips its commit: an unknown commit may use up the deadline of every publication
#: that waited behind it (they are then SERVICE_UNAVAILABLE, unwritten, which is right but not
#: what this test is about).
FAULTS = [
    ({"failCommands": ["insert"], "errorCode": 11600}, Code.SERVICE_UNAVAILABLE),
    ({"failCommands": ["findAndModify"], "errorCode": 14031}, Code.SERVICE_UNAVAILABLE),
    ({"failCommands": ["update"], "closeConnection": True}, Code.SERVICE_UNAVAILABLE),
    ({"failCommands": ["commitTransaction"], "errorCode": 14031}, Code.SERVICE_UNAVAILABLE),
    ({"failCommands": ["commitTransaction"], "errorCode": 91}, Code.OUTCOME_UNKNOWN),
    ({"failCommands": ["commitTransaction"], "closeConnection": True}, Code.OUTCOME_UNKNOWN),
    ({"failCommands": ["commitTransaction"], "writeConcernError": {"code": 64, "errmsg": "timed out"}}, None),
]


async def traces(store: Store, event_ids: list[str], lots_before: list[dict], spared: set[str]) -> int:
    """Documents written by the publications `event_ids`, and lots (other than `spared`)
    changed since `lots_before`: 0 when nothing of them was written."""
    ids = {"$in": event_ids}
    found = await store.events.count_documents({"_id": ids})
    for name in ("nonces", "guards", "sealed_openings"):
        found += await store.db[name].count_documents({"event_id": ids})
    lots_now = {d["_id"]: d for d in await store.lots.find({"_id": {"$nin": list(spared)}}).to_list(None)}
    return found + sum(lots_now.get(d["_id"]) != d for d in lots_before if d["_id"] not in spared) + (
        len(lots_now) - sum(d["_id"] not in spared for d in lots_before)
    )


@pytest.mark.parametrize("fault, code", FAULTS, ids=[f"{f['failCommands'][0]}-{i}" for i, (f, _) in enumerate(FAULTS)])
async def test_a_fault_during_a_batch_types_every_member_and_resubmission_returns_the_original(
    fault_db, admin, api_settings, root_key, fault, code
):
    tag = f"f{FAULTS.index((fault, code))}"
    world = LedgerWorld(root_key)
    setup = build_setup(world, tag, mine_lots=2, trader_lots=2)
    n = names(tag)
    plug = world.transfer(n.mine, setup.mine_lots[0], n.trader)
    members = [
        world.transform(n.trader, [setup.trader_lots[0]])[0],
        world.transfer(n.mine, setup.mine_lots[1], n.trader),
        world.transform(n.trader, [setup.trader_lots[1]])[0],
    ]
    async with fresh_ingestion(fault_db.uri, api_settings, BATCHED) as ingestion:
        store = ingestion.store
        for env in setup.envelopes:
            await ingestion.publish(env.to_json())
        before = await ledger_of(store)
        on_commit = fault["failCommands"] == ["commitTransaction"]
        async with contextlib.AsyncExitStack() as faulty:
            async with store.log_sequencer:
                tasks = [asyncio.create_task(ingestion.publish(plug.to_json()))]
                await until(lambda: not store._pending and not store._sequencer.done(), "the plug taken")
                for i, env in enumerate(members):
                    tasks.append(asyncio.create_task(ingestion.publish(env.to_json())))
                    await until(lambda: len(store._pending) == i + 1, f"member {i} waiting")
                # all three wait behind the plug: the sequencer's next transaction takes them together
                await faulty.enter_async_context(failpoint(admin, fault, {"skip": 1} if on_commit else "alwaysOn"))
            plug_result, *results = await asyncio.gather(*tasks, return_exceptions=True)
        assert all(isinstance(r, Rejection) for r in results), results
        got = {r.code for r in results}
        member_ids = [e.event_id for e in members]
        landed = await store.events.count_documents({"_id": {"$in": member_ids}})
        if code is None:  # a write-concern error after the write: the commit applied, unconfirmed
            assert len(got) == 1 and got <= {Code.OUTCOME_UNKNOWN, Code.SERVICE_UNAVAILABLE}
            assert landed == len(members)
        else:
            assert got == {code}
            # nothing half-written (and, here, nothing at all)
            assert await traces(store, member_ids, before["lots"], {setup.mine_lots[0]}) == 0
            if on_commit:
                assert isinstance(plug_result, PublishOutcome)
            else:
                assert isinstance(plug_result, Rejection) and await ledger_of(store) == before
        # every one resubmitted: the original outcome if it landed, else written now; then again
        envelopes = [plug, *members]
        outcomes = [normal(await ingestion.publish(env.to_json())) for env in envelopes]
        again = [normal(await ingestion.publish(env.to_json())) for env in envelopes]
        assert outcomes == again and [o[1] for o in outcomes] == [e.event_id for e in envelopes]
        assert_ledger_order(await ledger_of(store))


@pytest.mark.parametrize("resends", [9, 12])
async def test_refused_members_do_not_use_up_the_transient_retries_of_the_others(
    fault_db, admin, api_settings, root_key, resends
):
    """A batch of one envelope sent `resends` + 1 times (each resend refused inside the
    transaction: `resends` runs) and an honest transfer, then transient commit errors:
    the honest member is retried as it would be alone (MAX_TRANSACTION_ATTEMPTS transient
    retries of its own), not failed because the others' refusals counted as attempts."""
    tag = f"budget{resends}"
    world = LedgerWorld(root_key)
    setup = build_setup(world, tag, mine_lots=3, trader_lots=0)
    n = names(tag)
    resent = world.transfer(n.mine, setup.mine_lots[1], n.trader)
    honest = world.transfer(n.mine, setup.mine_lots[2], n.trader)
    members = [resent] * (resends + 1) + [honest]
    transient = {"failCommands": ["commitTransaction"], "errorCode": 112, "errorLabels": ["TransientTransactionError"]}
    async with fresh_ingestion(fault_db.uri, api_settings, 16) as ingestion:
        store = ingestion.store
        for env in setup.envelopes:
            await ingestion.publish(env.to_json())
        plug = rules.apply(world.register(f"gc-{tag}", "trader"), MemoryView(), ingestion.policy(), VerifyNow())
        await store.apply_effects(plug)
        async with contextlib.AsyncExitStack() as faulty:
            async with store.log_sequencer:
                # the plug (a registration written already) is refused inside its transaction: no commit
                plug_task = asyncio.create_task(store.apply_effects(plug))
                await until(
                    lambda: store._sequencer is not None and not store._sequencer.done() and not store._pending,
                    "the plug taken",
                )
                tasks = []
                for i, env in enumerate(members):
                    tasks.append(asyncio.create_task(ingestion.publish(env.to_json())))
                    await until(lambda: len(store._pending) == i + 1, f"member {i} waiting")
                await faulty.enter_async_context(failpoint(admin, transient, {"times": 3}))
            results = await asyncio.gather(*tasks, return_exceptions=True)
        assert isinstance((await asyncio.gather(plug_task, return_exceptions=True))[0], Rejection)
        assert all(isinstance(r, PublishOutcome) for r in results), results
        assert {r.event_id for r in results[:-1]} == {resent.event_id} and results[-1].event_id == honest.event_id
        assert store.stats.rejections.get("REPLAYED_NONCE") == resends + 1 and store.stats.transient_retries == 3
        assert_ledger_order(await ledger_of(store))


async def test_a_cancelled_member_does_not_cancel_its_batch(mongo_uri, api_settings, root_key):
    """Cancelled in flight: its batch commits anyway and resubmission returns the outcome;
    cancelled while still waiting: it leaves the queue and nothing of it is written."""
    world = LedgerWorld(root_key)
    setup = build_setup(world, "cancel", mine_lots=3, trader_lots=1)
    n, m = names("cancel"), setup.mine_lots
    in_flight, kept, waiting = (world.transfer(n.mine, lot, n.trader) for lot in m)
    async with fresh_ingestion(mongo_uri, api_settings, BATCHED) as ingestion:
        store = ingestion.store
        for env in setup.envelopes:
            await ingestion.publish(env.to_json())
        async with store.log_sequencer:
            first = asyncio.create_task(ingestion.publish(in_flight.to_json()))
            await until(lambda: store._sequencer is not None and not store._sequencer.done() and not store._pending,
                        "the first publication taken by the sequencer")  # fmt: skip
            second = asyncio.create_task(ingestion.publish(kept.to_json()))
            await until(lambda: len(store._pending) == 1, "the second waiting")
            third = asyncio.create_task(ingestion.publish(waiting.to_json()))
            await until(lambda: len(store._pending) == 2, "the third waiting")
            first.cancel()
            third.cancel()
            cancelled = await asyncio.gather(first, third, return_exceptions=True)
            assert all(isinstance(c, asyncio.CancelledError) for c in cancelled)
            assert len(store._pending) == 1  # the third left the queue
        kept_outcome = await second
        await until(lambda: store._sequencer.done(), "the sequencer idle")
        assert await store.events.count_documents({"_id": in_flight.event_id}) == 1
        assert await store.events.count_documents({"_id": waiting.event_id}) == 0
        resent = await ingestion.publish(in_flight.to_json())
        assert resent.event_id == in_flight.event_id and resent.seq == kept_outcome.seq - 1
        assert (await ingestion.publish(waiting.to_json())).seq == kept_outcome.seq + 1
        assert_ledger_order(await ledger_of(store))


@pytest.mark.parametrize("late_at", [0, 1])
async def test_a_member_whose_deadline_passed_while_it_waited_is_refused_unwritten(
    mongo_uri, api_settings, root_key, late_at
):
    """The caller's deadline is passed to `apply_effects` (pymongo has no public reader of a
    `pymongo.timeout`): a member whose deadline passed while it waited for the sequencer is
    SERVICE_UNAVAILABLE and unwritten; the publications around it are written in order."""
    world = LedgerWorld(root_key)
    async with fresh_ingestion(mongo_uri, api_settings, BATCHED) as ingestion:
        store, policy, loop = ingestion.store, ingestion.policy(), asyncio.get_running_loop()
        effects = [
            rules.apply(world.register(f"gc-dl{late_at}-{i}", "trader"), MemoryView(), policy, VerifyNow())
            for i in range(3)
        ]
        async with store.log_sequencer:
            tasks = [asyncio.create_task(store.apply_effects(effects[0], deadline=loop.time() + 3600))]
            await until(
                lambda: store._sequencer is not None and not store._sequencer.done() and not store._pending,
                "the plug taken",
            )
            for i, e in enumerate(effects[1:]):
                deadline = loop.time() if i == late_at else loop.time() + 3600
                tasks.append(asyncio.create_task(store.apply_effects(e, deadline=deadline)))
                await until(lambda: len(store._pending) == i + 1, f"member {i} waiting")
        results = await asyncio.gather(*tasks, return_exceptions=True)
        late = effects[1 + late_at]
        refused = results[1 + late_at]
        assert isinstance(refused, Rejection) and refused.code is Code.SERVICE_UNAVAILABLE, refused
        assert "deadline" in refused.message
        assert await store.events.count_documents({"_id": late.event_id}) == 0
        assert await store.db.organizations.count_documents({"_id": f"gc-dl{late_at}-{1 + late_at}"}) == 0
        written = [r for r in results if not isinstance(r, BaseException)]
        assert [r.seq for r in written] == [1, 2] and [r.log_index for r in written] == [0, 1]
        assert_ledger_order(await ledger_of(store))


@pytest.mark.parametrize("cancelled", [1, 2])
async def test_closing_the_store_waits_for_the_batch_in_flight(mongo_uri, api_settings, root_key, cancelled):
    """Server shutdown with a batch in flight whose callers were cancelled (their requests
    ended): `Store.close` lets the sequencer commit it before closing the client, instead of
    failing the transaction under it (and leaving its task pending)."""
    tag = f"close{cancelled}"
    world = LedgerWorld(root_key)
    setup = build_setup(world, tag, mine_lots=3, trader_lots=0)
    n = names(tag)
    envs = [world.transfer(n.mine, lot, n.trader) for lot in setup.mine_lots[:cancelled]]
    settings = api_settings.model_copy(update={"database": fresh_database_name("gc")})
    store = await Store.connect(mongo_uri, settings.database)
    await store.ensure_indexes()
    ingestion = Ingestion(store, settings)
    try:
        for env in setup.envelopes:
            await ingestion.publish(env.to_json())
        async with store.log_sequencer:
            tasks = [asyncio.create_task(ingestion.publish(envs[0].to_json()))]
            await until(
                lambda: store._sequencer is not None and not store._sequencer.done() and not store._pending,
                "the first taken by the sequencer",
            )
            for i, env in enumerate(envs[1:]):
                tasks.append(asyncio.create_task(ingestion.publish(env.to_json())))
                await until(lambda: len(store._pending) == i + 1, f"member {i} waiting")
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            closing = asyncio.create_task(store.close())
            await asyncio.sleep(0)
        await closing
    finally:
        ingestion.close()
    assert store._sequencer.done()
    client: AsyncMongoClient = AsyncMongoClient(mongo_uri)
    try:
        events = client[settings.database].events
        # the first was in flight (written); a second still waiting when cancelled left the queue
        assert await events.count_documents({"_id": envs[0].event_id}) == 1
        assert await events.count_documents({"_id": {"$in": [e.event_id for e in envs[1:]]}}) == 0
        await client.drop_database(settings.database)
    finally:
        await client.close()


@pytest.mark.parametrize(
    "value, says",
    [("0", "greater than or equal to 1"), ("-1", "greater than or equal to 1"),
     ("65", "less than or equal to 64"), ("eight", "valid integer"), ("1.5", "valid integer")],
)  # fmt: skip
def test_out_of_bounds_setting_is_refused_at_start_with_its_name(value, says):
    with pytest.raises(SettingsError) as info:
        Settings.from_env({"ORETRACE_MAX_PUBLICATIONS_PER_TRANSACTION": value})
    assert "max_publications_per_transaction" in str(info.value) and says in str(info.value)


@pytest.mark.parametrize("value", [1, 64])
def test_setting_bounds_are_inclusive(value):
    settings = Settings.from_env({"ORETRACE_MAX_PUBLICATIONS_PER_TRANSACTION": str(value)})
    assert settings.max_publications_per_transaction == value


@pytest.mark.parametrize("value", [0, 65])
async def test_a_store_refuses_an_out_of_bounds_batch_size(mongo_uri, value):
    client: AsyncMongoClient = AsyncMongoClient(mongo_uri)
    try:
        with pytest.raises(ValueError, match="1..64"):
            Store(client, fresh_database_name("gc"), owns_client=False, max_publications_per_transaction=value)
    finally:
        await client.close()


# --------------------------------------------------------------------------- monitoring


@pytest.mark.parametrize("k", [0, 3])
async def test_closing_logs_the_batches_that_formed(mongo_uri, api_settings, root_key, caplog, k):
    """`Ingestion.close` logs one JSON line of `batching()`: every publication sent one at a
    time is a batch of 1 and a transaction of 1; `k` members queued behind a plug share one
    transaction (k = 0: none queued). Closing twice logs it once."""
    tag = f"logged{k}"
    world = LedgerWorld(root_key)
    setup = build_setup(world, tag, mine_lots=3, trader_lots=1)
    n, t, m = names(tag), setup.trader_lots, setup.mine_lots
    plug, _ = world.transform(n.trader, [t[0]])
    members = [world.transfer(n.mine, lot_id, n.trader) for lot_id in m[:k]]
    caplog.set_level(logging.INFO, logger="oretrace.service")
    async with fresh_ingestion(mongo_uri, api_settings, BATCHED) as ingestion:
        for env in setup.envelopes:
            await ingestion.publish(env.to_json())
        plug_outcome, outcomes = await publish_in_one_batch(ingestion, plug, members)
        assert [plug_outcome[0], *(o[0] for o in outcomes)] == [A] * (k + 1)
        expected = ingestion.batching()
    ingestion.close()  # closed already by `fresh_ingestion`: a second close logs nothing more
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("ingestion batching ")]
    assert len(lines) == 1
    logged = json.loads(lines[0].removeprefix("ingestion batching "))
    assert logged == json.loads(json.dumps(expected))
    published = len(setup.envelopes) + 1 + k
    verified = sum(size * count for size, count in expected["verify_batches"].items())
    committed = sum(size * count for size, count in expected["transactions"].items())
    assert verified == committed == published
    assert expected["transactions"] == ({1: len(setup.envelopes) + 1, k: 1} if k else {1: published})


# --------------------------------------------------------------------------- bundles end at the claim


@pytest.mark.parametrize("later", ["transfer", "back_and_forth", "transform", "transform_and_transfer"])
async def test_a_bundle_is_unchanged_by_events_after_its_claim(mongo_uri, api_settings, root_key, later):
    """`Store.bundle_events` carries the claimed lot's history up to the claim only: events
    published after it that name the claimed lot or its ancestors (the claimed lot
    transferred, passed back and forth, refined, refined and its output moved on) leave the
    bundle as it was. Only the transfers are kept out by the seq bound; a later
    transformation is kept out by the rule on transformations that only consume claimed lots."""
    tag = f"cut-{later}"
    world = LedgerWorld(root_key)
    setup = build_setup(world, tag, mine_lots=1, trader_lots=2)
    n, t = names(tag), setup.trader_lots
    async with fresh_ingestion(mongo_uri, api_settings, BATCHED) as ingestion:
        for env in setup.envelopes:
            await ingestion.publish(env.to_json())
        refine, (claimed,) = world.transform(n.trader, [t[0]])
        claim, claim_id = world.claim_excludes(n.trader, claimed)
        for env in (refine, claim):
            assert isinstance(await ingestion.publish(env.to_json()), PublishOutcome)
        before = [e.event_id for e in await ingestion.store.bundle_events(claim_id)]
        assert before[-1] == claim.event_id
        after_claim = []
        if later == "transfer":
            after_claim.append(world.transfer(n.trader, claimed, n.mine))
        elif later == "back_and_forth":
            for _ in range(3):
                after_claim += [world.transfer(n.trader, claimed, n.mine), world.transfer(n.mine, claimed, n.trader)]
        else:
            env, (output,) = world.transform(n.trader, [claimed, t[1]])
            after_claim.append(env)
            if later == "transform_and_transfer":
                after_claim.append(world.transfer(n.trader, output, n.mine))
        for env in after_claim:
            assert isinstance(await ingestion.publish(env.to_json()), PublishOutcome)
        assert [e.event_id for e in await ingestion.store.bundle_events(claim_id)] == before
