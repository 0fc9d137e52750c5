"""Review of the transparency log (issue 12): hostile inputs to the read API and the witness."""

from __future__ import annotations

import base64
import copy
import time

import pytest
from nacl.signing import SigningKey

from conftest import build_chain
from ledger import checkpoint as cp
from ledger import merkle
from ledger.bundle import verify_bundle
from test_log_bundle import WITNESS, WITNESS_KEY, anchored, failed  # noqa: F401 - anchored: the shared fixture

ODD_TILE_PATHS = [
    "/tile/0/000", "/tile/0/000.p/0", "/tile/0/000.p/256", "/tile/0/000.p/255", "/tile/0/000.p/1",
    "/tile/0/x000/000", "/tile/0/x001/000", "/tile/0/x999/x999/x999/x999/x999/x999/x999/999",
    "/tile/0/x999/x999/x999/x999/x999/x999/x999/x999/999", "/tile/63/000", "/tile/64/000",
    "/tile/entries/000", "/tile/entries/000.p/1", "/tile/entries/000.p/0", "/tile/entries/x999/x999/999.p/7",
    "/tile/../checkpoint", "/tile/0/../../etc/passwd", "/tile/0/%2e%2e/000", "/tile/0/000/", "/tile//000",
    "/tile/", "/tile/0", "/tile/0/", "/tile/0/00\u0663", "/tile/\u0663/000", "/tile/0/000.p/\u00b2",
    "/tile/0/000.p/01", "/tile/0/000.p/-1", "/tile/0/000.p/1e3", "/tile/0/-01", "/tile/0/x-01/000",
    "/tile/0/000.p/1.p/2", "/tile/entries/000.p/256", "/tile/1/000.p/1", "/tile/0/%00", "/tile/0/000%0a",
    "/tile/0/" + "x000/" * 500 + "000", "/tile/" + "9" * 5000 + "/000",
]  # fmt: skip


@pytest.fixture(scope="module")
async def logged(app, world, publish):
    await build_chain(world, publish, suffix="-rv")
    await app.state.runtime.store.translog.advance()


@pytest.mark.parametrize("path", ODD_TILE_PATHS)
async def test_odd_tile_paths_never_5xx(logged, client, path):
    response = await client.get(path)
    assert response.status_code in (200, 400, 404), (path, response.status_code, response.text[:200])


async def test_witness_keeps_one_evidence_file_per_checkpoint_whatever_the_proof(tmp_path):
    """Anyone can resend a log-signed checkpoint with a wrong proof or extra signature lines:
    the evidence folder must not grow with each variation."""
    from test_log_witness import LOG_KEY, ORIGIN, make_witness, request

    w = make_witness(tmp_path)
    assert (await w.add_checkpoint(request(0, 5))).status == 200
    note = request(0, 9).split(b"\n\n", 1)[1]
    stranger = cp.sign_note(cp.parse_note(note).text, "someone.else", SigningKey(bytes([7] * 32))).line().encode()
    for i in range(6):
        proof = base64.b64encode(bytes([i]) * 32) + b"\n"
        extra = stranger * (i % 3)
        assert (await w.add_checkpoint(b"old 5\n" + proof + b"\n" + note + extra)).status == 422
    kept = list((tmp_path / "evidence").iterdir())
    assert len(kept) == 1
    evidence = kept[0].read_bytes().split(b"\n", 1)[1]
    assert cp.open_checkpoint(evidence, ORIGIN, [cp.key_from_signing_key(ORIGIN, LOG_KEY)])[0].size == 9
    assert b"someone.else" not in evidence


def run_cli(*args: str):
    from typer.testing import CliRunner

    from sdk.cli import app as cli

    return CliRunner().invoke(cli, list(args))


