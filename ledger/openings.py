"""Sealed openings: how amounts and blindings travel to the one party allowed to read them.

The server stores only ciphertext. The plaintext is canonical JSON (RFC 8785
key order and spacing; being ASCII-only with integers below 2^64, it is what
`json.dumps(sort_keys=True, separators=(",", ":"))` writes):

    {"v": 1, "lots": {lot_id: {origin_class: {"value": int, "blinding": hex32}}}}
    {"v": 1, "capacity": {attestation_id: {"value": int, "blinding": hex32}}}

the first for lot openings (issuance, transfer, transformation), the second
for the capacity an auditor attests (sealed to the site operator, who needs it
for every capacity proof).

Fixed length: boxes are public (every bundle carries them), so the plaintext
is padded with ASCII spaces (0x20) after the JSON to the length it would have
if every value were 2^64 - 1 (20 digits). The box length then depends only on
the plaintext's structure (which lot and attestation ids, which origin
classes: all public in the envelope), never on an amount: issuing 0 g, 7 g,
10^6 g or 2^64 - 1 g gives boxes of one length. A transformation's box still
shows its number of outputs and classes, as its envelope does. `unseal`
refuses a plaintext not padded exactly so. It is encrypted with a libsodium sealed box
(X25519 + XSalsa20-Poly1305, anonymous sender) to the recipient's registered
sealing key and travels base64-encoded. Authenticity comes from the envelope
signature around it, not from the box.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any

from nacl.exceptions import CryptoError as NaclCryptoError
from nacl.public import PrivateKey, PublicKey, SealedBox

from crypto.group import ORDER
from crypto.pedersen import Opening

from .encoding import StrictJSONError, loads_strict
from .models import ORIGIN_CLASSES

OPENINGS_VERSION = 1
MAX_AMOUNT = 2**64


class SealedOpeningError(ValueError):
    """A sealed opening cannot be sealed, opened or understood (says which and why)."""


def _opening_json(opening: Opening) -> dict[str, Any]:
    if not 0 <= opening.value < MAX_AMOUNT:
        raise SealedOpeningError(f"amount {opening.value} is outside [0, 2^64)")
    return {"value": opening.value, "blinding": (opening.blinding % ORDER).to_bytes(32, "big").hex()}


def lots_plaintext(lots: Mapping[str, Mapping[str, Opening]]) -> dict[str, Any]:
    """Plaintext for the openings of some lots, per origin class."""
    return {
        "v": OPENINGS_VERSION,
        "lots": {lot_id: {k: _opening_json(o) for k, o in classes.items()} for lot_id, classes in lots.items()},
    }


def capacity_plaintext(attestation_id: str, capacity: Opening) -> dict[str, Any]:
    """Plaintext for the opening of an attested capacity."""
    return {"v": OPENINGS_VERSION, "capacity": {attestation_id: _opening_json(capacity)}}


def _at_max(node: Any) -> Any:
    """`node` with every opening's value replaced by the longest one, 2^64 - 1."""
    if isinstance(node, dict):
        if set(node) == {"value", "blinding"}:
            return {**node, "value": MAX_AMOUNT - 1}
        return {k: _at_max(v) for k, v in node.items()}
    return node


