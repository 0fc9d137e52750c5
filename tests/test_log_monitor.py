"""sdk.monitor against a real server over HTTP: passes on an honest log, resumes from its
state, reports a split view and a second consumption written straight into the database,
naming the leaf."""

from __future__ import annotations

import pytest

from conftest import build_chain
from ledger import checkpoint as cp
from ledger.models import RegisterLogKey
from sdk.monitor import Monitor


@pytest.fixture(scope="module")
async def honest(app, world, publish, live_server, root_key):
    log = app.state.runtime.store.translog
    await publish(world.sign(RegisterLogKey(origin=log.origin, public_key=bytes(log.signing_key.verify_key).hex()),
                             "operator"))  # fmt: skip
    chain = await build_chain(world, publish, suffix="-mon")
    await log.advance()
    return chain, root_key.verify_key.encode().hex()


async def test_monitor_passes_on_an_honest_log_and_resumes(honest, app, world, publish, live_server, tmp_path):
    _chain, root = honest
    seen = []
    report = await Monitor(live_server, root, tmp_path).run(lambda done, total: seen.append((done, total)))
    assert report.ok, [str(v) for v in report.violations]
    assert report.size == report.checkpoint.size and seen[-1] == (report.size, report.size)
    assert report.range_proofs > 0
    await publish(world.register("mon-late", "trader"))
    await app.state.runtime.store.translog.advance()
    resumed = await Monitor(live_server, root, tmp_path).run()
    assert resumed.ok and resumed.size == report.size + 1
    assert resumed.range_proofs == 0  # only the new registration was replayed


async def test_monitor_reports_a_split_view(honest, app, live_server, tmp_path):
    _chain, root = honest
    log = app.state.runtime.store.translog
    served = cp.parse_checkpoint_body(cp.parse_note(await log.latest_checkpoint()).text)
    other = cp.sign_checkpoint(cp.Checkpoint(served.origin, served.size, bytes(32)), log.origin, log.signing_key)
    monitor = Monitor(live_server, root, tmp_path)
    monitor.add_checkpoint_text(other.encode())  # shown to someone else by the same log key
    report = await monitor.run()
    kinds = {v.kind for v in report.violations}
    assert "split view" in kinds and "inconsistent checkpoint" in kinds


async def test_monitor_names_a_second_consumption_written_into_the_database(honest, app, world, store, live_server,
                                                                             tmp_path):  # fmt: skip
    chain, root = honest
    # the chain's trader already merged its two lots; a forged second transform consumes them again
    envelope, _outs = world.transform(f"trader-mon", chain.issued, process="merge")
    head = await store.db.log_state.find_one_and_update({"_id": "head"}, {"$inc": {"size": 1}})
    index = head["size"]
    await store.events.insert_one({"_id": envelope.event_id, "seq": 10**9, "type": "transform", "signer": "trader-mon",
                                   "lot_ids": [], "accepted_at": "2026-01-01T00:00:00Z",
                                   "envelope": envelope.to_json(), "log_index": index})  # fmt: skip
    await app.state.runtime.store.translog.advance()
    report = await Monitor(live_server, root, tmp_path).run()
    assert not report.ok
    [violation] = report.violations
    assert violation.leaf == index and violation.kind == "LOT_CONSUMED", str(violation)
