"""Group commit past a deadline (review of issue 11): a batch run again after its deadline
passed, and a member whose own deadline passed while its batch (bounded by a later
member's deadline) was run again after a lost commit answer.

`pymongo.timeout(0)` means NO time limit (pymongo's `_csot`: a falsy timeout sets no
deadline), so a batch attempt started with no time left must not be run at all; and a
member refused as a resend of itself after a lost commit answer is told its original
outcome, or OUTCOME_UNKNOWN, never SERVICE_UNAVAILABLE "nothing was written".
"""

from __future__ import annotations

import asyncio
import contextvars

import pytest
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.errors import AutoReconnect, OperationFailure

from api.service import PublishOutcome
from conftest import LedgerWorld
from ledger import rules
from ledger.errors import Code, Rejection
from ledger.proofs import VerifyNow
from ledger.view import MemoryView
from test_api_faults import admin, fault_db  # noqa: F401 - the fault database and its admin client (fixtures)
from test_group_commit import BATCHED, assert_ledger_order, build_setup, fresh_ingestion, in_one_batch, ledger_of, names

DRIVER_COMMIT = AsyncClientSession.commit_transaction


def lost_then_forgotten(monkeypatch, *, before_losing) -> list[None]:
    """The next commit applies, then `await before_losing()`, then its answer is lost
    (UnknownTransactionCommitResult); the retried commit finds no transaction
    (NoSuchTransaction, TransientTransactionError: a restarted database). Later commits are real."""
    calls: list[None] = []

    async def commit_transaction(session: AsyncClientSession) -> None:
        calls.append(None)
        if len(calls) == 1:
            await DRIVER_COMMIT(session)
            await before_losing()
            lost = AutoReconnect("connection closed before the commit's answer")
            lost._add_error_label("UnknownTransactionCommitResult")
            raise lost
        if len(calls) == 2:
            raise OperationFailure("Transaction with txnNumber 1 has been aborted", 251,
                                   {"ok": 0, "code": 251, "errorLabels": ["TransientTransactionError"]})  # fmt: skip
        await DRIVER_COMMIT(session)

    monkeypatch.setattr(AsyncClientSession, "commit_transaction", commit_transaction)
    return calls


async def sleep_until(loop: asyncio.AbstractEventLoop, when: float) -> None:
    await asyncio.sleep(max(0.0, when - loop.time()) + 0.2)


@pytest.mark.parametrize("first_run", ["write-conflict", "commit-answer-lost"])
async def test_a_batch_is_not_run_again_without_a_time_limit_once_its_deadline_passed(
    fault_db, admin, api_settings, root_key, monkeypatch, first_run
):
    """The first run of a lone member's batch fails retryably once its deadline has passed
    (a write conflict: nothing written; a lost commit answer, the commit applied): the
    batch is not run again with no time limit (before: `pymongo.timeout(0)`, unbounded, so a
    database that stalls then, here a blocked insert, holds the member for as long as it
    stalls). The member is refused SERVICE_UNAVAILABLE and unwritten, or OUTCOME_UNKNOWN
    (its commit applied), and resubmitting it gives its outcome."""
    world = LedgerWorld(root_key)
    loop = asyncio.get_running_loop()
    async with fresh_ingestion(fault_db.uri, api_settings, BATCHED) as ingestion:
        store = ingestion.store
        registration = world.register(f"gc-late-{first_run}", "trader")
        effects = rules.apply(registration, MemoryView(), ingestion.policy(), VerifyNow())
        deadline = loop.time() + 3.0
        body, runs, stalled = store._transaction_body, [], []
        stall = {"failCommands": ["insert"], "blockConnection": True, "blockTimeMS": 3000}

        async def past_the_deadline() -> None:
            await sleep_until(loop, deadline)
            stalled.append(None)  # the database stalls for the batch's next run
            arm = admin.admin.command({"configureFailPoint": "failCommand", "mode": "alwaysOn", "data": stall})
            await asyncio.create_task(arm, context=contextvars.Context())  # not under the batch's expired timeout

        async def transaction_body(session, members, attribute_lot_writes):
            await body(session, members, attribute_lot_writes)
            runs.append(len(members))
            if first_run == "write-conflict" and len(runs) == 1:
                await past_the_deadline()
                raise OperationFailure("WriteConflict", 112, {"ok": 0, "code": 112, "errorLabels": ["TransientTransactionError"]})

        monkeypatch.setattr(store, "_transaction_body", transaction_body)
        if first_run == "commit-answer-lost":
            lost_then_forgotten(monkeypatch, before_losing=past_the_deadline)
        try:
            result = await asyncio.gather(store.apply_effects(effects, deadline=deadline), return_exceptions=True)
        finally:
            monkeypatch.undo()
            if stalled:
                await admin.admin.command({"configureFailPoint": "failCommand", "mode": "off"})
        assert runs[:1] == [1]  # the first run wrote everything before the deadline passed
        [refused] = result
        assert isinstance(refused, Rejection), refused
        written = await store.events.count_documents({"_id": effects.event_id})
        if first_run == "write-conflict":
            assert refused.code is Code.SERVICE_UNAVAILABLE and "deadline" in refused.message, refused
            assert written == 0
        else:
            assert refused.code is Code.OUTCOME_UNKNOWN, refused
            assert written == 1
        outcome = await ingestion.publish(registration.to_json())
        assert outcome.event_id == effects.event_id and outcome.seq == 1
        assert_ledger_order(await ledger_of(store))


