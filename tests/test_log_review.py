"""Review of the transparency log (issue 12): hostile inputs to the read API and the witness."""

from __future__ import annotations

import base64

import pytest
from nacl.signing import SigningKey

from conftest import build_chain
from ledger import checkpoint as cp

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
