"""C2SP signed notes, tlog checkpoints and Ed25519 cosignatures (pure).

Specs (c2sp.org): `signed-note` (format, key IDs, vkeys), `tlog-checkpoint`
(note text = origin, size, base64 root, optional extension lines) and
`tlog-cosignature` (signature type 0x04, `timestamped_signature`).

    note      = text || "\\n" || signature line+          (text ends in "\\n")
    sig line  = "— " || key name || " " || base64(key ID[4] || signature) || "\\n"
    key ID    = SHA-256(key name || "\\n" || type || public key)[:4]
                type 0x01: Ed25519 over the note text
                type 0x04: cosignature, signature = u64be timestamp || Ed25519 over
                           "cosignature/v1\\ntime <timestamp>\\n" || note text
    vkey      = key name "+" hex(key ID) "+" base64(type || public key)

Every error is a `NoteError` (ValueError) with a message that names the fault.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

ED25519 = 0x01
COSIGNATURE_V1 = 0x04
SIG_PREFIX = "— "  # em dash U+2014, space
MAX_NOTE_BYTES = 64 * 1024
MAX_SIGNATURES = 64
MAX_EXTENSION_LINES = 16


class NoteError(ValueError):
    """A note, checkpoint, vkey or cosignature is malformed or does not verify."""


@dataclass(frozen=True)
class NoteKey:
    """A verifier key: (name, signature type, 32-byte Ed25519 public key)."""

    name: str
    type: int
    public_key: bytes

    def __post_init__(self) -> None:
        _check_key_name(self.name)
        if self.type not in (ED25519, COSIGNATURE_V1):
            raise NoteError(f"unsupported signature type 0x{self.type:02x}")
        if len(self.public_key) != 32:
            raise NoteError("an Ed25519 public key is 32 bytes")

    @property
    def key_id(self) -> bytes:
        return hashlib.sha256(self.name.encode() + b"\n" + bytes([self.type]) + self.public_key).digest()[:4]

    def vkey(self) -> str:
        material = base64.b64encode(bytes([self.type]) + self.public_key).decode()
        return f"{self.name}+{self.key_id.hex()}+{material}"


def _check_key_name(name: str) -> None:
    if not name or any(c.isspace() or c == "+" or ord(c) < 0x20 for c in name):
        raise NoteError(f"bad key name {name!r}: non-empty, no spaces, no '+'")


def parse_vkey(text: str) -> NoteKey:
    """`name+hex(key ID)+base64(type || key)`: the key ID must match the key."""
    parts = text.strip().split("+", 2)  # base64 may itself contain "+"
    if len(parts) != 3:
        raise NoteError(f"bad verifier key {text!r}: expected name+keyid+key")
    name, key_id_hex, material_b64 = parts
    try:
        material = base64.b64decode(material_b64, validate=True)
        key_id = bytes.fromhex(key_id_hex)
    except (binascii.Error, ValueError):
        raise NoteError(f"bad verifier key {text!r}: bad hex or base64") from None
    if len(key_id) != 4 or not material:
        raise NoteError(f"bad verifier key {text!r}")
    key = NoteKey(name, material[0], material[1:])
    if key.key_id != key_id:
        raise NoteError(f"verifier key {name!r}: key ID {key_id_hex} does not match the key")
    return key


def key_from_signing_key(name: str, signing_key: SigningKey, type: int = ED25519) -> NoteKey:
    return NoteKey(name, type, bytes(signing_key.verify_key))


# --------------------------------------------------------------------------- signed notes


@dataclass(frozen=True)
class Signature:
    name: str
    key_id: bytes
    signature: bytes  # after the 4-byte key ID

    def line(self) -> str:
        return f"{SIG_PREFIX}{self.name} {base64.b64encode(self.key_id + self.signature).decode()}\n"


@dataclass(frozen=True)
class Note:
    text: str  # ends in "\n"
    signatures: tuple[Signature, ...]

    def encode(self) -> bytes:
        return (self.text + "\n" + "".join(s.line() for s in self.signatures)).encode()

    def with_signatures(self, extra: Iterable[Signature]) -> Note:
        seen = {(s.name, s.key_id) for s in self.signatures}
        added = tuple(s for s in extra if (s.name, s.key_id) not in seen)
        return Note(self.text, self.signatures + added)


def parse_note(data: bytes | str) -> Note:
    """Split a signed note into its text and signature lines (signed-note §Format).

    No signature is checked here. Raises NoteError."""
    if isinstance(data, str):
        data = data.encode()
    if len(data) > MAX_NOTE_BYTES:
        raise NoteError(f"note larger than {MAX_NOTE_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise NoteError("note is not valid UTF-8") from None
    if any(ord(c) < 0x20 and c != "\n" for c in text):
        raise NoteError("note contains a control character")
    cut = text.rfind("\n\n")
    if cut < 0 or not text.endswith("\n"):
        raise NoteError("note has no blank line before its signatures")
    body, sig_block = text[: cut + 1], text[cut + 2 :]
    lines = sig_block[:-1].split("\n") if sig_block else []
    if not lines:
        raise NoteError("note has no signature")
    if len(lines) > MAX_SIGNATURES:
        raise NoteError(f"note has more than {MAX_SIGNATURES} signatures")
    signatures = []
    for line in lines:
        if not line.startswith(SIG_PREFIX):
            raise NoteError(f"malformed signature line {line!r}")
        name, sep, b64 = line[len(SIG_PREFIX) :].rpartition(" ")
        if not sep:
            raise NoteError(f"malformed signature line {line!r}")
        _check_key_name(name)
        try:
            raw = base64.b64decode(b64, validate=True)
        except binascii.Error:
            raise NoteError(f"signature of {name!r} is not base64") from None
        if len(raw) < 5:
            raise NoteError(f"signature of {name!r} is too short")
        signatures.append(Signature(name, raw[:4], raw[4:]))
    return Note(body, tuple(signatures))


def sign_note(text: str, name: str, signing_key: SigningKey) -> Signature:
    """An Ed25519 (type 0x01) note signature over `text`."""
    key = key_from_signing_key(name, signing_key)
    return Signature(name, key.key_id, signing_key.sign(text.encode()).signature)


def _matching(note: Note, key: NoteKey) -> list[Signature]:
    return [s for s in note.signatures if s.name == key.name and s.key_id == key.key_id]


def verify_note(note: Note, keys: Sequence[NoteKey]) -> list[NoteKey]:
    """The Ed25519 (type 0x01) keys among `keys` that signed the note.

    Unknown signatures are ignored; a signature by a known key that fails
    rejects the whole note; no verified signature rejects it. Raises NoteError."""
    verified: list[NoteKey] = []
    for key in keys:
        if key.type != ED25519:
            continue
        for sig in _matching(note, key):
            try:
                VerifyKey(key.public_key).verify(note.text.encode(), sig.signature)
            except (BadSignatureError, ValueError):
                raise NoteError(f"bad signature by {key.name} ({key.key_id.hex()})") from None
            verified.append(key)
    if not verified:
        raise NoteError("no signature by a trusted key")
    return verified


# --------------------------------------------------------------------------- checkpoints


@dataclass(frozen=True)
class Checkpoint:
    """C2SP tlog-checkpoint note text: origin, tree size, root hash (32 bytes)."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def body(self) -> str:
        lines = [self.origin, str(self.size), base64.b64encode(self.root).decode(), *self.extensions]
        return "".join(line + "\n" for line in lines)