async def test_publisher_and_cli_keep_a_checked_receipt_per_publication(
    logged, app, live_server, api_settings, root_key, tmp_path
):
    """Issue 12 point 4: every accepted publication is kept with its leaf index, and a checkpoint
    that includes it with the inclusion proof once available; a server that proves another
    leaf than it acknowledged gets no receipt."""
    import asyncio

    from ledger.anchoring import entry_leaf_hash
    from ledger.envelope import parse_envelope
    from sdk.client import Client
    from sdk.publisher import Publisher
    from sdk.receipts import ReceiptBook, book_path
    from sdk.wallet import Wallet

    log_key = app.state.runtime.store.translog.key
    net = api_settings.network
    operator = Wallet.generate("operator", net, key_id="root")
    operator.signing_seed = bytes(root_key)
    wallet_file = tmp_path / "operator.json"
    operator.save(wallet_file)
    members = [Wallet.generate(f"rcpt-{i}", net, name=f"R{i}", country="CD", roles=["trader"]) for i in range(3)]
    url = f"{live_server}/graphql"
    async with Client(url) as client:
        first = await Publisher(operator, client, fetch_receipts=True).register_wallet(members[0])
        book = ReceiptBook(book_path(wallet_file))
        receipt = book.receipt(first.event_id)
        assert receipt is not None and receipt.log_index == first.log_index and not book.pending()
        checkpoint, _ = cp.open_checkpoint(receipt.checkpoint, log_key.name, [log_key])
        envelope = parse_envelope(book.publications[first.event_id]["envelope"])
        merkle.verify_inclusion(entry_leaf_hash(envelope), receipt.log_index, checkpoint.size,
                                [bytes.fromhex(h) for h in receipt.inclusion_proof], checkpoint.root)  # fmt: skip

        later = Publisher(operator, client)  # the SDK default: recorded now, fetched on demand
        second = await later.register_wallet(members[1])
        third = await later.register_wallet(members[2])
        assert ReceiptBook(book_path(wallet_file)).pending() == [second.event_id, third.event_id]
        assert [r.event_id for r in await later.collect_receipts()] == [second.event_id, third.event_id]
        assert ReceiptBook(book_path(wallet_file)).pending() == []

        fourth = await later.register_wallet(Wallet.generate("rcpt-x", net, name="X", country="CD", roles=["trader"]))
    book = ReceiptBook(book_path(wallet_file))
    for lie in (fourth.log_index - 1, fourth.log_index + 1):
        book.publications[fourth.event_id]["log_index"] = lie  # as if the mutation had acknowledged this leaf
        book._save()
        refused = await asyncio.to_thread(run_cli, "receipts", "--wallet", str(wallet_file), "--api", url)
        assert refused.exit_code == 1, refused.output
        said = " ".join(refused.output.split())  # rich wraps lines
        assert f"acknowledged leaf {lie} for {fourth.event_id}" in said and "PENDING" in said
    book.publications[fourth.event_id]["log_index"] = fourth.log_index
    book._save()
    done = await asyncio.to_thread(run_cli, "receipts", "--wallet", str(wallet_file), "--api", url)
    assert done.exit_code == 0, done.output
    assert f"{fourth.event_id} leaf {fourth.log_index} in checkpoint" in " ".join(done.output.split())
    assert ReceiptBook(book_path(wallet_file)).receipt(fourth.event_id).log_index == fourth.log_index


def test_demo_wallet_directory_with_receipt_books_reloads(tmp_path):
    """`oretrace serve --demo` reloads its wallets from a directory where each publisher now
    also keeps `<org>.receipts.json`: a receipt book is not read as a wallet."""
    from sdk.demo import load_wallets, save_wallets
    from sdk.receipts import ReceiptBook, book_path
    from sdk.wallet import Wallet

    wallets = {org: Wallet.generate(org, "oretrace-test", name=org, country="CD", roles=["trader"])
               for org in ("alpha", "beta")}  # fmt: skip
    save_wallets(wallets, tmp_path)
    for org in wallets:
        ReceiptBook(book_path(tmp_path / f"{org}.json"))._save()
    assert sorted(load_wallets(tmp_path)) == ["alpha", "beta"]


def _cosigned(bundle, *signatures):
    out = copy.deepcopy(bundle)
    note = cp.parse_note(bundle["log"]["checkpoint"])
    out["log"]["checkpoint"] = cp.Note(note.text, note.signatures + tuple(signatures)).encode().decode()
    return out


