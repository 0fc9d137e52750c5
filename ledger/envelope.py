"""Signed envelopes: every publication is an Ed25519 signature over canonical JSON.

The signature covers the payload *and* the envelope metadata (network, signer,
key id, nonce, timestamp), prefixed with a domain tag:

    message = b"oretrace/envelope/v1\\n" || RFC8785({network, signer, key_id,
                                                      nonce, timestamp, payload})

so a signature cannot be replayed on another network, attributed to another
signer or key, or re-dated; and the (signer, nonce) pair is unique in the
ledger, so the same envelope cannot be accepted twice.

One signed event has one byte form and one id. `parse_envelope` is the strict
decoder that the server and the offline verifier share: it accepts a received
envelope (a JSON object, already read with `ledger.encoding.loads_strict`, so
without duplicate member names) only if

* it validates against the models (no unknown field anywhere, every pattern);
* re-serialising the decoded envelope gives back exactly what was received,
  compared as RFC 8785 bytes: every field in its canonical spelling
  (timestamps `YYYY-MM-DDTHH:MM:SSZ`, integers as JSON numbers, hex lowercase,
  optional fields omitted rather than null, fields with a default present).

Then the signature is checked over the canonical bytes of the received envelope
(they are the bytes `signed_message` rebuilds) and the event id is derived from
them. Anything else is `MalformedEnvelope` naming the field. The SDK may build
payloads leniently (pydantic coercion) before signing, never after.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from .encoding import StrictJSONError, canonical_json, check_i_json, sha256_hex
from .models import Ident, Payload, Timestamp, timestamp_text

ENVELOPE_DOMAIN = b"oretrace/envelope/v1\n"
#: Key of the cached event id in an Envelope's instance dict (not a model field).
_EVENT_ID = "_event_id"
#: Key of the public key (hex) under which an Envelope's signature was found valid,
#: in its instance dict (`signature_is_valid`; not a model field).
_SIGNATURE_VALID_UNDER = "_signature_valid_under"
_payload_adapter: TypeAdapter = TypeAdapter(Payload)


class Envelope(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    network: Ident
    signer: Ident
    key_id: Ident
    nonce: str = Field(pattern=r"^[0-9a-f]{32}$")
    timestamp: Timestamp
    payload: Payload
    signature: str = Field(pattern=r"^[0-9a-f]{128}$")

    def signed_message(self) -> bytes:
        return signed_message(self.network, self.signer, self.key_id, self.nonce, self.timestamp, self.payload)

    @property
    def event_id(self) -> str:
        """Content address of the whole signed envelope: "evt_" + the first 32 hex
        digits of SHA-256 over its RFC 8785 bytes (`canonical_json(to_json())`).

        Computed once per envelope (the model is frozen; the verifier and the rules
        read it about 8 times per event): `parse_envelope` stores the id of exactly
        the canonical bytes it accepted, an envelope built otherwise (`sign`, the
        models) computes it on first access. `model_copy` drops it (an update
        changes the bytes)."""
        cached = self.__dict__.get(_EVENT_ID)
        if cached is None:
            cached = self._remember_event_id(canonical_json(self.to_json()))
        return cached

    def _remember_event_id(self, canonical: bytes) -> str:
        """Store (in the instance dict, outside the fields, so equality, hashing and
        dumps ignore it) and return the id of `canonical`, which must be this
        envelope's RFC 8785 bytes."""
        event_id = "evt_" + sha256_hex(canonical)[:32]
        self.__dict__[_EVENT_ID] = event_id
        return event_id

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Envelope:
        copied = super().model_copy(update=update, deep=deep)
        copied.__dict__.pop(_EVENT_ID, None)
        copied.__dict__.pop(_SIGNATURE_VALID_UNDER, None)
        return copied

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


