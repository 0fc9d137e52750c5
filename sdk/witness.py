"""`oretrace witness`: a C2SP tlog-witness (`add-checkpoint`) that cosigns only append-only growth.

For each log it follows (origin -> the log's vkeys) the witness keeps the latest
checkpoint it cosigned (size, root) in `<state dir>/<sha256(origin)[:16]>.json`,
written atomically (temporary file, fsync, rename) BEFORE it answers, under a
lock, so two concurrent requests cannot roll the size back (tlog-witness,
"add-checkpoint"). Responses follow the spec:

| status | when |
|--------|------|
| 200    | text/plain: the cosignature line(s) (tlog-cosignature/v1, type 0x04) |
| 400    | malformed body, old size above the checkpoint size, more than 63 proof lines |
| 403    | no valid signature by a key of the log (or a bad one) |
| 404    | unknown origin |
| 409    | old size != the size last cosigned; body = that size + "\\n", text/x.tlog.size |
| 413    | body over 64 KiB |
| 422    | proof does not verify, a non-empty proof from 0, same size with another root (a fork), size 0 with a non-empty root |

Every refused checkpoint that the log did sign is kept in `<state dir>/evidence/`
(the checkpoint text and the log's signature lines only, one file per distinct
checkpoint text): a fork signed by the log is
proof of its misbehaviour. The request's consistency proof is not kept: anyone
can send a wrong one, so it proves nothing, and keeping it would let any client
fill the disk with variations of one checkpoint.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from nacl.signing import SigningKey

from ledger import checkpoint as cp
from ledger import merkle

MAX_BODY = 64 * 1024
MAX_PROOF_LINES = 63
SIZE_MEDIA = "text/x.tlog.size"


@dataclass(frozen=True)
class Reply:
    status: int
    body: str
    media_type: str = "text/plain; charset=utf-8"


@dataclass
class Witness:
    name: str
    signing_key: SigningKey
    logs: dict[str, list[cp.NoteKey]]  # origin -> the log's Ed25519 (type 0x01) keys
    state_dir: Path
    clock: Callable[[], float] = time.time
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def key(self) -> cp.NoteKey:
        return cp.key_from_signing_key(self.name, self.signing_key, cp.COSIGNATURE_V1)

    # ------------------------------------------------------------------ state

    def _path(self, origin: str) -> Path:
        return Path(self.state_dir) / f"{hashlib.sha256(origin.encode()).hexdigest()[:16]}.json"

    def state(self, origin: str) -> tuple[int, bytes]:
        """(size, root) last cosigned for `origin`; (0, empty root) if none."""
        path = self._path(origin)
        if not path.exists():
            return 0, merkle.EMPTY_ROOT
        data = json.loads(path.read_text())
        if data.get("origin") != origin:
            raise RuntimeError(f"{path} belongs to another log")
        return int(data["size"]), base64.b64decode(data["root"])

    def _save(self, origin: str, size: int, root: bytes) -> None:
        path = self._path(origin)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w") as f:
            json.dump({"origin": origin, "size": size, "root": base64.b64encode(root).decode()}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def _keep_evidence(self, origin: str, note: cp.Note, reason: str) -> None:
        """Keep a refused checkpoint with the log's (verified) signatures, once per checkpoint text."""
        folder = Path(self.state_dir) / "evidence"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{hashlib.sha256(note.text.encode()).hexdigest()[:32]}.txt"
        if path.exists():
            return
        logs = {(k.name, k.key_id) for k in self.logs[origin]}
        signed = cp.Note(note.text, tuple(dict.fromkeys(s for s in note.signatures if (s.name, s.key_id) in logs)))
        path.write_bytes(f"# {origin}: {reason}\n".encode() + signed.encode())

    # ------------------------------------------------------------------ add-checkpoint

    async def add_checkpoint(self, body: bytes) -> Reply:
        if len(body) > MAX_BODY:
            return Reply(413, "request too large\n")
        try:
            old, proof, note_bytes = _parse_request(body)
            note = cp.parse_note(note_bytes)
            checkpoint = cp.parse_checkpoint_body(note.text)
        except (ValueError, UnicodeDecodeError) as exc:
            return Reply(400, f"{exc}\n")
        keys = self.logs.get(checkpoint.origin)
        if keys is None:
            return Reply(404, f"unknown log {checkpoint.origin!r}\n")
        try:
            cp.verify_note(note, keys)
        except cp.NoteError as exc:
            return Reply(403, f"{exc}\n")
        if old > checkpoint.size:
            return Reply(400, f"old size {old} is above the checkpoint size {checkpoint.size}\n")
        if checkpoint.size == 0 and checkpoint.root != merkle.EMPTY_ROOT:
            return Reply(422, "a checkpoint of size 0 must carry the empty tree's root\n")
        async with self._lock:
            size, root = self.state(checkpoint.origin)
            if old != size:
                return Reply(409, f"{size}\n", SIZE_MEDIA)
            try:
                if old == 0 and proof:
                    raise merkle.MerkleProofError("a consistency proof from size 0 must be empty")
                merkle.verify_consistency(old, checkpoint.size, root, checkpoint.root, proof)
            except merkle.MerkleProofError as exc:
                self._keep_evidence(checkpoint.origin, note, f"refused: {exc}")
                return Reply(422, f"not an append-only extension of size {size}: {exc}\n")
            self._save(checkpoint.origin, checkpoint.size, checkpoint.root)
        cosignature = cp.cosign(note.text, self.name, self.signing_key, int(self.clock()))
        return Reply(200, cosignature.line())