def parse_checkpoint_body(text: str) -> Checkpoint:
    if not text.endswith("\n"):
        raise NoteError("checkpoint text must end in a newline")
    lines = text[:-1].split("\n")
    if len(lines) < 3:
        raise NoteError("checkpoint needs origin, size and root lines")
    origin, size_text, root_text, *extensions = lines
    if not origin:
        raise NoteError("empty checkpoint origin")
    if (
        not (size_text.isascii() and size_text.isdigit())
        or (size_text != "0" and size_text.startswith("0"))
        or len(size_text) > 19
        or int(size_text) >= 2**63
    ):  # a decimal uint64 below 2**63 (Go's sumdb/tlog, int64)
        raise NoteError(f"bad checkpoint size {size_text[:40]!r}")
    try:
        root = base64.b64decode(root_text, validate=True)
    except binascii.Error:
        raise NoteError("checkpoint root is not base64") from None
    if len(root) != 32 or base64.b64encode(root).decode() != root_text:
        raise NoteError("checkpoint root is not a canonical base64 32-byte hash")
    if any(not e for e in extensions) or len(extensions) > MAX_EXTENSION_LINES:
        raise NoteError("empty or too many checkpoint extension lines")
    return Checkpoint(origin, int(size_text), root, tuple(extensions))