def signed_message(network: str, signer: str, key_id: str, nonce: str, timestamp: datetime, payload) -> bytes:
    body = {
        "network": network,
        "signer": signer,
        "key_id": key_id,
        "nonce": nonce,
        "timestamp": timestamp_text(timestamp),
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
    """Does `envelope.signature` verify (Ed25519, RFC 8032) over `signed_message()`
    under the public key `public_key_hex` (64 hex digits)? False for a bad
    signature or a malformed key or signature.

    A True answer is remembered on this envelope object for this key only (in
    its instance dict, like the event id; `model_copy` drops it, the model is
    frozen): the server checks the signature before its prefetch and the rules
    check it again in the verifier, and the second check is then this lookup,
    not a second Ed25519 verification and RFC 8785 serialisation. The memo is
    this process's own result: an envelope decoded from received bytes starts
    without one."""
    if envelope.__dict__.get(_SIGNATURE_VALID_UNDER) == public_key_hex:
        return True
    try:
        VerifyKey(bytes.fromhex(public_key_hex)).verify(envelope.signed_message(), bytes.fromhex(envelope.signature))
    except (BadSignatureError, ValueError):
        return False
    envelope.__dict__[_SIGNATURE_VALID_UNDER] = public_key_hex
    return True


class MalformedEnvelope(ValueError):
    """A received envelope is not in the one accepted byte form. `field` is the
    dotted path of the offending member ("payload.p", "timestamp", "envelope")."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(f"{field}: {message}")


def _path(loc: tuple) -> str:
    # pydantic puts the discriminator tag ("issue") in the location of union members
    parts = [str(x) for x in loc]
    if len(parts) >= 2 and parts[0] == "payload":
        parts = [parts[0], *parts[2:]]
    return ".".join(parts) or "envelope"


def _first_difference(received: Any, canonical: Any, path: str) -> tuple[str, str] | None:
    """(path, what differs) between the received JSON and the re-serialised one, or None."""
    if isinstance(received, dict) and isinstance(canonical, dict):
        for key in sorted(received.keys() | canonical.keys()):
            where = f"{path}.{key}" if path else key
            if key not in canonical:
                return where, "null or not part of the canonical form (omit it)"
            if key not in received:
                return where, f"missing (its canonical form is {_show(canonical[key])})"
            found = _first_difference(received[key], canonical[key], where)
            if found:
                return found
        return None
    if isinstance(received, list) and isinstance(canonical, list) and len(received) == len(canonical):
        for i, (a, b) in enumerate(zip(received, canonical, strict=True)):
            found = _first_difference(a, b, f"{path}[{i}]")
            if found:
                return found
        return None
    if type(received) is type(canonical) and canonical_json(received) == canonical_json(canonical):
        return None
    return path or "envelope", f"not in canonical form: received {_show(received)}, canonical {_show(canonical)}"


def _show(value: Any, limit: int = 60) -> str:
    text = canonical_json(value).decode("utf-8", "replace") if not isinstance(value, float) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def parse_envelope(data: Any) -> Envelope:
    """Strictly decode an envelope received from outside (see the module doc).

    `data` is the parsed JSON object (read it with `loads_strict`, which refuses
    duplicate member names). Returns the Envelope whose `to_json()` has exactly
    the canonical bytes of `data`; raises MalformedEnvelope (a ValueError) naming
    the first offending field otherwise. The signature is not checked here
    (`ledger.rules` does it, against the registry)."""
    if not isinstance(data, dict):
        raise MalformedEnvelope("envelope", "must be a JSON object")
    try:
        check_i_json(data)
    except StrictJSONError as exc:
        raise MalformedEnvelope("envelope", str(exc)) from None
    try:
        envelope = Envelope.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise MalformedEnvelope(_path(first["loc"]), first["msg"]) from None
    dumped = envelope.to_json()
    if _identical(data, dumped):  # same JSON values of the same types: same RFC 8785 bytes
        envelope._remember_event_id(canonical_json(dumped))
        return envelope
    try:
        received = canonical_json(data)
    except Exception as exc:  # rfc8785 refuses integers beyond 2^53 and non-JSON values
        raise MalformedEnvelope("envelope", f"not canonicalisable JSON (RFC 8785): {exc}") from None
    if canonical_json(dumped) != received:
        where, what = _first_difference(data, dumped, "") or ("envelope", "not in canonical form")
        raise MalformedEnvelope(where, what)
    envelope._remember_event_id(received)  # the id of exactly the bytes accepted
    return envelope


def _identical(a: Any, b: Any) -> bool:
    """Equal JSON values of equal Python types all the way down (so 1 is not 1.0 or True)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_identical(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_identical(x, y) for x, y in zip(a, b, strict=True))
    return a == b
