"""The transparency log on MongoDB: leaf assignment, integrator, tiles, checkpoints, witnesses.

docs/log.md describes the design; in short:

* **Leaf assignment** (`assign_position`) runs INSIDE each publication's
  transaction: it increments the `log_state` document `head` (`size`, and
  `seq`, the ledger order) and stores the previous `size` as the event's
  `log_index` and the new `seq` as its `seq` (a group-commit transaction of k
  publications increments both by k: contiguous, in its order). Two concurrent transactions both
  write `head`, so one of them gets a write conflict and is retried: indices
  are gap-free, in commit order, and an acknowledged publication has its
  index (it commits with it). A unique index on `events.log_index` backs it.
* **Integrator** (`TransparencyLog.integrate`): follows committed leaves in
  index order, hashes each entry (RFC 8785 bytes of the envelope, RFC 9162
  leaf hash) and maintains the C2SP tlog-tiles hashes in `log_tiles`
  (`_id` "<level>/<index>", `hashes` = concatenated 32-byte hashes, `width` =
  their count; partial tiles grow in place), then records the integrated size and root in
  `log_state` `tree`. Tiles are written before the size, and a restart
  resumes from the recorded size (rewriting the right edge with identical
  bytes), so a crash anywhere loses nothing: the tree is a function of the
  events. Tiles, size and checkpoint are only ever replaced by wider / larger
  ones, so integrators of several API replicas never roll each other back.
* **Checkpoints** (`issue_checkpoint`): every `checkpoint_interval` seconds
  while the tree grew, a C2SP checkpoint signed by the log key is stored in
  `log_checkpoints` (`_id` = size) and becomes `log_state` `checkpoint`;
  configured witnesses get it through C2SP tlog-witness `add-checkpoint` and
  their cosignatures are appended to the served note.
* **Proofs** are computed from stored tiles: a handful of `$in` reads, never
  the whole tree.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from nacl.signing import SigningKey
from pymongo import ASCENDING, ReplaceOne, ReturnDocument
from pymongo.errors import BulkWriteError, DuplicateKeyError

from ledger import checkpoint as cp
from ledger import merkle
from ledger.encoding import canonical_json, sha256_hex

log = logging.getLogger("oretrace.log")

HEAD_ID = "head"
TREE_ID = "tree"
CHECKPOINT_ID = "checkpoint"
MAX_BATCH = 4096
WITNESS_TIMEOUT = 5.0
DUPLICATE_KEY = 11000


class LogUnavailable(RuntimeError):
    """The log cannot answer yet (no checkpoint covers the leaf, integrator behind)."""


# --------------------------------------------------------------------------- leaf assignment


@dataclass(frozen=True)
class Position:
    """Where a publication goes: its leaf in the log and its place in the ledger."""

    log_index: int  # leaf index: from 0, gap-free, in commit order
    seq: int  # ledger order (`events.seq`): from 1, increasing in commit order


async def assign_position(db, session, count: int = 1) -> Position:
    """The first of `count` consecutive leaf indices and ledger `seq`s, allocated inside
    the caller's transaction by ONE write of the `head` document (see module doc): the
    `seq` rides on the write every transaction already makes, instead of a counter
    document of its own. A group-commit transaction of k publications (api.store)
    takes k: its i-th publication (from 0) gets `log_index + i` and `seq + i`."""
    if count < 1:
        raise ValueError(f"count must be at least 1, not {count}")
    doc = await db.log_state.find_one_and_update(
        {"_id": HEAD_ID},
        {"$inc": {"size": count, "seq": count}},
        upsert=True,
        return_document=ReturnDocument.AFTER,
        session=session,
    )
    return Position(log_index=int(doc["size"]) - count, seq=int(doc["seq"]) - count + 1)


async def ensure_log_collections(db) -> None:
    """Indexes and the `head` document, created outside any transaction (idempotent).

    On the first start of this version on a database (no `head.seq` yet), `head.seq`
    is raised to the highest `seq` already used: the value of the `counters`
    document `events` that allocated it before (outside the transaction), and the
    highest `seq` stored. Afterwards `head` alone allocates. `$max` only ever raises
    it, so processes starting together, or while others publish, are safe."""
    await db.events.create_index([("log_index", ASCENDING)], unique=True, sparse=True, name="log_index")
    head = await db.log_state.find_one({"_id": HEAD_ID})
    floor = 0
    if head is None or "seq" not in head:
        last_event = await db.events.find_one({}, {"seq": 1}, sort=[("seq", -1)])
        legacy_counter = await db.counters.find_one({"_id": "events"})
        floor = max(int((last_event or {}).get("seq") or 0), int((legacy_counter or {}).get("value") or 0))
    await db.log_state.update_one(
        {"_id": HEAD_ID}, {"$setOnInsert": {"size": 0}, "$max": {"seq": floor}}, upsert=True
    )
    await db.log_state.update_one(
        {"_id": TREE_ID}, {"$setOnInsert": {"size": 0, "root": merkle.EMPTY_ROOT}}, upsert=True
    )


def log_entry(envelope_json: dict[str, Any]) -> bytes:
    """The log entry of an event: RFC 8785 canonical JSON of the whole signed envelope."""
    return canonical_json(envelope_json)


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class WitnessConfig:
    """A witness the log submits checkpoints to: its cosignature vkey and add-checkpoint URL prefix."""

    key: cp.NoteKey
    url: str


def parse_witnesses(text: str | None) -> list[WitnessConfig]:
    """`<vkey>@<url>` items separated by whitespace or commas (ORETRACE_WITNESSES)."""
    out = []
    for item in (text or "").replace(",", " ").split():
        vkey, sep, url = item.partition("@")
        if not sep or not url.startswith(("http://", "https://")):
            raise ValueError(f"witness {item!r}: expected <vkey>@<http(s) URL>")
        key = cp.parse_vkey(vkey)
        if key.type != cp.COSIGNATURE_V1:
            raise ValueError(f"witness {key.name!r}: a witness vkey has signature type 0x04")
        out.append(WitnessConfig(key, url.rstrip("/")))
    return out


def load_log_key(seed_hex: str | None, data_dir: Path) -> SigningKey:
    """The log's Ed25519 signing key: ORETRACE_LOG_KEY (hex seed), else `<data_dir>/log-key.hex`,
    created (mode 0600) on first start."""
    if seed_hex:
        return SigningKey(bytes.fromhex(seed_hex))
    return load_or_create_key(Path(data_dir) / "log-key.hex")


def load_or_create_key(path: Path) -> SigningKey:
    """An Ed25519 key from a file holding its hex seed, created (mode 0600, exclusively) if absent."""
    path = Path(path)
    if path.exists():
        return SigningKey(bytes.fromhex(path.read_text().strip()))
    path.parent.mkdir(parents=True, exist_ok=True)
    key = SigningKey.generate()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(bytes(key).hex() + "\n")
    return key


# --------------------------------------------------------------------------- the log


@dataclass
class IntegratedTree:
    size: int
    root: bytes


@dataclass
class TransparencyLog:
    db: Any
    origin: str
    signing_key: SigningKey
    checkpoint_interval: float = 2.0
    witnesses: Sequence[WitnessConfig] = ()
    _edge: merkle.TileEdge | None = None  # the integrated tree's right edge (None: not loaded yet)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _task: asyncio.Task | None = None

    @property
    def key(self) -> cp.NoteKey:
        return cp.key_from_signing_key(self.origin, self.signing_key)

    # ------------------------------------------------------------------ background task

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="oretrace-log")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    async def _run(self) -> None:
        while True:
            try:
                await self.advance()
            except asyncio.CancelledError:
                raise
            except Exception:  # the next round retries; a publication never waits on this
                log.exception("log integration round failed")
            await asyncio.sleep(self.checkpoint_interval)

    async def advance(self) -> bytes:
        """Integrate every committed leaf, then issue a checkpoint if the tree grew. The served note."""
        async with self._lock:
            await self._integrate_locked()
            return await self._issue_locked()

    # ------------------------------------------------------------------ integrator

    async def _load(self) -> None:
        state = await self.db.log_state.find_one({"_id": TREE_ID})
        size = int(state["size"]) if state else 0
        keys = [f"{level}/{full}" for level, (full, width) in merkle.tile_widths(size).items() if width]
        docs = await self.db.log_tiles.find({"_id": {"$in": keys}}).to_list(None) if keys else []
        partial = {int(d["_id"].split("/")[0]): bytes(d["hashes"]) for d in docs}
        self._edge = merkle.TileEdge.from_tiles(size, partial)

    async def integrate(self) -> int:
        """Integrate every committed leaf not yet in the tree; the new tree size."""
        async with self._lock:
            return await self._integrate_locked()

    async def _integrate_locked(self) -> int:
        if self._edge is None:
            await self._load()
        assert self._edge is not None
        while True:
            size = self._edge.size
            docs = (
                await self.db.events.find(
                    {"log_index": {"$gte": size, "$lt": size + MAX_BATCH}}, {"log_index": 1, "envelope": 1}
                )
                .sort("log_index", ASCENDING)
                .to_list(None)
            )
            leaves = []
            for doc in docs:
                if doc["log_index"] != size + len(leaves):
                    break  # committed indices are a prefix; stop at any hole rather than guess
                entry = log_entry(doc["envelope"])
                if "evt_" + sha256_hex(entry)[:32] != doc["_id"]:
                    raise RuntimeError(f"event {doc['_id']}: stored envelope no longer hashes to its id")
                leaves.append(merkle.leaf_hash(entry))
            if not leaves:
                return size
            await self._append(leaves)

    async def _append(self, leaves: list[bytes]) -> None:
        """Tiles first, then the size: a crash in between is redone identically on restart.

        Every write only grows what is stored (a tile is replaced only by a wider one, the
        size only by a larger one): another replica's integrator that read fewer events in
        the same moment cannot shrink the tree under the proofs and checkpoints of this one."""
        assert self._edge is not None
        writes = self._edge.append(leaves)
        narrower = lambda width: {"$or": [{"width": {"$lt": width}}, {"width": {"$exists": False}}]}  # noqa: E731
        try:
            await self.db.log_tiles.bulk_write(
                [ReplaceOne({"_id": f"{lv}/{i}", **narrower(len(data) // 32)},
                            {"_id": f"{lv}/{i}", "hashes": data, "width": len(data) // 32}, upsert=True)
                 for (lv, i), data in writes.items()],
                ordered=False,
            )  # fmt: skip
        except BulkWriteError as exc:  # a tile already as wide: the upsert's insert hits its _id
            if any(e.get("code") != DUPLICATE_KEY for e in exc.details.get("writeErrors", [])) or exc.details.get(
                "writeConcernErrors"
            ):
                raise
        await self.db.log_state.update_one(
            {"_id": TREE_ID, "size": {"$lt": self._edge.size}},
            {"$set": {"size": self._edge.size, "root": self._edge.root()}},
        )

    # ------------------------------------------------------------------ checkpoints

    async def _issue_locked(self) -> bytes:
        assert self._edge is not None
        current = await self.db.log_state.find_one({"_id": CHECKPOINT_ID})
        key_id = self.key.key_id.hex()
        if current is not None and current["size"] == self._edge.size and current.get("key_id") == key_id:
            return current["note"].encode()  # nothing new, and signed by the current key (rotation re-signs)
        tree = await self.db.log_state.find_one({"_id": TREE_ID})
        checkpoint = cp.Checkpoint(self.origin, int(tree["size"]), bytes(tree["root"]))
        note = cp.sign_checkpoint(checkpoint, self.origin, self.signing_key)
        note = await self._cosign(note, checkpoint)
        text = note.encode().decode()
        await self.db.log_checkpoints.replace_one(
            {"_id": checkpoint.size},
            {"_id": checkpoint.size, "root": checkpoint.root, "note": text, "issued_at": time.time()},
            upsert=True,
        )
        current_doc = {"_id": CHECKPOINT_ID, "size": checkpoint.size, "note": text, "key_id": key_id}
        try:  # never replace a larger checkpoint (another replica's)
            await self.db.log_state.replace_one(
                {"_id": CHECKPOINT_ID, "size": {"$lte": checkpoint.size}}, current_doc, upsert=True
            )
        except DuplicateKeyError:
            return (await self.latest_checkpoint()) or text.encode()
        return text.encode()

    async def key_is_registered(self) -> bool:
        """Whether an operator-signed `register_log_key` event registers the current key
        for this origin and none retires it (the rules checked their signatures)."""
        public_key = bytes(self.signing_key.verify_key).hex()
        docs = await self.db.events.find(
            {"type": "register_log_key"}, {"envelope.payload": 1}
        ).to_list(None)
        payloads = [d["envelope"]["payload"] for d in docs]
        registered = any(p["public_key"] == public_key and p["origin"] == self.origin for p in payloads)
        return registered and not any(public_key in p.get("retire", ()) for p in payloads)

    async def latest_checkpoint(self) -> bytes | None:
        doc = await self.db.log_state.find_one({"_id": CHECKPOINT_ID})
        return doc["note"].encode() if doc else None

    async def checkpoint_covering(self, index: int) -> tuple[cp.Checkpoint, bytes]:
        """The latest checkpoint if it includes leaf `index`; otherwise advance the log once.

        Raises LogUnavailable if the leaf is still not covered (not committed)."""
        note = await self.latest_checkpoint()
        if note is None or cp.parse_checkpoint_body(cp.parse_note(note).text).size <= index:
            note = await self.advance()
        checkpoint = cp.parse_checkpoint_body(cp.parse_note(note).text)
        if checkpoint.size <= index:
            raise LogUnavailable(f"leaf {index} is not in the log yet (size {checkpoint.size})")
        return checkpoint, note

    # ------------------------------------------------------------------ witnesses

    async def _cosign(self, note: cp.Note, checkpoint: cp.Checkpoint) -> cp.Note:
        if not self.witnesses:
            return note
        async with httpx.AsyncClient(timeout=WITNESS_TIMEOUT) as client:
            results = await asyncio.gather(
                *(self._submit(client, w, note, checkpoint) for w in self.witnesses), return_exceptions=True
            )
        for witness, result in zip(self.witnesses, results, strict=True):
            if isinstance(result, BaseException):
                log.warning("witness %s did not cosign size %d: %s", witness.key.name, checkpoint.size, result)
                continue
            note = note.with_signatures(result)
        return note

    async def _submit(
        self, client: httpx.AsyncClient, witness: WitnessConfig, note: cp.Note, checkpoint: cp.Checkpoint
    ) -> list[cp.Signature]:
        state_id = f"witness:{witness.key.name}"
        state = await self.db.log_state.find_one({"_id": state_id})
        old = int(state["size"]) if state else 0
        for _ in range(2):  # a 409 tells the witness's size: retry once from there
            old = min(old, checkpoint.size)
            proof = await self.consistency_proof(old, checkpoint.size) if old else []
            body = f"old {old}\n" + "".join(base64.b64encode(h).decode() + "\n" for h in proof) + "\n"
            response = await client.post(
                f"{witness.url}/add-checkpoint", content=body.encode() + note.encode()
            )
            if response.status_code == 409 and response.headers.get("content-type", "").startswith("text/x.tlog.size"):
                old = int(response.text.strip())
                continue
            if response.status_code != 200:
                raise RuntimeError(f"HTTP {response.status_code}: {response.text[:200]!r}")
            cosigned = cp.parse_note(note.text + "\n" + response.text)
            verified = cp.verify_cosignatures(cosigned, [witness.key])
            if witness.key.name not in verified:
                raise RuntimeError("the response holds no cosignature by this witness")
            await self.db.log_state.replace_one(
                {"_id": state_id}, {"_id": state_id, "size": checkpoint.size}, upsert=True
            )
            return [s for s in cosigned.signatures if (s.name, s.key_id) == (witness.key.name, witness.key.key_id)]
        raise RuntimeError("the witness disagrees on its size twice")

    # ------------------------------------------------------------------ reads: tiles, entries, proofs

    async def tree(self) -> IntegratedTree:
        doc = await self.db.log_state.find_one({"_id": TREE_ID})
        return IntegratedTree(int(doc["size"]), bytes(doc["root"])) if doc else IntegratedTree(0, merkle.EMPTY_ROOT)

    async def tile(self, level: int, index: int, width: int) -> bytes | None:
        """C2SP tile bytes, or None if the integrated tree does not have that tile at that width."""
        tree = await self.tree()
        full, partial = merkle.tile_widths(tree.size).get(level, (0, 0))
        if not (index < full or (index == full and width <= partial)):
            return None
        doc = await self.db.log_tiles.find_one({"_id": f"{level}/{index}"})
        raw = bytes(doc["hashes"]) if doc else b""
        return raw[: 32 * width] if len(raw) >= 32 * width else None

    async def entries(self, index: int, width: int) -> bytes | None:
        """C2SP entry bundle of leaves [index*256, index*256+width), or None if not integrated.

        Raises LogUnavailable if an integrated leaf's event is missing from the database."""
        tree = await self.tree()
        start = index * merkle.TILE_WIDTH
        if start + width > tree.size:
            return None
        docs = await self.entries_range(start, start + width)
        if [d["log_index"] for d in docs] != list(range(start, start + width)):
            # the tree has these leaves but the database lost or moved an event: never serve a shifted bundle
            log.error("log entries [%d, %d) are not all in the database", start, start + width)
            raise LogUnavailable(f"log entries {start}..{start + width - 1} are not all readable")
        return merkle.entry_bundle(log_entry(d["envelope"]) for d in docs)

    async def entries_range(self, start: int, end: int) -> list[dict[str, Any]]:
        return (
            await self.db.events.find({"log_index": {"$gte": start, "$lt": end}}, {"log_index": 1, "envelope": 1})
            .sort("log_index", ASCENDING)
            .to_list(None)
        )

    async def nodes(self, wanted: Iterable[merkle.Node]) -> dict[merkle.Node, bytes]:
        """Stored subtree hashes from the tiles: one `$in` query for all of them."""
        wanted = list(dict.fromkeys(wanted))
        placement = {n: merkle.tile_of_node(*n) for n in wanted}
        keys = sorted({f"{tl}/{ti}" for tl, ti, _, _ in placement.values()})
        docs = await self.db.log_tiles.find({"_id": {"$in": keys}}).to_list(None) if keys else []
        tiles = {d["_id"]: bytes(d["hashes"]) for d in docs}
        out: dict[merkle.Node, bytes] = {}
        for node, (tl, ti, first, count) in placement.items():
            raw = tiles.get(f"{tl}/{ti}", b"")
            if len(raw) < 32 * (first + count):
                raise LogUnavailable(f"node {node} is not integrated yet")
            out[node] = merkle.subtree_root([raw[i : i + 32] for i in range(32 * first, 32 * (first + count), 32)])
        return out

    async def _proofs(self, ranges_list: list[list[tuple[int, int]]], size: int) -> list[list[bytes]]:
        tree = await self.tree()
        if size > tree.size:
            raise LogUnavailable(f"the log has {tree.size} integrated leaves, not {size}")
        found = await self.nodes(n for ranges in ranges_list for n in merkle.proof_nodes(ranges))
        return [merkle.proof_hashes(ranges, lambda lv, i: found[(lv, i)]) for ranges in ranges_list]

    async def inclusion_proofs(self, indices: Sequence[int], size: int) -> list[list[bytes]]:
        """RFC 9162 inclusion proofs of `indices` in the tree of `size` (ValueError if out of range)."""
        return await self._proofs([merkle.inclusion_ranges(i, size) for i in indices], size)

    async def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        return (await self._proofs([merkle.consistency_ranges(old_size, new_size)], new_size))[0]


