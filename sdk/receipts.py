"""Log receipts: proof that the ledger logged one's own publication (docs/log.md).

`fetch_receipt(client, envelope)` asks the server for the event's inclusion
proof and checkpoint and checks them against what the publisher itself knows:
the leaf hash is computed from the publisher's own envelope (RFC 8785 bytes,
RFC 9162 leaf hash), never taken from the server; the proof must lead to the
checkpoint's root; with `log_keys` (the log's vkeys, as registered under the
root key) the checkpoint's signature too; with `expected_index` (the
`logIndex` the mutation acknowledged) the leaf must be that one. The returned
`Receipt` is JSON (`to_json`): with it, the server can never deny having
accepted the publication at that index.

`ReceiptBook` keeps them per publication (issue 12, point 4): `Publisher.submit`
records every accepted envelope with its acknowledged index as *pending*, and
`complete` turns pending entries into checked receipts once a checkpoint covers
them (the `oretrace` publication commands do it right away, `oretrace receipts`
later). A wallet at `acme.json` keeps its book in `acme.receipts.json` (0600,
replaced atomically):

    {"version": 1,
     "publications": {"<event id>": {"envelope": {...}, "log_index": N,
                                     "receipt": null | Receipt.to_json(),
                                     "error": null | "<why the last attempt failed>"}}}
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ledger import checkpoint as cp
from ledger import merkle
from ledger.anchoring import entry_leaf_hash
from ledger.envelope import Envelope, MalformedEnvelope, parse_envelope

from .client import ApiError, Client
from .wallet import WalletError, write_private_json

BOOK_VERSION = 1
BOOK_SUFFIX = ".receipts.json"


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


async def fetch_receipt(
    client: Client, envelope: Envelope, log_keys: Sequence[cp.NoteKey] = (), expected_index: int | None = None
) -> Receipt:
    """The checked receipt of an accepted `envelope`. Raises ReceiptError (ApiError if the
    server cannot answer, e.g. SERVICE_UNAVAILABLE while no checkpoint covers the leaf)."""
    answer = await client.inclusion_proof(envelope.event_id)
    if answer is None:
        raise ReceiptError(f"the server has no leaf for {envelope.event_id}")
    try:
        if expected_index is not None and answer["logIndex"] != expected_index:
            raise ReceiptError(
                f"the server acknowledged leaf {expected_index} for {envelope.event_id},"
                f" now proves leaf {answer['logIndex']}"
            )
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


class ReceiptBookError(WalletError):
    """The receipt book file is unreadable or not a receipt book."""


def book_path(wallet_path: str | Path) -> Path:
    """Where the receipts of the wallet at `wallet_path` are kept: `<stem>.receipts.json` beside it."""
    path = Path(wallet_path)
    return path.with_name(path.stem + BOOK_SUFFIX)


class ReceiptBook:
    """Per-publication log receipts (see the module doc); `path` None keeps them in memory only."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self.publications: dict[str, dict[str, Any]] = {}
        if self.path is not None and self.path.exists():
            try:
                data = json.loads(self.path.read_text())
                if data.get("version") != BOOK_VERSION or not isinstance(data.get("publications"), dict):
                    raise ReceiptBookError(f"{self.path}: not a version {BOOK_VERSION} receipt book")
                for entry in data["publications"].values():
                    parse_envelope(entry["envelope"])
                    if not isinstance(entry["log_index"], int):
                        raise ReceiptBookError(f"{self.path}: a log_index is not an integer")
            except (OSError, ValueError, KeyError, TypeError, AttributeError, MalformedEnvelope) as exc:
                raise ReceiptBookError(f"cannot read the receipt book {self.path}: {exc}") from None
            self.publications = data["publications"]

    def _save(self) -> None:
        if self.path is not None:
            write_private_json(self.path, {"version": BOOK_VERSION, "publications": self.publications})

    def record(self, envelope: Envelope, log_index: int) -> None:
        """An accepted publication and the leaf index the server acknowledged (pending until `complete`)."""
        if envelope.event_id not in self.publications:  # a resubmission keeps what is there
            self.publications[envelope.event_id] = {
                "envelope": envelope.to_json(), "log_index": log_index, "receipt": None, "error": None
            }  # fmt: skip
            self._save()

    def pending(self) -> list[str]:
        """Event ids without a checked receipt yet."""
        return [event_id for event_id, e in self.publications.items() if e["receipt"] is None]

    def receipt(self, event_id: str) -> Receipt | None:
        entry = self.publications.get(event_id)
        return Receipt(**entry["receipt"]) if entry and entry["receipt"] else None

    async def complete(
        self, client: Client, log_keys: Sequence[cp.NoteKey] = (), event_ids: Sequence[str] | None = None
    ) -> list[Receipt]:
        """Fetch and check the receipts still pending (of `event_ids`, default all); the new ones.

        Never raises for one publication: a failure (not in a checkpoint yet, or an answer that
        does not verify) is kept in that entry's `error` and the entry stays pending."""
        done: list[Receipt] = []
        pending = set(self.pending())
        for event_id in [e for e in (self.pending() if event_ids is None else event_ids) if e in pending]:
            entry = self.publications[event_id]
            try:
                receipt = await fetch_receipt(client, parse_envelope(entry["envelope"]), log_keys, entry["log_index"])
            except ApiError as exc:  # ReceiptError included
                entry["error"] = str(exc)
                continue
            entry["receipt"], entry["error"] = receipt.to_json(), None
            done.append(receipt)
        self._save()
        return done
