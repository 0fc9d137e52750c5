"""The log on the real embedded database: leaf indices assigned in the publication's
transaction (gap-free under concurrency), the integrator's tiles equal an in-memory
RFC 9162 tree, proofs from tiles verify, restarts resume, the HTTP read API."""

from __future__ import annotations

import asyncio

import pytest
from nacl.signing import SigningKey

from api import translog
from ledger import checkpoint as cp
from ledger import merkle
from ledger.encoding import canonical_json

from conftest import build_chain

LOG_KEY = SigningKey(bytes([3] * 32))
ORIGIN = "oretrace.log/oretrace-test"


def new_log(store) -> translog.TransparencyLog:
    return translog.TransparencyLog(store.db, ORIGIN, LOG_KEY, checkpoint_interval=0.05)


async def logged_envelopes(store) -> list[dict]:
    docs = await store.events.find({}, {"log_index": 1, "envelope": 1}).sort("log_index", 1).to_list(None)
    return docs


@pytest.fixture(scope="module")
async def chain(world, publish):
    return await build_chain(world, publish)


async def test_indices_are_gap_free_in_commit_order(store, chain):
    docs = await logged_envelopes(store)
    assert [d["log_index"] for d in docs] == list(range(len(docs)))
    by_seq = await store.events.find({}, {"seq": 1, "log_index": 1}).sort("seq", 1).to_list(None)
    # every event's dependencies committed first: log order is a valid replay order, as seq is
    assert [d["log_index"] for d in by_seq] == sorted(d["log_index"] for d in by_seq)


async def test_twenty_concurrent_publications_get_distinct_gap_free_indices(store, world, publish, chain):
    before = await store.events.count_documents({})
    envelopes = [world.register(f"conc-{i}", "trader") for i in range(20)]
    outcomes = await asyncio.gather(*(publish(e) for e in envelopes))
    indices = sorted(o.log_index for o in outcomes)
    assert indices == list(range(before, before + 20))
    docs = await logged_envelopes(store)
    assert [d["log_index"] for d in docs] == list(range(len(docs)))


async def test_rejected_publication_takes_no_index(store, world, publish, chain):
    head = await store.db.log_state.find_one({"_id": translog.HEAD_ID})
    with pytest.raises(Exception):
        await publish(world.register("mine", "mine"))  # already registered
    assert await store.db.log_state.find_one({"_id": translog.HEAD_ID}) == head


async def test_integrator_tiles_equal_memory_tree_and_proofs_verify(store, chain):
    log = new_log(store)
    size = await log.integrate()
    docs = await logged_envelopes(store)
    assert size == len(docs)
    tree = merkle.MemoryTree.from_entries(canonical_json(d["envelope"]) for d in docs)
    assert (await log.tree()).root == tree.root()
    tile = await log.tile(0, 0, size)
    assert tile == b"".join(tree.levels[0][:size])
    for old in range(size + 1):
        proof = await log.consistency_proof(old, size)
        merkle.verify_consistency(old, size, tree.root(old), tree.root(), proof)
    proofs = await log.inclusion_proofs(list(range(size)), size)
    for i, proof in enumerate(proofs):
        merkle.verify_inclusion(tree.levels[0][i], i, size, proof, tree.root())


async def test_checkpoint_is_signed_c2sp_and_covers_the_tree(store, chain):
    log = new_log(store)
    note = await log.advance()
    checkpoint, _ = cp.open_checkpoint(note, ORIGIN, [log.key])
    assert checkpoint.size == (await log.tree()).size
    assert checkpoint.root == (await log.tree()).root


async def test_integrator_resumes_after_losing_its_memory_and_after_a_torn_write(store, world, publish, chain):
    log = new_log(store)
    await log.integrate()
    # a torn write: tiles written past the recorded size, then a crash before the size update
    more = [world.register(f"resume-{i}", "trader") for i in range(3)]
    for e in more:
        await publish(e)
    await log.integrate()
    tree_doc = await store.db.log_state.find_one({"_id": translog.TREE_ID})
    await store.db.log_state.update_one({"_id": translog.TREE_ID}, {"$set": {"size": tree_doc["size"] - 2}})
    restarted = new_log(store)
    assert await restarted.integrate() == tree_doc["size"]
    assert (await restarted.tree()).root == bytes(tree_doc["root"])


async def test_two_api_replicas_publishing_concurrently_stay_gap_free(store, mongo_uri, api_settings, world, chain):
    """Two Store objects (two connection pools, two sequencers: two API processes) on one database:
    their transactions conflict on the log head and are retried, never duplicated or skipped."""
    from api.service import Ingestion
    from api.store import Store

    other = await Store.connect(mongo_uri, api_settings.database)
    ingestions = [Ingestion(store, api_settings), Ingestion(other, api_settings)]
    try:
        before = await store.events.count_documents({})
        envelopes = [world.register(f"replica-{i}", "trader") for i in range(10)]
        outcomes = await asyncio.gather(
            *(ingestions[i % 2].publish(e.to_json()) for i, e in enumerate(envelopes))
        )
        assert sorted(o.log_index for o in outcomes) == list(range(before, before + 10))
    finally:
        for ingestion in ingestions:
            ingestion.close()
        await other.close()
