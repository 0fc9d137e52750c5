"""sdk.witness (C2SP tlog-witness add-checkpoint): cosigns append-only growth only,
refuses a split view, keeps its state across restarts; the server's log submits its
checkpoints to a witness over HTTP and serves the cosigned note."""

from __future__ import annotations

import asyncio
import base64
import contextlib

import pytest
import uvicorn
from nacl.signing import SigningKey
from pydantic import ValidationError

from api import translog
from conftest import free_port
from ledger import checkpoint as cp
from ledger import merkle
from sdk.witness import Witness, witness_app

ORIGIN = "oretrace.log/witness-test"
LOG_KEY = SigningKey(bytes([5] * 32))
LOG_VKEY = cp.key_from_signing_key(ORIGIN, LOG_KEY)
TREE = merkle.MemoryTree.from_entries(f"leaf {i}".encode() for i in range(40))


def make_witness(tmp_path, clock=lambda: 1_800_000_000) -> Witness:
    return Witness("witness.test/w1", SigningKey(bytes([6] * 32)), {ORIGIN: [LOG_VKEY]}, tmp_path, clock)


def request(old: int, size: int, root: bytes | None = None, key=LOG_KEY, proof=None, origin=ORIGIN) -> bytes:
    root = TREE.root(size) if root is None else root
    note = cp.sign_checkpoint(cp.Checkpoint(origin, size, root), origin, key).encode()
    if proof is None:
        proof = TREE.consistency_proof(old, size) if old else []
    return f"old {old}\n".encode() + b"".join(base64.b64encode(h) + b"\n" for h in proof) + b"\n" + note


async def test_cosigns_growth_and_verifies(tmp_path):
    w = make_witness(tmp_path)
    reply = await w.add_checkpoint(request(0, 5))
    assert reply.status == 200, reply.body
    note = cp.parse_note(cp.sign_checkpoint(cp.Checkpoint(ORIGIN, 5, TREE.root(5)), ORIGIN, LOG_KEY).encode())
    cosigned = cp.parse_note(note.text + "\n" + reply.body)
    assert cp.verify_cosignatures(cosigned, [w.key]) == {"witness.test/w1": 1_800_000_000}
    for old, new in ((5, 5), (5, 12), (12, 32), (32, 40)):
        assert (await w.add_checkpoint(request(old, new))).status == 200, (old, new)
    assert w.state(ORIGIN) == (40, TREE.root(40))
    # a restarted witness (new object, same directory) remembers
    assert make_witness(tmp_path).state(ORIGIN) == (40, TREE.root(40))


async def test_refuses_forks_and_bad_requests(tmp_path):
    w = make_witness(tmp_path)
    assert (await w.add_checkpoint(request(0, 8))).status == 200
    other = merkle.MemoryTree.from_entries(f"other {i}".encode() for i in range(16))
    split_view = request(8, 8, root=other.root(8), proof=[])
    reply = await w.add_checkpoint(split_view)
    assert reply.status == 422
    forked_growth = request(8, 16, root=other.root(16), proof=other.consistency_proof(8, 16))
    assert (await w.add_checkpoint(forked_growth)).status == 422
    assert len(list((tmp_path / "evidence").iterdir())) == 2  # the log signed both: evidence kept
    stale = await w.add_checkpoint(request(5, 9))
    assert (stale.status, stale.body, stale.media_type) == (409, "8\n", "text/x.tlog.size")
    assert (await w.add_checkpoint(request(8, 12, key=SigningKey.generate()))).status == 403
    assert (await w.add_checkpoint(request(0, 8, origin="unknown.log/x"))).status == 404
    assert (await w.add_checkpoint(request(9, 8, proof=[]))).status == 400
    assert (await w.add_checkpoint(request(8, 12, proof=TREE.consistency_proof(8, 12)[:-1]))).status == 422
    body = request(8, 12)
    for malformed in (body.replace(b"old 8", b"old 08"), body.replace(b"old 8", b"new 8"), body.replace(b"\n\n", b"\n"),
                      b"old 8\n" + b"AAAA\n" + body.split(b"\n", 1)[1]):  # fmt: skip
        assert (await w.add_checkpoint(malformed)).status == 400, malformed[:40]
    assert w.state(ORIGIN) == (8, TREE.root(8))  # nothing refused changed the state
    zero = request(0, 0, root=bytes(32))
    assert (await w.add_checkpoint(zero)).status in (409, 422)


async def test_concurrent_requests_never_roll_back(tmp_path):
    w = make_witness(tmp_path)
    assert (await w.add_checkpoint(request(0, 4))).status == 200
    replies = await asyncio.gather(w.add_checkpoint(request(4, 10)), w.add_checkpoint(request(4, 20)))
    assert sorted(r.status for r in replies) == [200, 409]
    size, _ = w.state(ORIGIN)
    assert size in (10, 20)


