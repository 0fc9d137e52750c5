"""An organisation's wallet: its keys and the openings only it knows.

A wallet holds

* the Ed25519 signing key (and its registered key id) that signs envelopes,
* the X25519 sealing key that opens sealed boxes addressed to the organisation,
* the openings (value, blinding) per origin class of every lot it owns or has
  received, and
* the capacity openings of the attestations of the sites it operates, with the
  openings of the issuances made under each attestation (their sum opens the
  attestation's running `cumulative` commitment).

It also pins its network's root public key (`root_public_key`, hex) when it is
created: every key and sealed box the SDK takes from the server is checked
against it (`sdk.registry`). An operator wallet's pin is its own root key.

The server never sees any of this in plaintext. Everything the wallet learns is
also on the server, sealed to the organisation (issuances, transformations and
transfers seal the openings to the owner; attestations seal the capacity
opening to the site operator), so `restore` rebuilds a lost wallet from its two
keys alone.

The wallet file is JSON, written atomically (temporary file in the same
directory, fsync, `os.replace`, fsync of the directory) and created with mode
0600 from the start (`os.open(..., 0o600)`), so a secret is never readable by
another user, not even for an instant, and a crash never leaves half a file.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nacl.public import PrivateKey, PublicKey, SealedBox
from nacl.signing import SigningKey

from crypto.group import ORDER
from crypto.pedersen import Opening
from ledger.models import ORIGIN_CLASSES

WALLET_VERSION = 1


class WalletError(Exception):
    """The wallet cannot do what was asked (missing lot, missing opening, bad file)."""


def _opening_to_json(o: Opening) -> dict[str, Any]:
    return {"value": int(o.value), "blinding": format(o.blinding % ORDER, "064x")}


def _opening_from_json(d: dict[str, Any]) -> Opening:
    if not isinstance(d, dict):
        raise WalletError("an opening must be a JSON object {value, blinding}")
    value, blinding = d.get("value"), d.get("blinding")
    if type(value) is not int:
        raise WalletError(f"an opening's value must be an integer (grams), not {value!r}")
    if isinstance(blinding, str):
        try:
            blinding = int(blinding, 16)
        except ValueError:
            raise WalletError("an opening's blinding must be hexadecimal") from None
    elif type(blinding) is not int:
        raise WalletError("an opening's blinding must be a hexadecimal string")
    if not 0 <= value < 2**64 or not 0 <= blinding < ORDER:
        raise WalletError("opening out of range")
    return Opening(value, blinding)


@dataclass
class LotEntry:
    """What the wallet knows about one lot: its per-class openings."""

    lot_id: str
    openings: dict[str, Opening]  # origin class -> opening (missing class = Opening(0, 0))
    product: str = ""
    attestation_id: str | None = None  # for lots this organisation issued
    issue_seq: int | None = None
    spent: bool = False  # consumed by a transformation or transferred away (kept for history)

    def opening(self, origin_class: str) -> Opening:
        return self.openings.get(origin_class, Opening.zero())

    @property
    def total(self) -> int:
        return sum(o.value for o in self.openings.values())

    def amounts(self) -> dict[str, int]:
        return {k: self.opening(k).value for k in ORIGIN_CLASSES}

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "openings": {k: _opening_to_json(o) for k, o in self.openings.items()},
            "product": self.product,
            "spent": self.spent,
        }
        if self.attestation_id is not None:
            d["attestation_id"] = self.attestation_id
            d["issue_seq"] = self.issue_seq
        return d

    @classmethod
    def from_json(cls, lot_id: str, d: dict[str, Any]) -> LotEntry:
        return cls(
            lot_id=lot_id,
            openings={k: _opening_from_json(o) for k, o in d.get("openings", {}).items()},
            product=d.get("product", ""),
            attestation_id=d.get("attestation_id"),
            issue_seq=d.get("issue_seq"),
            spent=bool(d.get("spent", False)),
        )


@dataclass
class CapacityEntry:
    """The opening of an attestation's capacity commitment (sealed by the auditor to the operator).

    `supersedes`: the attestation it replaces, as the auditor's signed attest_site
    event names it (None for the first of a chain); the capacity then bounds the
    whole chain's issuance (docs/ledger.md, section 5a).
    """

    attestation_id: str
    site_id: str
    opening: Opening
    supersedes: str | None = None

    def to_json(self) -> dict[str, Any]:
        d = {"site_id": self.site_id, "opening": _opening_to_json(self.opening)}
        if self.supersedes is not None:
            d["supersedes"] = self.supersedes
        return d

    @classmethod
    def from_json(cls, attestation_id: str, d: dict[str, Any]) -> CapacityEntry:
        supersedes = d.get("supersedes")
        if supersedes is not None and not isinstance(supersedes, str):
            raise WalletError(f"a capacity's supersedes must be an attestation id, not {supersedes!r}")
        return cls(attestation_id, d["site_id"], _opening_from_json(d["opening"]), supersedes)


@dataclass
class Wallet:
    org_id: str
    network: str
    key_id: str
    signing_seed: bytes  # 32-byte Ed25519 seed
    sealing_secret: bytes  # 32-byte X25519 private key
    lots: dict[str, LotEntry] = field(default_factory=dict)
    capacities: dict[str, CapacityEntry] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)  # name, roles, country: informative only
    path: Path | None = None
    root_public_key: str | None = None  # the network's pinned root key (64 lowercase hex)

    # ------------------------------------------------------------------ keys
    @classmethod
    def generate(
        cls, org_id: str, network: str, key_id: str = "k1", *, root_public_key: str | None = None, **meta: Any
    ) -> Wallet:
        """New keys for `org_id` on `network`, pinning `root_public_key` (the operator's
        published root key; WalletError if it is not 64 hex). Without one, the wallet
        can sign but refuses anything that needs the server's word checked."""
        return cls(
            org_id=org_id,
            network=network,
            key_id=key_id,
            signing_seed=secrets.token_bytes(32),
            sealing_secret=bytes(PrivateKey.generate()),
            meta=dict(meta),
            root_public_key=_root_key(root_public_key),
        )

    @property
    def pinned_root_key(self) -> str:
        """The root key to check the server against: the pin, or an operator wallet's own
        key. WalletError if the wallet pins none (created before pinning existed)."""
        if self.root_public_key is not None:
            return self.root_public_key
        if self.org_id == "operator" and self.key_id == "root":
            return self.signing_public_hex
        raise WalletError(
            f"the wallet of {self.org_id} pins no root public key for network {self.network}, so it cannot check"
            " the server's answers; set \"root_public_key\" in the wallet file to the operator's published key"
        )

    @property
    def signing_key(self) -> SigningKey:
        return SigningKey(self.signing_seed)

    @property
    def signing_public_hex(self) -> str:
        return self.signing_key.verify_key.encode().hex()

    @property
    def sealing_key(self) -> PrivateKey:
        return PrivateKey(self.sealing_secret)

    @property
    def sealing_public_hex(self) -> str:
        return bytes(self.sealing_key.public_key).hex()

    def unseal(self, ciphertext_b64: str) -> bytes:
        """Open a libsodium sealed box addressed to this organisation."""
        import base64

        return SealedBox(self.sealing_key).decrypt(base64.b64decode(ciphertext_b64))

    @staticmethod
    def seal_to(public_key_hex: str, plaintext: bytes) -> str:
        import base64

        return base64.b64encode(SealedBox(PublicKey(bytes.fromhex(public_key_hex))).encrypt(plaintext)).decode()

    # ------------------------------------------------------------------ lots
    def lot(self, lot_id: str) -> LotEntry:
        try:
            return self.lots[lot_id]
        except KeyError:
            raise WalletError(f"the wallet of {self.org_id} holds no opening for lot {lot_id}") from None

    def add_lot(self, entry: LotEntry) -> None:
        known = self.lots.get(entry.lot_id)
        if known is not None:
            # keep issuance bookkeeping learnt earlier
            entry.attestation_id = entry.attestation_id or known.attestation_id
            entry.issue_seq = entry.issue_seq if entry.issue_seq is not None else known.issue_seq
        self.lots[entry.lot_id] = entry

    def mark_spent(self, lot_ids) -> None:
        for lot_id in lot_ids:
            if lot_id in self.lots:
                self.lots[lot_id].spent = True

    def unspent(self) -> list[LotEntry]:
        return [e for e in self.lots.values() if not e.spent]

    # ------------------------------------------------------------- capacity
    def add_capacity(self, attestation_id: str, site_id: str, opening: Opening, supersedes: str | None = None) -> None:
        self.capacities[attestation_id] = CapacityEntry(attestation_id, site_id, opening, supersedes)

    def capacity(self, attestation_id: str) -> CapacityEntry:
        try:
            return self.capacities[attestation_id]
        except KeyError:
            raise WalletError(
                f"the wallet of {self.org_id} has no capacity opening for attestation {attestation_id}"
                " (run `oretrace wallet restore`)"
            ) from None

    def issued_under(self, attestation_id: str) -> list[LotEntry]:
        """Lots this organisation issued under an attestation, in sequence order."""
        issued = [e for e in self.lots.values() if e.attestation_id == attestation_id]
        return sorted(issued, key=lambda e: e.issue_seq if e.issue_seq is not None else -1)

    def capacity_chain(self, attestation_id: str) -> list[str]:
        """`attestation_id` and the attestations it supersedes, newest first, as far as the
        wallet's capacity entries name them. WalletError if the links form a cycle."""
        chain = [attestation_id]
        while (entry := self.capacities.get(chain[-1])) is not None and entry.supersedes is not None:
            if entry.supersedes in chain:
                raise WalletError(f"the attestations {', '.join(chain)} supersede each other in a cycle")
            chain.append(entry.supersedes)
        return chain

    def cumulative_opening(self, attestation_id: str) -> tuple[int, Opening]:
        """(number of issuances under `attestation_id`, opening of the cumulative commitment).

        The cumulative sums the issuances of the whole capacity chain: those under
        the attestation and under every attestation it supersedes (directly or not),
        whose total carries over to it (docs/ledger.md, section 5a)."""
        total = Opening.zero()
        for att_id in self.capacity_chain(attestation_id):
            for e in self.issued_under(att_id):
                for o in e.openings.values():
                    total = total + o
        return len(self.issued_under(attestation_id)), total

    def live_capacities(self, site_id: str) -> list[CapacityEntry]:
        """The site's capacity entries that no other entry of the wallet supersedes."""
        superseded = {c.supersedes for c in self.capacities.values()}
        return [c for c in self.capacities.values() if c.site_id == site_id and c.attestation_id not in superseded]

    # ------------------------------------------------------------ file I/O
    def to_json(self) -> dict[str, Any]:
        d = {
            "version": WALLET_VERSION,
            "org_id": self.org_id,
            "network": self.network,
            "key_id": self.key_id,
            "signing_key": self.signing_seed.hex(),
            "sealing_key": self.sealing_secret.hex(),
            "signing_public_key": self.signing_public_hex,
            "sealing_public_key": self.sealing_public_hex,
            "meta": self.meta,
            **({"root_public_key": self.root_public_key} if self.root_public_key is not None else {}),
            "lots": {k: e.to_json() for k, e in sorted(self.lots.items())},
            "capacities": {k: c.to_json() for k, c in sorted(self.capacities.items())},
        }
        return d

    @classmethod
    def from_json(cls, d: Any, path: Path | None = None) -> Wallet:
        """A wallet from its JSON object; WalletError (never another exception) if it is not one."""
        if not isinstance(d, dict):
            raise WalletError("not a wallet file: a JSON object is expected")
        if d.get("version") != WALLET_VERSION:
            raise WalletError(f"unsupported wallet version {d.get('version')!r}")
        for name, kind in (("org_id", str), ("network", str), ("key_id", str), ("signing_key", str),
                           ("sealing_key", str), ("meta", dict), ("lots", dict), ("capacities", dict)):  # fmt: skip
            if name in d and not isinstance(d[name], kind):
                raise WalletError(f"not a wallet file: {name!r} must be a JSON {'object' if kind is dict else 'string'}")
        try:
            w = cls(
                org_id=d["org_id"],
                network=d["network"],
                key_id=d["key_id"],
                signing_seed=bytes.fromhex(d["signing_key"]),
                sealing_secret=bytes.fromhex(d["sealing_key"]),
                meta=dict(d.get("meta", {})),
                path=path,
                root_public_key=_root_key(d.get("root_public_key")),
            )
        except KeyError as exc:
            raise WalletError(f"not a wallet file: {exc.args[0]!r} is missing") from None
        except ValueError as exc:
            raise WalletError(f"not a wallet file: {exc}") from None
        if len(w.signing_seed) != 32 or len(w.sealing_secret) != 32:
            raise WalletError("wallet keys must be 32 bytes")
        try:
            w.lots = {k: LotEntry.from_json(k, v) for k, v in d.get("lots", {}).items()}
            w.capacities = {k: CapacityEntry.from_json(k, v) for k, v in d.get("capacities", {}).items()}
        except WalletError as exc:
            raise WalletError(f"not a wallet file: {exc}") from None
        except (KeyError, ValueError, TypeError, AttributeError) as exc:
            raise WalletError(f"not a wallet file: a lot or capacity entry is malformed ({exc!r})") from None
        return w

    @classmethod
    def load(cls, path: str | os.PathLike) -> Wallet:
        """Read a wallet file (strict I-JSON). WalletError: missing, unreadable, not a wallet."""
        from ledger.encoding import StrictJSONError, loads_strict

        path = Path(path)
        try:
            data = loads_strict(path.read_bytes())
        except FileNotFoundError:
            raise WalletError(f"no wallet at {path}") from None
        except IsADirectoryError:
            raise WalletError(f"{path} is a directory, not a wallet file") from None
        except OSError as exc:
            raise WalletError(f"cannot read wallet {path}: {exc.strerror}") from None
        except StrictJSONError as exc:
            raise WalletError(f"{path} is not a wallet file ({exc})") from None
        try:
            return cls.from_json(data, path)
        except WalletError as exc:
            raise WalletError(f"{path}: {exc}") from None

    def save(self, path: str | os.PathLike | None = None) -> Path:
        """Write the wallet atomically, 0600; through a symbolic link, to the file it points to."""
        target = Path(path) if path is not None else self.path
        if target is None:
            raise WalletError("no path to save the wallet to")
        write_private_json(os.path.realpath(target), self.to_json())
        self.path = target
        return target

    def keys_only(self) -> Wallet:
        """A copy with the keys and nothing else (what a lost laptop leaves you with)."""
        return Wallet(self.org_id, self.network, self.key_id, self.signing_seed, self.sealing_secret,
                      meta=dict(self.meta), root_public_key=self.root_public_key)  # fmt: skip


