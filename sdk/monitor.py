"""`oretrace monitor`: the auditor's replay of the whole log.

Trusting only the root key, the monitor

1. fetches the checkpoint (`GET /checkpoint`) and every entry from its saved
   position (C2SP entry bundles `GET /tile/entries/<N>[.p/<W>]`);
2. recomputes the Merkle tree from the entries (RFC 9162) and requires every
   checkpoint it has seen (this run, earlier runs, and any given with
   `--checkpoint`) to be the root of that tree at its size: a split view or
   a rewritten history is a violation;
3. checks each checkpoint's signature against the log keys that the root key
   registered in the log itself (`register_log_key` entries);
4. replays every entry through `ledger.rules.apply` (the bundle verifier's
   machinery, offline policy) into one in-memory ledger, with range proofs
   batched per entry bundle, and checks the global invariants no single
   bundle can: no nonce used twice, no lot consumed or transferred twice, no
   fork of an issuance sequence, no id created twice, no event by a key after
   its revocation (the rules' key check, over the whole history).

Every violation names its leaf. State (position, leaf hashes, the replayed
ledger, checkpoints seen) is saved in `--state DIR` after each entry bundle, so
a run resumes where the previous one stopped. The state directory is the
monitor's own, trusted storage (the ledger is pickled there).
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from ledger import checkpoint as cp
from ledger import merkle
from ledger.anchoring import registered_log_keys
from ledger.bundle import unique_keys
from ledger.encoding import canonical_json, loads_strict
from ledger.envelope import Envelope, parse_envelope
from ledger.errors import Rejection
from ledger.proofs import BatchCollector
from ledger.rules import Policy, apply
from ledger.view import MemoryView, apply_effects_to_view

STATE_FILE = "monitor-state.pickle"
LEAVES_FILE = "leaves.bin"


class MonitorError(RuntimeError):
    """The monitor could not run (network, unreadable answer): exit 2, not a verdict."""


@dataclass(frozen=True)
class Violation:
    leaf: int | None  # None: about a checkpoint, not one leaf
    kind: str
    detail: str

    def __str__(self) -> str:
        where = f"leaf {self.leaf}" if self.leaf is not None else "checkpoint"
        return f"{where}: {self.kind}: {self.detail}"


@dataclass
class MonitorState:
    size: int = 0  # entries replayed
    network: str | None = None
    view: MemoryView = field(default_factory=MemoryView)
    first_use: dict[tuple[str, str], int] = field(default_factory=dict)
    log_envelopes: list[Envelope] = field(default_factory=list)  # register_log_key entries seen
    checkpoints: dict[int, bytes] = field(default_factory=dict)  # size -> root, every one seen
    violations: list[Violation] = field(default_factory=list)


@dataclass
class MonitorReport:
    size: int
    checkpoint: cp.Checkpoint | None
    replayed: int
    range_proofs: int
    violations: list[Violation]

    @property
    def ok(self) -> bool:
        return not self.violations


class Monitor:
    def __init__(self, api: str, root_public_key: str, state_dir: Path, *, timeout: float = 30.0) -> None:
        self.base = api.removesuffix("/").removesuffix("/graphql")
        self.root_public_key = root_public_key
        self.state_dir = Path(state_dir)
        self.timeout = timeout
        self.state = self._load()
        self._pending_notes: list[bytes] = []  # checkpoints given by the caller, checked after the replay
        self.tree = merkle.MemoryTree.from_leaf_hashes(self._load_leaves())
        if self.tree.size != self.state.size:
            raise MonitorError(f"{self.state_dir}: leaf file and state disagree; remove the directory to start over")

    # ------------------------------------------------------------------ state

    def _load(self) -> MonitorState:
        path = self.state_dir / STATE_FILE
        if not path.exists():
            return MonitorState()
        with open(path, "rb") as f:
            return pickle.load(f)  # noqa: S301 - the monitor's own state directory

    def _load_leaves(self) -> list[bytes]:
        path = self.state_dir / LEAVES_FILE
        raw = path.read_bytes() if path.exists() else b""
        return [raw[i : i + 32] for i in range(0, len(raw) - len(raw) % 32, 32)][: self.state.size]

    def _save(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        leaves = self.state_dir / LEAVES_FILE
        with open(leaves, "r+b" if leaves.exists() else "wb") as f:
            stored = min(f.seek(0, os.SEEK_END) // 32, self.state.size)  # append-only; a torn tail is cut
            f.truncate(32 * stored)
            f.seek(32 * stored)
            f.write(b"".join(self.tree.levels[0][stored : self.state.size]))
            f.flush()
            os.fsync(f.fileno())
        tmp = self.state_dir / (STATE_FILE + ".tmp")
        with open(tmp, "wb") as f:
            pickle.dump(self.state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.state_dir / STATE_FILE)

    # ------------------------------------------------------------------ checkpoints

    def _note_checkpoint(self, checkpoint: cp.Checkpoint) -> None:
        seen = self.state.checkpoints.get(checkpoint.size)
        if seen is not None and seen != checkpoint.root:
            self._violation(None, "split view", f"two checkpoints of size {checkpoint.size} with different roots")
        self.state.checkpoints.setdefault(checkpoint.size, checkpoint.root)

    def _check_checkpoints(self) -> None:
        """Every checkpoint seen, up to the replayed size, is the root of the recomputed tree."""
        for size, root in sorted(self.state.checkpoints.items()):
            if size <= self.tree.size and self.tree.root(size) != root:
                self._violation(size - 1 if size else None, "inconsistent checkpoint",
                                f"the checkpoint of size {size} is not the root of the log's entries")  # fmt: skip

    def _violation(self, leaf: int | None, kind: str, detail: str) -> None:
        v = Violation(leaf, kind, detail)
        if v not in self.state.violations:
            self.state.violations.append(v)

    def add_checkpoint_text(self, note: bytes) -> cp.Checkpoint:
        """A checkpoint seen elsewhere (a bundle, another vantage point): parsed now, its signature
        checked once the log keys are known. Raises NoteError if malformed."""
        checkpoint = cp.parse_checkpoint_body(cp.parse_note(note).text)
        self._pending_notes.append(note)
        self._note_checkpoint(checkpoint)
        return checkpoint

    def _verify_signatures(self, notes: list[bytes]) -> None:
        """Every checkpoint seen must be signed by a log key registered (and not retired) in the
        replayed log. One the log signed beyond the entries it serves (the served checkpoint only
        grows, and any other was issued before this run) shows a rollback or a split view."""
        keys = registered_log_keys(self.state.log_envelopes)
        for note in notes:
            parsed = cp.parse_note(note)
            checkpoint = cp.parse_checkpoint_body(parsed.text)
            try:
                cp.verify_note(parsed, [k for k in keys if k.name == checkpoint.origin])
            except cp.NoteError as exc:
                self._violation(None, "checkpoint signature", f"size {checkpoint.size}: {exc}")
                continue
            if checkpoint.size > self.tree.size:
                self._violation(None, "rollback", f"the log signed a tree of size {checkpoint.size} but serves"
                                f" {self.tree.size} entries (or a cache served a stale checkpoint: run again)")  # fmt: skip

    # ------------------------------------------------------------------ run

    async def run(self, progress: Callable[[int, int], None] | None = None) -> MonitorReport:
        async with httpx.AsyncClient(base_url=self.base, timeout=self.timeout) as client:
            note = await self._get(client, "/checkpoint")
            try:
                checkpoint = cp.parse_checkpoint_body(cp.parse_note(note).text)
            except cp.NoteError as exc:
                raise MonitorError(f"the log's checkpoint is unreadable: {exc}") from None
            self._note_checkpoint(checkpoint)
            range_proofs = 0
            while self.state.size < checkpoint.size:
                start = self.state.size
                tile, offset = divmod(start, merkle.TILE_WIDTH)
                width = min(merkle.TILE_WIDTH, checkpoint.size - tile * merkle.TILE_WIDTH)
                data = await self._get(client, "/" + merkle.tile_path("entries", tile, width))
                try:
                    entries = merkle.parse_entry_bundle(data)
                except ValueError as exc:
                    raise MonitorError(f"entry bundle {tile}: {exc}") from None
                if len(entries) != width:
                    raise MonitorError(f"entry bundle {tile} has {len(entries)} entries, expected {width}")
                range_proofs += self._replay(entries[offset:], start)
                self._check_checkpoints()
                self._save()
                if progress is not None:
                    progress(self.state.size, checkpoint.size)
        self._verify_signatures([note, *self._pending_notes])
        self._check_checkpoints()
        self._save()
        return MonitorReport(self.state.size, checkpoint, self.state.size, range_proofs, list(self.state.violations))

    async def _get(self, client: httpx.AsyncClient, path: str) -> bytes:
        try:
            response = await client.get(path)
        except httpx.HTTPError as exc:
            raise MonitorError(f"GET {self.base}{path}: {exc}") from None
        if response.status_code != 200:
            raise MonitorError(f"GET {self.base}{path}: HTTP {response.status_code}")
        return response.content

    def _replay(self, entries: list[bytes], start: int) -> int:
        """Replay a run of entries (leaves start, start+1, ...); the range proofs batched."""
        proofs = BatchCollector()
        scopes: dict[str, int] = {}
        for offset, entry in enumerate(entries):
            index = start + offset
            self.tree.append_hash(merkle.leaf_hash(entry))
            self.state.size = index + 1
            try:
                envelope = parse_envelope(loads_strict(entry))
            except ValueError as exc:  # StrictJSONError and pydantic's ValidationError are ValueErrors
                self._violation(index, "malformed entry", str(exc).splitlines()[0])
                continue
            if canonical_json(envelope.to_json()) != entry:
                self._violation(index, "malformed entry", "not the canonical bytes of the envelope")
                continue
            if self.state.network is None:
                self.state.network = envelope.network
            policy = Policy(network=self.state.network, root_public_key=self.root_public_key)
            label = f"leaf {index} ({envelope.payload.type} {envelope.event_id}): "
            proofs.scope = label
            scopes[label] = index
            try:
                effects = apply(envelope, self.state.view, policy, proofs)
            except Rejection as rejection:
                self._violation(index, rejection.code.value, rejection.message)
                continue
            clash = next(
                ((ns, key, reason) for ns, key, reason in unique_keys(effects) if (ns, key) in self.state.first_use),
                None,
            )
            if clash is not None:
                ns, key, reason = clash
                self._violation(index, "global invariant",
                                f"{reason} ({ns} {key}, first at leaf {self.state.first_use[(ns, key)]})")  # fmt: skip
                continue
            for ns, key, _reason in unique_keys(effects):
                self.state.first_use[(ns, key)] = index
            apply_effects_to_view(self.state.view, effects)
            if envelope.payload.type == "register_log_key":
                self.state.log_envelopes.append(envelope)
        try:
            proofs.verify()
        except Rejection as rejection:
            leaf = next((i for label, i in scopes.items() if rejection.message.startswith(label)), start)
            self._violation(leaf, rejection.code.value, rejection.message)
        return proofs.range_proofs
