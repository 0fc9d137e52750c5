"""Canonical bytes and derived identifiers.

Everything that is signed or hashed is first turned into RFC 8785 (JSON
Canonicalization Scheme) bytes, so the server, the SDK and an offline verifier
written in another language agree on the exact bytes. Identifiers of lots,
claims, attestations and events are derived from signed data, so a publisher
cannot squat or collide with somebody else's ids.
"""

from __future__ import annotations

import hashlib
from typing import Any

import rfc8785


def canonical_json(value: Any) -> bytes:
    """RFC 8785 canonical JSON of plain JSON data (dicts, lists, str, int, bool, None)."""
    return rfc8785.dumps(value)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def derive_id(prefix: str, network: str, signer: str, nonce: str, index: int = 0) -> str:
    """A 96-bit identifier bound to the network, the signer and its (unique) nonce."""
    material = canonical_json(
        {"kind": prefix, "network": network, "signer": signer, "nonce": nonce, "index": index}
    )
    return f"{prefix}_{hashlib.sha256(b'oretrace/id/v1' + material).hexdigest()[:24]}"