def _root_key(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) != 64 or any(c not in "0123456789abcdef" for c in value.lower()):
        raise WalletError("root_public_key must be 64 hexadecimal characters (the operator's Ed25519 key)")
    return value.lower()


def permission_problem(path: str | os.PathLike) -> str | None:
    """Why a wallet file is too open (group or others may read or write it), or None."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if mode & 0o077:
        return f"{path} can be read by other users (mode {mode & 0o777:04o}); fix it with: chmod 600 {path}"
    return None


def write_private_json(path: str | os.PathLike, data: Any, *, parents: bool = False) -> None:
    """Atomically replace `path` with JSON `data`, readable by the owner only (0600).

    A missing directory is created only with `parents=True`; otherwise FileNotFoundError.
    """
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    if parents:
        directory.mkdir(parents=True, exist_ok=True)
    payload = (json.dumps(data, indent=2, sort_keys=False) + "\n").encode()
    # Unique name in the same directory (same filesystem, so os.replace is atomic).
    tmp_name = os.path.join(directory, f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp_name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            os.fchmod(fd, 0o600)  # in case a restrictive umask was not in force
            view = memoryview(payload)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp_name, path)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise
    try:
        dfd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


__all__ = ["CapacityEntry", "LotEntry", "Wallet", "WalletError", "permission_problem", "write_private_json"]