async def test_quorum_games(anchored):
    """One witness key counts once however it is named; a cosignature under another name, over
    another checkpoint or with an altered timestamp counts for nothing or fails."""
    _chain, bundle, root = anchored
    text = cp.parse_note(bundle["log"]["checkpoint"]).text
    now = int(time.time())
    alias = cp.key_from_signing_key("witness.test/alias", WITNESS, cp.COSIGNATURE_V1)  # same key, second name
    twice = _cosigned(
        bundle, cp.cosign(text, WITNESS_KEY.name, WITNESS, now), cp.cosign(text, alias.name, WITNESS, now)
    )
    assert failed(verify_bundle(twice, root, witnesses=(WITNESS_KEY, alias), min_cosignatures=2)) == "log"
    renamed = cp.key_from_signing_key(WITNESS_KEY.name, SigningKey(bytes([10] * 32)), cp.COSIGNATURE_V1)
    assert failed(verify_bundle(twice, root, witnesses=(WITNESS_KEY, renamed), min_cosignatures=1)) == "log"
    repeated = verify_bundle(twice, root, witnesses=(WITNESS_KEY, WITNESS_KEY), min_cosignatures=1)
    assert repeated.ok and repeated.anchor["cosigners"].keys() == {WITNESS_KEY.name}, repeated.summary
    assert failed(verify_bundle(twice, root, witnesses=(WITNESS_KEY, WITNESS_KEY), min_cosignatures=2)) == "log"

    other = cp.key_from_signing_key("witness.test/other", SigningKey(bytes([12] * 32)), cp.COSIGNATURE_V1)
    good = cp.cosign(text, WITNESS_KEY.name, WITNESS, now)
    wrong_name = cp.Signature(other.name, other.key_id, good.signature)  # w1's signature filed under another witness
    assert failed(verify_bundle(_cosigned(bundle, wrong_name), root, witnesses=(other,), min_cosignatures=1)) == "log"
    stale = cp.parse_checkpoint_body(text)
    older = cp.Checkpoint(stale.origin, stale.size - 1, stale.root)
    replayed = cp.cosign(older.body(), WITNESS_KEY.name, WITNESS, now)  # a cosignature of another checkpoint
    shifted = cp.Signature(good.name, good.key_id, (now + 1).to_bytes(8, "big") + good.signature[8:])
    for bad in (replayed, shifted):
        report = verify_bundle(_cosigned(bundle, bad), root, witnesses=(WITNESS_KEY,), min_cosignatures=1)
        assert failed(report) == "log"


def test_cli_refuses_one_witness_key_under_two_names(tmp_path):
    alias = cp.key_from_signing_key("witness.test/alias", WITNESS, cp.COSIGNATURE_V1)
    bundle = tmp_path / "b.json"
    bundle.write_text("{}")
    result = run_cli("verify", str(bundle), "--root-key", "00" * 32, "--witness", WITNESS_KEY.vkey(),
                     "--witness", alias.vkey(), "--min-cosignatures", "2")  # fmt: skip
    assert result.exit_code == 2 and "listed for two witnesses" in " ".join(result.output.split()), result.output


async def test_log_key_registrations_that_do_not_count(anchored, app, world, publish):
    """A checkpoint key 'registered' by a non-operator, or registered by an event the checkpoint
    does not include (a later leaf), does not anchor the bundle."""
    from ledger.models import RegisterLogKey

    chain, bundle, root = anchored
    origin = app.state.runtime.store.translog.origin
    text = cp.parse_note(bundle["log"]["checkpoint"]).text
    size = cp.parse_checkpoint_body(text).size
    rogue = SigningKey(bytes([21] * 32))
    registration = RegisterLogKey(origin=origin, public_key=bytes(rogue.verify_key).hex())

    def with_checkpoint_by(key, extra_event, index):
        forged = copy.deepcopy(bundle)
        forged["log"]["checkpoint"] = cp.Note(text, (cp.sign_note(text, origin, key),)).encode().decode()
        forged["events"].append(extra_event.to_json())
        forged["log"]["leaves"].append({"index": index, "inclusion_proof": []})
        return forged

    by_member = world.sign(registration, "trader-lg")  # a registered organisation, not the operator
    refused = verify_bundle(with_checkpoint_by(rogue, by_member, size + 5), root)
    assert failed(refused) == "rules" and "operator" in refused.failed().detail, refused.failed().detail
    genuine = world.sign(registration, "operator")
    outcome = await publish(genuine)  # accepted by the ledger, but after the checkpoint
    assert outcome.log_index >= size
    later = verify_bundle(with_checkpoint_by(rogue, genuine, outcome.log_index), root)
    assert failed(later) == "log" and "beyond the checkpoint size" in later.failed().detail