def open_log(db, settings) -> TransparencyLog:
    """The log of `settings` (api.settings.Settings, whose ORETRACE_WITNESSES was
    parsed when the settings were read): key, origin, interval, witnesses."""
    return TransparencyLog(
        db,
        settings.origin,
        load_log_key(settings.log_key, settings.data_dir),
        checkpoint_interval=settings.checkpoint_interval,
        witnesses=parse_witnesses(settings.witnesses),
    )


# --------------------------------------------------------------------------- HTTP read API (C2SP tlog-tiles)


def routes(runtime) -> list:
    """`GET /checkpoint`, `GET /tile/<L>/<N>[.p/<W>]`, `GET /tile/entries/<N>[.p/<W>]`."""
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse, Response
    from starlette.routing import Route

    def current_log() -> TransparencyLog | None:
        store = runtime.store
        return getattr(store, "translog", None) if store is not None else None

    async def checkpoint(request: Request) -> Response:
        log_ = current_log()
        note = await log_.latest_checkpoint() if log_ is not None else None
        if note is None:
            return PlainTextResponse("no checkpoint yet\n", status_code=503, headers={"Retry-After": "2"})
        return Response(note, media_type="text/plain; charset=utf-8", headers={"Cache-Control": "max-age=2"})

    async def tile(request: Request) -> Response:
        log_ = current_log()
        if log_ is None:
            return PlainTextResponse("log not started\n", status_code=503, headers={"Retry-After": "2"})
        try:
            level, index, width = merkle.parse_tile_path(request.path_params["path"])
        except ValueError as exc:
            return PlainTextResponse(f"{exc}\n", status_code=400)
        try:
            data = await (log_.entries(index, width) if level == "entries" else log_.tile(level, index, width))
        except LogUnavailable as exc:
            return PlainTextResponse(f"{exc}\n", status_code=503, headers={"Retry-After": "2"})
        if data is None:
            return PlainTextResponse("no such tile\n", status_code=404)
        return Response(
            data, media_type="application/octet-stream", headers={"Cache-Control": "public, max-age=31536000, immutable"}
        )

    return [Route("/checkpoint", checkpoint, methods=["GET"]), Route("/tile/{path:path}", tile, methods=["GET"])]
