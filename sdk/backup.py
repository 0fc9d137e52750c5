"""Passphrase-encrypted key backups: what `wallet restore` needs after a lost laptop.

A wallet's openings can all be rebuilt from the server (they are sealed to
the organisation), but its two private keys exist only in the wallet. A key
backup holds exactly those keys (and the organisation's identity), encrypted
under a passphrase:

* key derivation: Argon2id (`nacl.pwhash.argon2id.kdf`, libsodium
  `crypto_pwhash`, RFC 9106) with a random 16-byte salt and the MODERATE
  limits (opslimit 3, memlimit 256 MiB), giving a 32-byte key;
* encryption: XSalsa20-Poly1305 (`nacl.secret.SecretBox`, random 24-byte
  nonce), so a wrong passphrase or an altered file is detected.

File format (JSON object):

    {"format": "oretrace-key-backup/v1",
     "org_id": "...", "network": "...",                 (in clear, to recognise the file)
     "kdf": {"name": "argon2id", "opslimit": N, "memlimit": N, "salt": "<base64, 16 bytes>"},
     "box": "<base64 of nonce (24) || ciphertext || tag (16)>"}

The plaintext in the box is the UTF-8 JSON of the keys-only wallet
(`Wallet.keys_only().to_json()`: keys, key id, network, identity, pinned root
key; no openings).
"""

from __future__ import annotations

import base64
import json
import os
from typing import Any

import nacl.exceptions
import nacl.pwhash
import nacl.secret
import nacl.utils

from ledger.encoding import StrictJSONError, loads_strict

from .wallet import Wallet, WalletError, write_private_json

BACKUP_FORMAT = "oretrace-key-backup/v1"
OPSLIMIT = nacl.pwhash.argon2id.OPSLIMIT_MODERATE
MEMLIMIT = nacl.pwhash.argon2id.MEMLIMIT_MODERATE
MIN_PASSPHRASE = 12


class BackupError(WalletError):
    """The backup cannot be written or opened (wrong passphrase, altered or foreign file)."""


def _key(passphrase: str, salt: bytes, opslimit: int, memlimit: int) -> bytes:
    return nacl.pwhash.argon2id.kdf(
        nacl.secret.SecretBox.KEY_SIZE, passphrase.encode(), salt, opslimit=opslimit, memlimit=memlimit
    )


def export_keys(wallet: Wallet, path: str | os.PathLike, passphrase: str) -> None:
    """Write the wallet's keys, encrypted under `passphrase` (>= 12 characters), to `path` (0600, atomic)."""
    if len(passphrase) < MIN_PASSPHRASE:
        raise BackupError(f"the passphrase must have at least {MIN_PASSPHRASE} characters")
    salt = nacl.utils.random(nacl.pwhash.argon2id.SALTBYTES)
    box = nacl.secret.SecretBox(_key(passphrase, salt, OPSLIMIT, MEMLIMIT))
    plaintext = json.dumps(wallet.keys_only().to_json()).encode()
    write_private_json(
        path,
        {
            "format": BACKUP_FORMAT,
            "org_id": wallet.org_id,
            "network": wallet.network,
            "kdf": {"name": "argon2id", "opslimit": OPSLIMIT, "memlimit": MEMLIMIT,
                    "salt": base64.b64encode(salt).decode()},  # fmt: skip
            "box": base64.b64encode(bytes(box.encrypt(plaintext))).decode(),
        },
    )


def read_backup(path: str | os.PathLike) -> dict[str, Any]:
    """The backup file's JSON object (checked for shape), BackupError otherwise."""
    try:
        data = loads_strict(open(path, "rb").read())
    except FileNotFoundError:
        raise BackupError(f"no backup at {path}") from None
    except OSError as exc:
        raise BackupError(f"cannot read {path}: {exc.strerror}") from None
    except StrictJSONError as exc:
        raise BackupError(f"{path} is not a key backup ({exc})") from None
    kdf = data.get("kdf") if isinstance(data, dict) else None
    if not isinstance(data, dict) or data.get("format") != BACKUP_FORMAT or not isinstance(kdf, dict):
        raise BackupError(f"{path} is not an oretrace key backup ({BACKUP_FORMAT})")
    ops, mem = kdf.get("opslimit"), kdf.get("memlimit")
    # bounded cost: never let a file make us spend more than the MODERATE..SENSITIVE limits
    if kdf.get("name") != "argon2id" or type(ops) is not int or type(mem) is not int or not (
        nacl.pwhash.argon2id.OPSLIMIT_MIN <= ops <= nacl.pwhash.argon2id.OPSLIMIT_SENSITIVE
        and nacl.pwhash.argon2id.MEMLIMIT_MIN <= mem <= nacl.pwhash.argon2id.MEMLIMIT_SENSITIVE
    ):
        raise BackupError(f"{path}: unsupported key derivation parameters")
    if not isinstance(kdf.get("salt"), str) or not isinstance(data.get("box"), str):
        raise BackupError(f"{path}: salt and box must be base64 strings")
    return data


def import_keys(path: str | os.PathLike, passphrase: str) -> Wallet:
    """The keys-only wallet inside a backup. BackupError: wrong passphrase, altered or foreign file."""
    data = read_backup(path)
    kdf = data["kdf"]
    try:
        salt = base64.b64decode(kdf["salt"], validate=True)
        sealed = base64.b64decode(data["box"], validate=True)
    except ValueError:
        raise BackupError(f"{path}: salt or box is not base64") from None
    if len(salt) != nacl.pwhash.argon2id.SALTBYTES:
        raise BackupError(f"{path}: the salt must be {nacl.pwhash.argon2id.SALTBYTES} bytes")
    box = nacl.secret.SecretBox(_key(passphrase, salt, kdf["opslimit"], kdf["memlimit"]))
    try:
        plaintext = box.decrypt(sealed)
    except nacl.exceptions.CryptoError:
        raise BackupError("wrong passphrase, or the backup file was altered") from None
    try:
        return Wallet.from_json(loads_strict(plaintext))
    except StrictJSONError as exc:
        raise BackupError(f"{path}: the decrypted backup is not a wallet ({exc})") from None


__all__ = ["BACKUP_FORMAT", "BackupError", "MIN_PASSPHRASE", "export_keys", "import_keys", "read_backup"]