@contextlib.asynccontextmanager
async def serve(app):
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign]
    task = asyncio.create_task(server.serve())
    for _ in range(200):
        if server.started:
            break
        await asyncio.sleep(0.025)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)


async def test_server_log_gets_cosigned_by_a_witness_over_http(tmp_path, store, world, publish):
    for i in range(3):
        await publish(world.register(f"wit-{i}", "trader"))
    w = Witness("witness.test/w1", SigningKey(bytes([6] * 32)), {}, tmp_path)
    async with serve(witness_app(w)) as url:
        log = translog.TransparencyLog(store.db, ORIGIN, LOG_KEY, witnesses=[translog.WitnessConfig(w.key, url)])
        w.logs[ORIGIN] = [log.key]
        first = cp.parse_note(await log.advance())
        assert cp.verify_cosignatures(first, [w.key]).keys() == {"witness.test/w1"}
        await publish(world.register("wit-late", "trader"))
        second = cp.parse_note(await log.advance())
        c2 = cp.parse_checkpoint_body(second.text)
        assert cp.verify_cosignatures(second, [w.key]).keys() == {"witness.test/w1"}
        assert w.state(ORIGIN) == (c2.size, c2.root)
        assert await log.latest_checkpoint() == second.encode()
        # a witness that lost its state answers 409 with its size; the log catches up from there
        (tmp_path / next(p.name for p in tmp_path.iterdir() if p.suffix == ".json")).unlink()
        await publish(world.register("wit-later", "trader"))
        third = cp.parse_note(await log.advance())
        assert cp.verify_cosignatures(third, [w.key]).keys() == {"witness.test/w1"}


def test_witness_option_parsing():
    key = cp.key_from_signing_key("w.example/1", SigningKey(bytes([1] * 32)), cp.COSIGNATURE_V1)
    [parsed] = translog.parse_witnesses(f"{key.vkey()}@http://127.0.0.1:8650")
    assert parsed.key == key and parsed.url == "http://127.0.0.1:8650"
    for bad in (key.vkey(), f"{key.vkey()}@ftp://x", f"{LOG_VKEY.vkey()}@http://x"):
        with pytest.raises(ValueError):
            translog.parse_witnesses(bad)


async def test_oretrace_witness_as_a_separate_process_cosigns(tmp_path, store, world, publish):
    """`oretrace witness` in its own process (the CLI), the server's log submitting to it over TCP."""
    import os
    import subprocess
    import sys

    import httpx

    await publish(world.register("wit-proc", "trader"))
    port = free_port()
    key_file = tmp_path / "w.key"
    proc = subprocess.Popen(
        [sys.executable, "-c", "from sdk.cli import app; app()", "witness", "--name", "witness.test/proc",
         "--key-file", str(key_file), "--log", f"{ORIGIN}={LOG_VKEY.vkey()}", "--state-dir", str(tmp_path / "state"),
         "--port", str(port)],
        env={**os.environ, "PYTHONPATH": os.getcwd()}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient() as client:
            for _ in range(200):
                try:
                    await client.post(f"{url}/add-checkpoint", content=b"")
                    break
                except httpx.HTTPError:
                    await asyncio.sleep(0.1)
        wkey = cp.key_from_signing_key("witness.test/proc", SigningKey(bytes.fromhex(key_file.read_text().strip())),
                                       cp.COSIGNATURE_V1)  # fmt: skip
        log = translog.TransparencyLog(store.db, ORIGIN, LOG_KEY, witnesses=[translog.WitnessConfig(wkey, url)])
        note = cp.parse_note(await log.advance())
        assert cp.verify_cosignatures(note, [wkey]).keys() == {"witness.test/proc"}
    finally:
        proc.terminate()
        proc.wait(10)
    assert wkey.vkey() in proc.stderr.read().decode()


def test_malformed_witness_setting_is_a_settings_error(tmp_path):
    from api.settings import Settings, SettingsError

    with pytest.raises(ValidationError, match="not-a-witness"):  # refused before any log opens
        Settings(data_dir=tmp_path, root_public_key="00" * 32, witnesses="not-a-witness")
    with pytest.raises(SettingsError, match=r"ORETRACE_WITNESSES \(witnesses\): witness 'not-a-witness'"):
        Settings.from_env({"ORETRACE_ROOT_PUBLIC_KEY": "00" * 32, "ORETRACE_WITNESSES": "not-a-witness"})
    settings = Settings(data_dir=tmp_path, root_public_key="00" * 32, checkpoint_interval=0.5)
    opened = translog.open_log(None, settings)
    assert opened.origin == "oretrace.log/oretrace-demo" and (tmp_path / "log-key.hex").stat().st_mode & 0o077 == 0
    assert translog.open_log(None, settings).key == opened.key  # the key file is reused, not regenerated
