"""Typed rejections: every refused publication says which rule and why."""

from __future__ import annotations

from enum import Enum


class Code(str, Enum):
    MALFORMED = "MALFORMED"  # schema violation, bad point or scalar encoding
    WRONG_NETWORK = "WRONG_NETWORK"
    STALE_TIMESTAMP = "STALE_TIMESTAMP"
    REPLAYED_NONCE = "REPLAYED_NONCE"
    UNKNOWN_SIGNER = "UNKNOWN_SIGNER"
    UNKNOWN_KEY = "UNKNOWN_KEY"
    REVOKED_KEY = "REVOKED_KEY"
    BAD_SIGNATURE = "BAD_SIGNATURE"
    WRONG_ROLE = "WRONG_ROLE"
    UNKNOWN_ORGANIZATION = "UNKNOWN_ORGANIZATION"
    ALREADY_EXISTS = "ALREADY_EXISTS"
    SITE_NOT_FOUND = "SITE_NOT_FOUND"
    SITE_MISMATCH = "SITE_MISMATCH"
    ATTESTATION_NOT_FOUND = "ATTESTATION_NOT_FOUND"
    ATTESTATION_EXPIRED = "ATTESTATION_EXPIRED"
    ATTESTATION_OVERLAP = "ATTESTATION_OVERLAP"  # a second capacity chain for a site and period
    ATTESTATION_SUPERSEDED = "ATTESTATION_SUPERSEDED"
    ATTESTATION_REVOKED = "ATTESTATION_REVOKED"
    ISSUANCE_OUT_OF_SEQUENCE = "ISSUANCE_OUT_OF_SEQUENCE"
    LOT_NOT_FOUND = "LOT_NOT_FOUND"
    NOT_OWNER = "NOT_OWNER"
    LOT_CONSUMED = "LOT_CONSUMED"
    BAD_PROOF = "BAD_PROOF"
    INVALID_CLAIM = "INVALID_CLAIM"
    CLAIM_DOES_NOT_HOLD = "CLAIM_DOES_NOT_HOLD"
    OVERLAPPING_LOTS = "OVERLAPPING_LOTS"  # a claim's set holds a lot and one of its ancestors
    CONFLICT = "CONFLICT"  # lost a race against a concurrent publication
    # Infrastructure, not the envelope: retry later (nothing was written).
    SERVICE_UNAVAILABLE = "SERVICE_UNAVAILABLE"
    # The commit's outcome stayed unknown after bounded retries: the publication
    # may or may not have landed; resubmitting the same envelope is safe (it
    # returns the original outcome if it landed).
    OUTCOME_UNKNOWN = "OUTCOME_UNKNOWN"


#: Codes a client should retry (same envelope, after `retry_after` seconds).
RETRYABLE_CODES = frozenset({Code.SERVICE_UNAVAILABLE, Code.OUTCOME_UNKNOWN})


class Rejection(Exception):
    """A publication (or a bundle item) breaks a rule. Nothing is written
    (OUTCOME_UNKNOWN excepted: see its comment)."""

    def __init__(self, code: Code, message: str):
        self.code = code
        self.message = message
        super().__init__(f"{code.value}: {message}")

    @property
    def retryable(self) -> bool:
        return self.code in RETRYABLE_CODES
