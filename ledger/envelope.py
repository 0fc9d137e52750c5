"""Signed envelopes: every publication is an Ed25519 signature over canonical JSON.

The signature covers the payload *and* the envelope metadata (network, signer,
key id, nonce, timestamp), prefixed with a domain tag:

    message = b"oretrace/envelope/v1\\n" || RFC8785({network, signer, key_id,
                                                      nonce, timestamp, payload})

so a signature cannot be replayed on another network, attributed to another
signer or key, or re-dated; and the (signer, nonce) pair is unique in the
ledger, so the same envelope cannot be accepted twice.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from .encoding import canonical_json, sha256_hex
from .models import Ident, Payload

ENVELOPE_DOMAIN = b"oretrace/envelope/v1\n"
_payload_adapter: TypeAdapter = TypeAdapter(Payload)


class Envelope(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    network: Ident
    signer: Ident
    key_id: Ident
    nonce: str = Field(pattern=r"^[0-9a-f]{32}$")
    timestamp: datetime
    payload: Payload
    signature: str = Field(pattern=r"^[0-9a-f]{128}$")

    def signed_message(self) -> bytes:
        return signed_message(self.network, self.signer, self.key_id, self.nonce, self.timestamp, self.payload)

    @property
    def event_id(self) -> str:
        """Content address of the whole signed envelope."""
        return "evt_" + sha256_hex(canonical_json(self.to_json()))[:32]

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


def _timestamp_text(ts: datetime) -> str:
    if ts.tzinfo is None:
        raise ValueError("timestamps must carry a time zone")
    return ts.astimezone(UTC).isoformat().replace("+00:00", "Z")


def signed_message(network: str, signer: str, key_id: str, nonce: str, timestamp: datetime, payload) -> bytes:
    body = {
        "network": network,
        "signer": signer,
        "key_id": key_id,
        "nonce": nonce,
        "timestamp": _timestamp_text(timestamp),
        "payload": payload.model_dump(mode="json", exclude_none=True),
    }
    return ENVELOPE_DOMAIN + canonical_json(body)


def sign(
    payload,
    *,
    network: str,
    signer: str,
    key_id: str,
    signing_key: SigningKey,
    nonce: str | None = None,
    timestamp: datetime | None = None,
) -> Envelope:
    nonce = nonce or secrets.token_hex(16)
    timestamp = (timestamp or datetime.now(UTC)).replace(microsecond=0)
    message = signed_message(network, signer, key_id, nonce, timestamp, payload)
    signature = signing_key.sign(message).signature.hex()
    return Envelope(
        network=network,
        signer=signer,
        key_id=key_id,
        nonce=nonce,
        timestamp=timestamp,
        payload=payload,
        signature=signature,
    )


def signature_is_valid(envelope: Envelope, public_key_hex: str) -> bool:
    try:
        VerifyKey(bytes.fromhex(public_key_hex)).verify(envelope.signed_message(), bytes.fromhex(envelope.signature))
    except (BadSignatureError, ValueError):
        return False
    return True


def parse_envelope(data: dict[str, Any]) -> Envelope:
    """Strict parsing of an envelope received from outside (pydantic ValidationError on bad input)."""
    return Envelope.model_validate(data)
