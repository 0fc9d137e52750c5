"""Typed errors of the cryptographic layer.

Callers (the ledger, the API) map these to user-facing rejections, so every
error names *what* failed and *why* in plain words.
"""


class CryptoError(Exception):
    """Base class for every error raised by `crypto`."""


class DecodeError(CryptoError):
    """Bytes from outside are not a valid point or scalar encoding."""

    def __init__(self, what: str, reason: str):
        self.what = what
        self.reason = reason
        super().__init__(f"invalid {what}: {reason}")


class ProofError(CryptoError):
    """A proof is malformed or does not verify for the given statement."""

    def __init__(self, proof: str, reason: str):
        self.proof = proof
        self.reason = reason
        super().__init__(f"{proof} proof rejected: {reason}")


class ProvingError(CryptoError):
    """The prover was asked to prove something false (e.g. a value out of range)."""
