"""Log receipts: proof that the ledger logged one's own publication (docs/log.md).

`fetch_receipt(client, envelope)` asks the server for the event's inclusion
proof and checkpoint and checks them against what the publisher itself knows:
the leaf hash is computed from the publisher's own envelope (RFC 8785 bytes,
RFC 9162 leaf hash), never taken from the server; the proof must lead to the
checkpoint's root; with `log_keys` (the log's vkeys, as registered under the
root key) the checkpoint's signature too. The returned `Receipt` is JSON
(`to_json`) that the publisher keeps beside its wallet: with it, the server
can never deny having accepted the publication at that index.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from ledger import checkpoint as cp
from ledger import merkle
from ledger.anchoring import entry_leaf_hash
from ledger.envelope import Envelope

from .client import ApiError, Client


class ReceiptError(ApiError):
    """The server's answer does not prove the publication is logged."""


@dataclass(frozen=True)
class Receipt:
    event_id: str
    log_index: int
    tree_size: int
    checkpoint: str  # the C2SP note, with cosignatures if any
    inclusion_proof: list[str]  # hex, bottom-up

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


async def fetch_receipt(client: Client, envelope: Envelope, log_keys: Sequence[cp.NoteKey] = ()) -> Receipt:
    """The checked receipt of an accepted `envelope`. Raises ReceiptError."""
    answer = await client.inclusion_proof(envelope.event_id)
    if answer is None:
        raise ReceiptError(f"the server has no leaf for {envelope.event_id}")
    try:
        note = cp.parse_note(answer["checkpoint"] or "")
        checkpoint = cp.parse_checkpoint_body(note.text)
        if log_keys:
            cp.verify_note(note, list(log_keys))
        proof = [bytes.fromhex(h) for h in answer["hashes"]]
        if checkpoint.size != answer["treeSize"]:
            raise ReceiptError("the proof is not for the checkpoint's size")
        merkle.verify_inclusion(entry_leaf_hash(envelope), answer["logIndex"], checkpoint.size, proof, checkpoint.root)
    except (cp.NoteError, merkle.MerkleProofError, ValueError, KeyError, TypeError) as exc:
        raise ReceiptError(f"the server's receipt for {envelope.event_id} does not verify: {exc}") from None
    return Receipt(envelope.event_id, answer["logIndex"], checkpoint.size, answer["checkpoint"], answer["hashes"])
