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


async def inject(store, envelope) -> int:
    """What a dishonest server could do: log an event its rules would refuse, straight into the database."""
    head = await store.db.log_state.find_one_and_update({"_id": "head"}, {"$inc": {"size": 1}})
    await store.events.insert_one({"_id": envelope.event_id, "seq": 10**9 + head["size"], "type": envelope.payload.type,
                                   "signer": envelope.signer, "lot_ids": [], "accepted_at": "2026-01-01T00:00:00Z",
                                   "envelope": envelope.to_json(), "log_index": head["size"]})  # fmt: skip
    return head["size"]


async def test_monitor_names_each_injected_violation(honest, app, world, store, publish, live_server, tmp_path):
    """Every kind of global fault a bundle cannot see, each written straight into the database:
    the monitor names its leaf and kind (earlier injections stay reported)."""
    chain, root = honest
    trader = "trader-mon"
    first_operator_nonce = (await store.events.find_one({"signer": "operator"}, sort=[("log_index", 1)]))["nonce"]
    cases = [
        # the chain's trader already merged its two lots: consume them again
        (lambda: world.transform(trader, chain.issued, process="merge")[0], "LOT_CONSUMED"),
        # an issuance reusing sequence number 0 of the attestation: a fork of its capacity chain
        (lambda: world.issue(chain.attestation_id, 5, seq=0, record=False)[0], "ISSUANCE_OUT_OF_SEQUENCE"),
        # an operator registration reusing an earlier operator nonce
        (lambda: world.sign(RegisterLogKey(origin="x.example/log", public_key="11" * 32), "operator",
                            nonce=first_operator_nonce), "global invariant"),  # fmt: skip
    ]
    for make, kind in cases:
        index = await inject(store, make())
        await app.state.runtime.store.translog.advance()
        report = await Monitor(live_server, root, tmp_path / kind).run()
        assert any(v.leaf == index and v.kind == kind for v in report.violations), [str(v) for v in report.violations]
    # an event by a key after its revocation (the revocation itself goes through the API)
    await publish(world.revoke(trader))
    index = await inject(store, world.transfer(trader, chain.refined[1], "oem-mon"))
    await app.state.runtime.store.translog.advance()
    report = await Monitor(live_server, root, tmp_path / "revoked").run()
    assert any(v.leaf == index and v.kind == "REVOKED_KEY" for v in report.violations), [str(v) for v in report.violations]