def sign_checkpoint(checkpoint: Checkpoint, name: str, signing_key: SigningKey) -> Note:
    text = checkpoint.body()
    return Note(text, (sign_note(text, name, signing_key),))


def open_checkpoint(data: bytes | str, origin: str, log_keys: Sequence[NoteKey]) -> tuple[Checkpoint, Note]:
    """Parse a signed checkpoint, check its origin and a log signature (type 0x01).

    Raises NoteError (wrong origin, no/bad signature by `log_keys`, malformed)."""
    note = parse_note(data)
    checkpoint = parse_checkpoint_body(note.text)
    if checkpoint.origin != origin:
        raise NoteError(f"checkpoint of log {checkpoint.origin!r}, expected {origin!r}")
    verify_note(note, log_keys)
    return checkpoint, note


# --------------------------------------------------------------------------- cosignatures


def cosigned_message(text: str, timestamp: int) -> bytes:
    return f"cosignature/v1\ntime {timestamp}\n".encode() + text.encode()


def cosign(text: str, name: str, signing_key: SigningKey, timestamp: int) -> Signature:
    """A tlog-cosignature/v1 (type 0x04) over checkpoint note `text` at POSIX `timestamp`."""
    if not 0 < timestamp < 2**63:
        raise NoteError("cosignature timestamp out of range")
    key = key_from_signing_key(name, signing_key, COSIGNATURE_V1)
    sig = signing_key.sign(cosigned_message(text, timestamp)).signature
    return Signature(name, key.key_id, timestamp.to_bytes(8, "big") + sig)


def distinct_witnesses(witnesses: Sequence[NoteKey]) -> list[NoteKey]:
    """`witnesses` without exact repeats; NoteError if one key has two names or one name two keys."""
    unique = list(dict.fromkeys(witnesses))
    for attribute, what in (("public_key", "key"), ("name", "name")):
        values = [getattr(k, attribute) for k in unique]
        for key in unique:
            if values.count(getattr(key, attribute)) > 1:
                raise NoteError(f"witness {key.name!r}: the same {what} is listed for two witnesses")
    return unique


def verify_cosignatures(note: Note, witnesses: Sequence[NoteKey]) -> dict[str, int]:
    """{witness name: cosignature timestamp} for every witness in `witnesses`
    (type 0x04 keys) whose cosignature on the note verifies.

    A cosignature by a known witness that fails raises NoteError; unknown lines are ignored.
    One witness is one Ed25519 key: a key listed under two names, or a name listed with
    two keys, raises NoteError (it would count one signer twice towards a quorum)."""
    out: dict[str, int] = {}
    for key in distinct_witnesses(witnesses):
        if key.type != COSIGNATURE_V1:
            raise NoteError(f"witness key {key.name!r} is not a cosignature/v1 (0x04) key")
        for sig in _matching(note, key):
            if len(sig.signature) != 8 + 64:
                raise NoteError(f"malformed cosignature by {key.name}")
            timestamp = int.from_bytes(sig.signature[:8], "big")
            try:
                VerifyKey(key.public_key).verify(cosigned_message(note.text, timestamp), sig.signature[8:])
            except (BadSignatureError, ValueError):
                raise NoteError(f"bad cosignature by {key.name}") from None
            out[key.name] = timestamp
    return out
