"""GraphQL fields of the transparency log (docs/log.md): the checkpoint, an event's
inclusion proof, a consistency proof between two tree sizes. Hashes are lowercase hex."""

from __future__ import annotations

from typing import Any

import strawberry

from api.store import LogUnavailable, TransparencyLog
from ledger.encoding import canonical_json, sha256_hex
from ledger.merkle import leaf_hash

from .context import Info
from .errors import PublicError, bad_input


def _unavailable(exc: Exception) -> PublicError:
    return PublicError(f"transparency log: {exc}", "SERVICE_UNAVAILABLE", retryable=True)


def _log(info: Info) -> TransparencyLog:
    log = info.context.store.translog
    if log is None:
        raise _unavailable(LogUnavailable("not running"))
    return log


async def log_member_or_error(info: Info, events: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The bundle `log` member for these envelope JSONs (see api.store.Store.bundle_log)."""
    ids = ["evt_" + sha256_hex(canonical_json(e))[:32] for e in events]
    try:
        return await info.context.store.bundle_log(ids)
    except LogUnavailable as exc:
        raise _unavailable(exc) from None


@strawberry.type(description="RFC 9162 inclusion proof of an event's log entry in the tree of `treeSize` leaves.")
class InclusionProof:
    event_id: strawberry.ID
    log_index: int
    tree_size: int
    leaf_hash: str = strawberry.field(description="SHA-256(0x00 || RFC 8785 bytes of the envelope), hex.")
    hashes: list[str] = strawberry.field(description="Audit path, bottom-up, hex.")
    checkpoint: str | None = strawberry.field(
        description="The signed checkpoint (C2SP note) of `treeSize`, when it is the one served."
    )


@strawberry.type(description="The key the log signs its checkpoints with (signed-note Ed25519).")
class LogKey:
    origin: str
    public_key: str = strawberry.field(description="32-byte Ed25519 public key, hex.")
    vkey: str = strawberry.field(description="C2SP signed-note verifier key: origin+keyid+base64(0x01||key).")
    registered: bool = strawberry.field(description="Whether the operator registered it (register_log_key).")


@strawberry.type
class LogQuery:
    @strawberry.field(description="The log's current checkpoint key; the operator registers it under the root key.")
    async def log_key(self, info: Info) -> LogKey:
        log = _log(info)
        return LogKey(
            origin=log.origin,
            public_key=bytes(log.signing_key.verify_key).hex(),
            vkey=log.key.vkey(),
            registered=await log.key_is_registered(),
        )

    @strawberry.field(description="The latest signed checkpoint (C2SP tlog-checkpoint note, with cosignatures).")
    async def log_checkpoint(self, info: Info) -> str | None:
        note = await _log(info).latest_checkpoint()
        return note.decode() if note is not None else None

    @strawberry.field(description="An event's inclusion proof; without treeSize, in the latest checkpoint.")
    async def inclusion_proof(
        self, info: Info, event_id: strawberry.ID, tree_size: int | None = None
    ) -> InclusionProof | None:
        log = _log(info)
        doc = await info.context.store.events.find_one({"_id": str(event_id)}, {"log_index": 1, "envelope": 1})
        if doc is None or doc.get("log_index") is None:
            return None
        index = int(doc["log_index"])
        note: bytes | None = None
        try:
            if tree_size is None:
                checkpoint, note = await log.checkpoint_covering(index)
                tree_size = checkpoint.size
            elif not index < tree_size <= (await log.tree()).size:
                raise bad_input(f"treeSize must include leaf {index} and be at most the log's integrated size")
            [proof] = await log.inclusion_proofs([index], tree_size)
        except LogUnavailable as exc:
            raise _unavailable(exc) from None
        return InclusionProof(
            event_id=strawberry.ID(doc["_id"]),
            log_index=index,
            tree_size=tree_size,
            leaf_hash=leaf_hash(canonical_json(doc["envelope"])).hex(),
            hashes=[h.hex() for h in proof],
            checkpoint=note.decode() if note is not None else None,
        )

    @strawberry.field(description="RFC 9162 consistency proof from oldSize to newSize (hex hashes, bottom-up).")
    async def consistency_proof(self, info: Info, old_size: int, new_size: int) -> list[str]:
        log = _log(info)
        size = (await log.tree()).size
        if not 0 <= old_size <= new_size <= size:
            raise bad_input(f"need 0 <= oldSize <= newSize <= {size} (the integrated size)")
        try:
            return [h.hex() for h in await log.consistency_proof(old_size, new_size)]
        except LogUnavailable as exc:
            raise _unavailable(exc) from None
