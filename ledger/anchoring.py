"""A disclosure bundle's `log` member: its events anchored in the transparency log (pure).

    "log": {"checkpoint": "<C2SP signed note: checkpoint + log signature + cosignatures>",
            "leaves": [{"index": N, "inclusion_proof": ["<64 hex>", ...]}, ...]}

`leaves[i]` belongs to `events[i]`. Checked by `verify_anchoring` (docs/log.md):

1. the checkpoint is a C2SP tlog-checkpoint signed (signed-note Ed25519) by a
   log key that an operator-signed `register_log_key` event of the bundle
   registered for the checkpoint's origin, and that no such event retired;
2. one leaf per event, indices strictly increasing and below the checkpoint size;
3. every event's entry (RFC 8785 bytes of the whole envelope) is leaf `index`
   of the checkpoint's tree (RFC 9162 §2.1.3.2 inclusion proof);
4. with witnesses given, at least `min_cosignatures` of them cosigned the
   checkpoint (C2SP tlog-cosignature/v1).

An event the ledger never accepted has no leaf; two events cannot share or swap
indices; a checkpoint of another log or another network fails 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from . import checkpoint as cp
from . import merkle
from .encoding import canonical_json
from .envelope import Envelope
from .models import RegisterLogKey
from .view import OPERATOR

MAX_PROOF_LENGTH = 64


class AnchoringError(ValueError):
    """The bundle's `log` member does not anchor its events (the message says why)."""


@dataclass
class Anchor:
    """What a verified `log` member establishes."""

    checkpoint: cp.Checkpoint
    log_key: str  # vkey of the log key that signed
    cosigners: dict[str, int] = field(default_factory=dict)  # witness name -> cosignature time

    def describe(self) -> str:
        root = self.checkpoint.body().split("\n")[2]
        witnessed = f", cosigned by {', '.join(sorted(self.cosigners))}" if self.cosigners else ""
        return f"checkpoint {self.checkpoint.origin} size {self.checkpoint.size} root {root}{witnessed}"

    def to_json(self) -> dict[str, Any]:
        return {
            "origin": self.checkpoint.origin,
            "size": self.checkpoint.size,
            "root": self.checkpoint.body().split("\n")[2],
            "log_key": self.log_key,
            "cosigners": dict(self.cosigners),
        }


def entry_leaf_hash(envelope: Envelope) -> bytes:
    """RFC 9162 leaf hash of an event's log entry (the canonical bytes of the whole envelope)."""
    return merkle.leaf_hash(canonical_json(envelope.to_json()))


def log_member(checkpoint_note: bytes, indices: Sequence[int], proofs: Sequence[Sequence[bytes]]) -> dict[str, Any]:
    """The `log` member for events at `indices` (in bundle order) with their inclusion proofs."""
    return {
        "checkpoint": checkpoint_note.decode(),
        "leaves": [
            {"index": index, "inclusion_proof": [h.hex() for h in proof]}
            for index, proof in zip(indices, proofs, strict=True)
        ],
    }


def registered_log_keys(events: Sequence[Envelope]) -> list[cp.NoteKey]:
    """Log keys registered by the operator among `events`, minus the retired ones.

    Only call this on events whose signatures were checked (the bundle's rule replay)."""
    registered: list[tuple[str, str]] = []
    retired: set[str] = set()
    for env in events:
        if env.signer == OPERATOR and isinstance(env.payload, RegisterLogKey):
            registered.append((env.payload.origin, env.payload.public_key))
            retired.update(env.payload.retire)
    return [cp.NoteKey(origin, cp.ED25519, bytes.fromhex(pk)) for origin, pk in registered if pk not in retired]


def _read_leaves(member: Any, count: int) -> list[tuple[int, list[bytes]]]:
    if not isinstance(member, dict) or set(member) != {"checkpoint", "leaves"}:
        raise AnchoringError("log: must be an object with exactly 'checkpoint' and 'leaves'")
    if not isinstance(member["checkpoint"], str):
        raise AnchoringError("log.checkpoint: must be a string")
    leaves = member["leaves"]
    if not isinstance(leaves, list) or len(leaves) != count:
        raise AnchoringError(f"log.leaves: must list one leaf per event ({count})")
    out = []
    for i, leaf in enumerate(leaves):
        if not isinstance(leaf, dict) or set(leaf) != {"index", "inclusion_proof"}:
            raise AnchoringError(f"log.leaves[{i}]: must be {{index, inclusion_proof}}")
        index, proof = leaf["index"], leaf["inclusion_proof"]
        if not isinstance(index, int) or isinstance(index, bool) or index < 0:
            raise AnchoringError(f"log.leaves[{i}].index: must be a non-negative integer")
        if not isinstance(proof, list) or len(proof) > MAX_PROOF_LENGTH:
            raise AnchoringError(f"log.leaves[{i}].inclusion_proof: must be a list of at most {MAX_PROOF_LENGTH}")
        hashes = []
        for h in proof:
            if not isinstance(h, str) or len(h) != 64 or h != h.lower():
                raise AnchoringError(f"log.leaves[{i}].inclusion_proof: hashes are 64 lowercase hex characters")
            try:
                hashes.append(bytes.fromhex(h))
            except ValueError:
                raise AnchoringError(f"log.leaves[{i}].inclusion_proof: not hex") from None
        out.append((index, hashes))
    return out


def verify_anchoring(
    events: Sequence[Envelope],
    member: Any,
    *,
    witnesses: Sequence[cp.NoteKey] = (),
    min_cosignatures: int = 0,
) -> Anchor:
    """Check a bundle's `log` member against its (already rule-checked) events. Raises AnchoringError."""
    leaves = _read_leaves(member, len(events))
    keys = registered_log_keys(events)
    try:
        note = cp.parse_note(member["checkpoint"])
        checkpoint = cp.parse_checkpoint_body(note.text)
    except cp.NoteError as exc:
        raise AnchoringError(f"log.checkpoint: {exc}") from None
    for_origin = [k for k in keys if k.name == checkpoint.origin]
    if not for_origin:
        raise AnchoringError(
            f"log.checkpoint: origin {checkpoint.origin!r} has no log key registered under the root key in this bundle"
        )
    try:
        signer = cp.verify_note(note, for_origin)[0]
    except cp.NoteError as exc:
        raise AnchoringError(f"log.checkpoint: {exc}") from None

    previous = -1
    for i, (env, (index, proof)) in enumerate(zip(events, leaves, strict=True)):
        if index <= previous:
            raise AnchoringError(f"event {i}: leaf index {index} does not follow {previous} (bundle order is log order)")
        previous = index
        if index >= checkpoint.size:
            raise AnchoringError(f"event {i}: leaf index {index} is beyond the checkpoint size {checkpoint.size}")
        try:
            merkle.verify_inclusion(entry_leaf_hash(env), index, checkpoint.size, proof, checkpoint.root)
        except merkle.MerkleProofError as exc:
            raise AnchoringError(f"event {i} ({env.event_id}) is not leaf {index} of the checkpoint: {exc}") from None

    cosigners: dict[str, int] = {}
    if witnesses or min_cosignatures:
        try:
            cosigners = cp.verify_cosignatures(note, witnesses)
        except cp.NoteError as exc:
            raise AnchoringError(f"log.checkpoint: {exc}") from None
        if len(cosigners) < min_cosignatures:
            raise AnchoringError(
                f"log.checkpoint: {len(cosigners)} of the {len(set(witnesses))} trusted witnesses cosigned it,"
                f" {min_cosignatures} required"
            )
    return Anchor(checkpoint, signer.vkey(), cosigners)
