"""The pending-publication journal: a retry after a crash never publishes twice.

Before a signed envelope is sent, `Journal.record(envelope)` writes it to a
file beside the wallet (`<wallet>.pending.json`, mode 0600, atomically, with
`sdk.wallet.write_private_json`); once the server's answer is in the wallet,
`Journal.clear()` removes it. If the process dies in between (a crash, a
lost connection, a full disk while saving the wallet), the file survives and
the next command on that wallet first calls `resume_pending`, which
resubmits the *same* signed envelope:

* the server accepts it, or answers with the original outcome (identical
  resubmission is idempotent), or refuses it while the event is already in
  the ledger (`event(id)` finds it): the publication happened once; its ids
  are derived from the envelope (`ledger.statements`), the wallet is brought
  up to date from the server (`sdk.publisher.sync`) and saved;
* the server refuses it and the event is not in the ledger: it never
  happened; the journal is dropped and nothing was published;
* the server cannot be reached: the journal is kept (`ApiError` propagates).

File format (JSON object, I-JSON): `{"format": "oretrace-pending/v1",
"envelope": <envelope JSON as sent>, "intent": <the command's arguments,
JSON object>, "recorded_at": "<RFC 3339 UTC>"}`. `intent` lets the CLI tell
a retry of the same command (its result is the pending publication's) from
a different command (which runs after the pending one is settled).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ledger.encoding import StrictJSONError, loads_strict
from ledger.envelope import Envelope, parse_envelope
from ledger.statements import attestation_id, claim_id, issued_lot_id, output_lot_ids

from .client import ApiRejection, Client
from .publisher import NotSaved, Published, sync
from .wallet import Wallet, WalletError, write_private_json

JOURNAL_FORMAT = "oretrace-pending/v1"


@dataclass(frozen=True)
class Pending:
    envelope: Envelope
    intent: dict[str, Any]


@dataclass(frozen=True)
class Resumed:
    """What became of a pending publication: `published` is None when it never happened."""

    pending: Pending
    published: Published | None
    rejection: ApiRejection | None = None


class Journal:
    """The pending publication of one wallet (at most one: commands on a wallet run one at a time)."""

    def __init__(self, wallet_path: str | os.PathLike, intent: dict[str, Any] | None = None):
        real = Path(os.path.realpath(wallet_path))
        self.path = real.with_name(real.name + ".pending.json")
        self.intent = dict(intent or {})
        self.last_envelope: Envelope | None = None  # the envelope recorded last by this object

    def record(self, envelope: Envelope) -> None:
        """Write the envelope about to be sent (0600, atomic) before it leaves the machine."""
        self.last_envelope = envelope
        write_private_json(
            self.path,
            {
                "format": JOURNAL_FORMAT,
                "envelope": envelope.to_json(),
                "intent": self.intent,
                "recorded_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            },
        )

    def read(self) -> Pending | None:
        """The pending publication, or None. WalletError if the file is unreadable or not a journal."""
        try:
            data = loads_strict(self.path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, StrictJSONError) as exc:
            raise WalletError(f"cannot read the pending publication {self.path}: {exc}") from None
        if not isinstance(data, dict) or data.get("format") != JOURNAL_FORMAT:
            raise WalletError(f"{self.path} is not an oretrace pending-publication file")
        try:
            envelope = parse_envelope(data["envelope"])
        except (KeyError, ValueError) as exc:
            raise WalletError(f"{self.path} holds no valid envelope: {exc}") from None
        intent = data.get("intent")
        return Pending(envelope, intent if isinstance(intent, dict) else {})

    def clear(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def published_from_envelope(envelope: Envelope) -> Published:
    """The ids an accepted envelope produced, derived from it as the server derives them."""
    p = envelope.payload
    net, signer, nonce = envelope.network, envelope.signer, envelope.nonce
    lot_ids: list[str] = []
    if p.type == "issue":
        lot_ids = [issued_lot_id(net, signer, nonce)]
    elif p.type == "transform":
        lot_ids = output_lot_ids(net, signer, nonce, len(p.outputs))
    return Published(
        event_id=envelope.event_id,
        type=p.type,
        lot_ids=lot_ids,
        claim_id=claim_id(net, signer, nonce) if p.type == "publish_claim" else None,
        attestation_id=attestation_id(net, signer, nonce) if p.type == "attest_site" else None,
    )


async def resume_pending(wallet: Wallet, client: Client, journal: Journal) -> Resumed | None:
    """Settle the wallet's pending publication, if any (see the module docstring).

    Raises `ApiError` (journal kept) when the server cannot be reached,
    `NotSaved` when the wallet cannot be saved (journal kept).
    """
    pending = journal.read()
    if pending is None:
        return None
    envelope = pending.envelope
    try:
        published = Published.from_result(await client.publish(envelope))
    except ApiRejection as exc:
        if await client.event(envelope.event_id) is None:
            journal.clear()
            return Resumed(pending, None, exc)
        published = published_from_envelope(envelope)
    if published.lot_ids or envelope.payload.type == "transfer":
        await sync(wallet, client)
        if wallet.path is not None:
            try:
                wallet.save()
            except OSError as exc:
                raise NotSaved(published, exc) from exc
    journal.clear()
    return Resumed(pending, published)


__all__ = ["Journal", "Pending", "Resumed", "published_from_envelope", "resume_pending"]