def _plaintext_bytes(plaintext: dict[str, Any]) -> bytes:
    # RFC 8785 for this ASCII-only shape (sorted keys, no whitespace), except that
    # integers up to 2^64 - 1 are written in full: RFC 8785 stops at 2^53.
    return json.dumps(plaintext, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def padded_plaintext(plaintext: dict[str, Any]) -> bytes:
    """The sealed bytes: canonical JSON of `plaintext` (sorted keys, no whitespace,
    integers in full), space-padded to the length of its all-maximal twin."""
    body = _plaintext_bytes(plaintext)
    return body + b" " * (len(_plaintext_bytes(_at_max(plaintext))) - len(body))


def seal(plaintext: dict[str, Any], x25519_public_key_hex: str) -> str:
    """Encrypt the padded canonical JSON of `plaintext` to the recipient; base64 ciphertext."""
    try:
        box = SealedBox(PublicKey(bytes.fromhex(x25519_public_key_hex)))
    except (ValueError, TypeError, NaclCryptoError) as exc:
        raise SealedOpeningError(f"recipient key: not a 32-byte X25519 public key in hex ({exc})") from None
    return base64.b64encode(box.encrypt(padded_plaintext(plaintext))).decode("ascii")


def unseal(ciphertext: str, x25519_private_key: PrivateKey | str) -> dict[str, Any]:
    """Decrypt and validate a sealed opening; the plaintext dict (see module docstring)."""
    key = x25519_private_key
    try:
        if isinstance(key, str):
            key = PrivateKey(bytes.fromhex(key))
        raw = base64.b64decode(ciphertext, validate=True)
        data = SealedBox(key).decrypt(raw)
    except (binascii.Error, ValueError, TypeError, NaclCryptoError) as exc:
        raise SealedOpeningError(f"cannot open the sealed box (wrong key or corrupted ciphertext: {exc})") from None
    try:
        plaintext = loads_strict(data)
    except StrictJSONError as exc:
        raise SealedOpeningError(f"sealed plaintext is not JSON ({exc})") from None
    _validate(plaintext)
    if data != padded_plaintext(plaintext):
        raise SealedOpeningError("sealed plaintext is not canonical JSON padded to its fixed length")
    return plaintext


def lot_openings(plaintext: dict[str, Any]) -> dict[str, dict[str, Opening]]:
    """The per-lot, per-class openings of an unsealed lots plaintext."""
    if "lots" not in plaintext:
        raise SealedOpeningError("plaintext has no 'lots'")
    return {lot_id: {k: _opening(o) for k, o in classes.items()} for lot_id, classes in plaintext["lots"].items()}


def capacity_openings(plaintext: dict[str, Any]) -> dict[str, Opening]:
    """The capacity opening per attestation id of an unsealed capacity plaintext."""
    if "capacity" not in plaintext:
        raise SealedOpeningError("plaintext has no 'capacity'")
    return {att_id: _opening(o) for att_id, o in plaintext["capacity"].items()}


def _opening(item: dict[str, Any]) -> Opening:
    return Opening(item["value"], int(item["blinding"], 16))


def _validate(plaintext: Any) -> None:
    if not isinstance(plaintext, dict) or plaintext.get("v") != OPENINGS_VERSION:
        raise SealedOpeningError(f"unsupported sealed-opening format (expected v={OPENINGS_VERSION})")
    if set(plaintext) not in ({"v", "lots"}, {"v", "capacity"}):
        raise SealedOpeningError("plaintext must hold exactly one of 'lots' or 'capacity'")
    if "lots" in plaintext:
        lots = plaintext["lots"]
        if not isinstance(lots, dict):
            raise SealedOpeningError("'lots' must be an object")
        for lot_id, classes in lots.items():
            if not isinstance(classes, dict):
                raise SealedOpeningError(f"lot {lot_id}: must map origin classes to openings")
            for k, item in classes.items():
                if k not in ORIGIN_CLASSES:
                    raise SealedOpeningError(f"lot {lot_id}: unknown origin class {k!r}")
                _validate_opening(f"lot {lot_id} {k}", item)
    else:
        capacity = plaintext["capacity"]
        if not isinstance(capacity, dict):
            raise SealedOpeningError("'capacity' must be an object")
        for att_id, item in capacity.items():
            _validate_opening(f"capacity {att_id}", item)


def _validate_opening(where: str, item: Any) -> None:
    if not isinstance(item, dict) or set(item) != {"value", "blinding"}:
        raise SealedOpeningError(f"{where}: expected exactly 'value' and 'blinding'")
    value, blinding = item["value"], item["blinding"]
    if type(value) is not int or not 0 <= value < MAX_AMOUNT:
        raise SealedOpeningError(f"{where}: value must be an integer in [0, 2^64)")
    if not isinstance(blinding, str) or len(blinding) != 64:
        raise SealedOpeningError(f"{where}: blinding must be 32 bytes of lowercase hex")
    try:
        if bytes.fromhex(blinding).hex() != blinding or int(blinding, 16) >= ORDER:
            raise ValueError
    except ValueError:
        raise SealedOpeningError(f"{where}: blinding must be canonical lowercase hex below the group order") from None