async def test_monitor_on_a_database_that_lost_or_reordered_events(
    anchored, app, store, client, live_server, root_key, tmp_path
):
    """An event deleted from the database after it was logged: the entry bundle is refused (503,
    never a shifted bundle) and the monitor stops with exit-2 MonitorError; two events whose
    leaf indices were swapped: the monitor reports the checkpoint as not the root of the entries."""
    from sdk.monitor import Monitor, MonitorError

    log = app.state.runtime.store.translog
    await log.advance()
    root = root_key.verify_key.encode().hex()
    assert (await Monitor(live_server, root, tmp_path / "clean").run()).ok
    size = (await log.tree()).size
    width = size % 256 or 256
    path = f"/tile/entries/{(size - 1) // 256:03d}" + (f".p/{width}" if width != 256 else "")
    victim = await store.events.find_one({"log_index": size - 3})
    await store.events.delete_one({"_id": victim["_id"]})
    try:
        response = await client.get(path)
        assert response.status_code == 503, response.status_code
        with pytest.raises(MonitorError, match="503"):
            await Monitor(live_server, root, tmp_path / "deleted").run()
    finally:
        await store.events.insert_one(victim)
    assert (await client.get(path)).status_code == 200

    a, b = size - 2, size - 1
    doc_a, doc_b = [await store.events.find_one({"log_index": i}) for i in (a, b)]
    await store.events.update_one({"_id": doc_a["_id"]}, {"$set": {"log_index": -1}})
    await store.events.update_one({"_id": doc_b["_id"]}, {"$set": {"log_index": a}})
    await store.events.update_one({"_id": doc_a["_id"]}, {"$set": {"log_index": b}})
    try:
        report = await Monitor(live_server, root, tmp_path / "swapped").run()
        assert any(v.kind == "inconsistent checkpoint" for v in report.violations), [str(v) for v in report.violations]
    finally:
        await store.events.update_one({"_id": doc_a["_id"]}, {"$set": {"log_index": -1}})
        await store.events.update_one({"_id": doc_b["_id"]}, {"$set": {"log_index": b}})
        await store.events.update_one({"_id": doc_a["_id"]}, {"$set": {"log_index": a}})


async def test_a_lagging_replica_never_rolls_the_log_back(anchored, app, store, world, publish):
    """Two API replicas each run an integrator on one database. One that read the events before
    the other's round (so it saw fewer) must not shrink the stored tree, the partial tiles or the
    served checkpoint: proofs for the larger size stay answerable and the checkpoint only grows."""
    from api import translog

    served = app.state.runtime.store.translog

    def replica() -> translog.TransparencyLog:
        return translog.TransparencyLog(store.db, served.origin, served.signing_key, checkpoint_interval=0.05)

    slow, fast = replica(), replica()
    await slow.advance()
    for i in range(3):
        await publish(world.register(f"lag-{i}", "trader"))
    ahead = cp.parse_checkpoint_body(cp.parse_note(await fast.advance()).text)
    # the slow replica's query returned only the first new event (it ran before the others committed)
    doc = await store.events.find_one({"log_index": slow._edge.size})
    async with slow._lock:
        await slow._append([merkle.leaf_hash(translog.log_entry(doc["envelope"]))])
        await slow._issue_locked()
    assert (await fast.tree()).size == ahead.size
    latest = cp.parse_checkpoint_body(cp.parse_note(await fast.latest_checkpoint()).text)
    assert (latest.size, latest.root) == (ahead.size, ahead.root)
    [proof] = await fast.inclusion_proofs([ahead.size - 1], ahead.size)
    last = await store.events.find_one({"log_index": ahead.size - 1})
    merkle.verify_inclusion(merkle.leaf_hash(translog.log_entry(last["envelope"])), ahead.size - 1, ahead.size,
                            proof, ahead.root)  # fmt: skip
    caught_up = cp.parse_checkpoint_body(cp.parse_note(await slow.advance()).text)
    assert (caught_up.size, caught_up.root) == (ahead.size, ahead.root)


async def test_monitor_reports_a_checkpoint_beyond_the_served_log(anchored, app, live_server, root_key, tmp_path):
    """A checkpoint shown to a verifier (say, in a bundle) that is larger than the tree the log
    serves the monitor: a rollback or a split view if the log key signed it, a forgery otherwise."""
    from sdk.monitor import Monitor

    log = app.state.runtime.store.translog
    await log.advance()
    root = root_key.verify_key.encode().hex()
    served = cp.parse_checkpoint_body(cp.parse_note(await log.latest_checkpoint()).text)
    beyond = cp.Checkpoint(served.origin, served.size + 5, bytes(range(32)))
    for key, kind in ((log.signing_key, "rollback"), (SigningKey(bytes([23] * 32)), "checkpoint signature")):
        monitor = Monitor(live_server, root, tmp_path / kind)
        monitor.add_checkpoint_text(cp.sign_checkpoint(beyond, log.origin, key).encode())
        report = await monitor.run()
        assert [v.kind for v in report.violations] == [kind], [str(v) for v in report.violations]
    assert (await Monitor(live_server, root, tmp_path / "honest").run()).ok