def _parse_request(body: bytes) -> tuple[int, list[bytes], bytes]:
    """`old N\\n` + proof lines + `\\n` + checkpoint note (tlog-witness). ValueError if malformed."""
    head, sep, note = body.partition(b"\n\n")
    if not sep:
        raise ValueError("no blank line between the proof and the checkpoint")
    lines = head.decode("ascii").split("\n")
    first = lines[0]
    if not first.startswith("old "):
        raise ValueError("the first line must be 'old <size>'")
    number = first[4:]
    if not number.isdigit() or (number != "0" and number.startswith("0")):
        raise ValueError(f"bad old size {number!r}")
    if len(lines) - 1 > MAX_PROOF_LINES:
        raise ValueError(f"more than {MAX_PROOF_LINES} consistency proof lines")
    proof = []
    for line in lines[1:]:
        try:
            h = base64.b64decode(line, validate=True)
        except binascii.Error:
            raise ValueError("a proof line is not base64") from None
        if len(h) != merkle.HASH_SIZE:
            raise ValueError("a proof line is not a 32-byte hash")
        proof.append(h)
    return int(number), proof, note


def witness_app(witness: Witness):
    """Starlette app: `POST /add-checkpoint` (127.0.0.1 unless told otherwise by the CLI)."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    async def add_checkpoint(request: Request) -> Response:
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY):
            return Response("request too large\n", status_code=413, media_type="text/plain")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY:
                return Response("request too large\n", status_code=413, media_type="text/plain")
        reply = await witness.add_checkpoint(bytes(body))
        return Response(reply.body, status_code=reply.status, media_type=reply.media_type)

    return Starlette(routes=[Route("/add-checkpoint", add_checkpoint, methods=["POST"])])


def parse_log_option(text: str) -> tuple[str, cp.NoteKey]:
    """`ORIGIN=VKEY` (the log's checkpoint origin and its signed-note vkey)."""
    origin, sep, vkey = text.partition("=")
    if not sep:
        raise ValueError(f"--log {text!r}: expected ORIGIN=VKEY")
    key = cp.parse_vkey(vkey)
    if key.type != cp.ED25519:
        raise ValueError(f"--log {text!r}: a log vkey has signature type 0x01")
    return origin, key