async def test_a_member_that_landed_and_whose_deadline_passed_is_never_told_nothing_was_written(
    fault_db, api_settings, root_key, monkeypatch
):
    """Two members in one batch, the first with a short deadline, the second a long one (the
    batch runs within the latest). The commit applies, its answer is lost after the first
    member's deadline passed, the retried commit finds no transaction; the batch is run
    again (within the second's deadline) and both members are refused as resends of
    themselves (REPLAYED_NONCE). Looking up the first member's original outcome then
    cannot run within its deadline: it must get OUTCOME_UNKNOWN (before: SERVICE_UNAVAILABLE
    "nothing was written", although it was), the second its original outcome."""
    tag = "gcd-landed"
    world = LedgerWorld(root_key)
    setup = build_setup(world, tag, mine_lots=3, trader_lots=0)
    n, m = names(tag), setup.mine_lots
    plug, short, long_ = (world.transfer(n.mine, lot, n.trader) for lot in m)
    loop = asyncio.get_running_loop()
    async with fresh_ingestion(fault_db.uri, api_settings, BATCHED) as ingestion:
        store = ingestion.store
        for env in setup.envelopes:
            await ingestion.publish(env.to_json())
        base = ingestion.settings
        deadlines: dict[str, float] = {}

        async def send(env):
            seconds = 3.0 if env is short else 60.0
            monkeypatch.setattr(ingestion, "settings", base.model_copy(update={"request_deadline_seconds": seconds}))
            deadlines[env.event_id] = loop.time() + seconds
            return await ingestion.publish(env.to_json())

        body = store._transaction_body

        async def transaction_body(session, members, attribute_lot_writes):
            await body(session, members, attribute_lot_writes)
            if len(members) == 2 and not calls:
                lost_then_forgotten(monkeypatch, before_losing=lambda: sleep_until(loop, deadlines[short.event_id]))
                calls.append(None)

        calls: list[None] = []
        monkeypatch.setattr(store, "_transaction_body", transaction_body)
        try:
            plug_result, results = await in_one_batch(store, send, plug, [short, long_])
        finally:
            monkeypatch.undo()
        assert calls and isinstance(plug_result, PublishOutcome), plug_result
        first, second = results
        assert await store.events.count_documents({"_id": {"$in": [short.event_id, long_.event_id]}}) == 2
        assert isinstance(second, PublishOutcome) and second.event_id == long_.event_id, second
        if isinstance(first, Rejection):
            assert first.code is Code.OUTCOME_UNKNOWN, first
        else:
            assert isinstance(first, PublishOutcome) and first.event_id == short.event_id, first
        again = await ingestion.publish(short.to_json())
        assert again.event_id == short.event_id and again.seq == second.seq - 1
        assert_ledger_order(await ledger_of(store))
