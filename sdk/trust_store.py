"""Trust anchors for `oretrace verify`: which root key speaks for which network.

A disclosure bundle proves a claim only relative to the network operator's
root public key (Ed25519). That key must come from the verifier, never from
the bundle or from a file shipped next to it: whoever forges a bundle can ship
a key that matches. `resolve_anchor` takes it, in this order, from

1. `--root-key HEX` or `--root-key-file FILE` (the user typed it);
2. the environment variable `ORETRACE_ROOT_PUBLIC_KEY`;
3. the user's trust store, by network name (`oretrace trust add NETWORK KEY`).

The trust store is one JSON file (I-JSON, read with `loads_strict`)::

    $XDG_CONFIG_HOME/oretrace/trust.json    (XDG_CONFIG_HOME defaults to ~/.config)

    {"format": "oretrace-trust/v1",
     "anchors": {"<network>": {"root_public_key": "<64 lowercase hex>",
                               "added_at": "<YYYY-MM-DDTHH:MM:SSZ>"}}}

written atomically (temporary file + rename) with mode 0600 in a 0700
directory. A `root-key.hex` beside a bundle is never used: `verify` names it
and refuses with exit code 3 (`BesideKeyOnly`).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from ledger.encoding import StrictJSONError, loads_strict

TRUST_STORE_FORMAT = "oretrace-trust/v1"
ROOT_KEY_ENV = "ORETRACE_ROOT_PUBLIC_KEY"
#: The file name the demo writes next to its bundles; never a trust anchor.
BESIDE_KEY_NAME = "root-key.hex"
_NETWORK_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.:-")


class TrustStoreError(Exception):
    """The trust store cannot be read or written, or an argument is invalid.
    The message is one line for the user (exit 2)."""


class NoAnchor(TrustStoreError):
    """No trust anchor is configured for this verification (exit 2)."""


class BesideKeyOnly(TrustStoreError):
    """The only root key in sight lies next to the bundle (exit 3). `path` names it."""

    def __init__(self, message: str, path: Path):
        super().__init__(message)
        self.path = path


@dataclass(frozen=True)
class Anchor:
    """The root public key (64 lowercase hex) and where it came from, e.g.
    "--root-key", "ORETRACE_ROOT_PUBLIC_KEY", "trust store ~/.config/oretrace/trust.json (network demo)".
    `network` is the network the anchor is pinned to (trust store), or None."""

    root_public_key: str
    source: str
    network: str | None = None


def normalise_key(text: str, source: str) -> str:
    """A root public key as 64 lowercase hex; TrustStoreError naming `source` otherwise."""
    key = text.strip().lower()
    if len(key) != 64 or any(c not in "0123456789abcdef" for c in key):
        raise TrustStoreError(f"the root public key from {source} is not 64 hexadecimal characters")
    return key


def check_network(network: str) -> str:
    """A network name as the ledger spells it (1-64 of A-Z a-z 0-9 _ . : -)."""
    if not 1 <= len(network) <= 64 or not set(network) <= _NETWORK_CHARS:
        raise TrustStoreError(f"{network!r} is not a network name (1-64 characters of A-Z a-z 0-9 _ . : -)")
    return network


def wanted_name(network: str | None) -> str:
    """`network` if it is a well-formed network name, else the placeholder "NETWORK"."""
    try:
        return check_network(network) if network is not None else "NETWORK"
    except TrustStoreError:
        return "NETWORK"


def trust_store_path() -> Path:
    """$XDG_CONFIG_HOME/oretrace/trust.json, XDG_CONFIG_HOME defaulting to ~/.config
    (an empty or relative XDG_CONFIG_HOME is ignored, as the XDG spec says)."""
    base = os.environ.get("XDG_CONFIG_HOME", "")
    root = Path(base) if base and os.path.isabs(base) else Path.home() / ".config"
    return root / "oretrace" / "trust.json"


def load_anchors(path: Path | None = None) -> dict[str, str]:
    """{network: root public key hex} from the trust store ({} if it does not exist)."""
    path = path or trust_store_path()
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise TrustStoreError(f"cannot read the trust store {path}: {exc.strerror}") from None
    try:
        data = loads_strict(raw)
    except StrictJSONError as exc:
        raise TrustStoreError(f"the trust store {path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != TRUST_STORE_FORMAT or not isinstance(data.get("anchors"), dict):
        raise TrustStoreError(f"the trust store {path} is not an {TRUST_STORE_FORMAT} file")
    anchors: dict[str, str] = {}
    for network, entry in data["anchors"].items():
        where = f"the trust store {path} (network {network!r})"
        check_network(network)
        if not isinstance(entry, dict) or not isinstance(entry.get("root_public_key"), str):
            raise TrustStoreError(f"{where}: an entry is an object with a root_public_key string")
        anchors[network] = normalise_key(entry["root_public_key"], where)
    return anchors


def _save(anchors: dict[str, str], added: dict[str, str], path: Path) -> None:
    document = {
        "format": TRUST_STORE_FORMAT,
        "anchors": {n: {"root_public_key": k, "added_at": added.get(n, "")} for n, k in sorted(anchors.items())},
    }
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".trust.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(document, f, indent=2, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise TrustStoreError(f"cannot write the trust store {path}: {exc.strerror}") from None


def _added_dates(path: Path) -> dict[str, str]:
    try:
        data = loads_strict(path.read_bytes())
        return {n: e.get("added_at", "") for n, e in data["anchors"].items()}
    except (OSError, StrictJSONError, KeyError, TypeError, AttributeError):
        return {}


def add_anchor(network: str, key: str, path: Path | None = None, *, replace: bool = False) -> bool:
    """Pin `key` as the root public key of `network`. Returns False if that exact
    pin was already there. TrustStoreError if the network is pinned to another key
    and `replace` is False (a changed root key is an event to check, not to overwrite)."""
    path = path or trust_store_path()
    check_network(network)
    key = normalise_key(key, "the command line")
    anchors = load_anchors(path)
    if anchors.get(network) == key:
        return False
    if network in anchors and not replace:
        raise TrustStoreError(
            f"network {network!r} is already pinned to root key {anchors[network]}; "
            "check the new key with the operator, then `oretrace trust add --replace`"
        )
    added = _added_dates(path)
    anchors[network] = key
    added[network] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    _save(anchors, added, path)
    return True


def remove_anchor(network: str, path: Path | None = None) -> bool:
    """Unpin `network`; False if it was not pinned."""
    path = path or trust_store_path()
    anchors = load_anchors(path)
    if network not in anchors:
        return False
    added = _added_dates(path)
    del anchors[network]
    _save(anchors, added, path)
    return True


def resolve_anchor(
    *,
    root_key: str | None,
    root_key_file: Path | None,
    network: str | None,
    bundle_network: str | None,
    bundle_path: Path,
    environ: Mapping[str, str] | None = None,
    store_path: Path | None = None,
) -> Anchor:
    """The trust anchor for verifying the bundle at `bundle_path` (see the module doc for the order).

    `network` is the one the user asked for (`--network`), `bundle_network` what the
    bundle says; the trust store is searched by the first of them that is set, and an
    anchor from it is pinned to that network. Raises TrustStoreError (bad key or
    store), BesideKeyOnly (nothing configured but a root-key.hex next to the bundle)
    or NoAnchor (nothing at all)."""
    environ = os.environ if environ is None else environ
    # the bundle's network name goes into a command the user may paste into a shell:
    # only a well-formed name (A-Z a-z 0-9 _ . : -, nothing a shell interprets) is shown
    shown = wanted_name(network or bundle_network)
    if root_key and root_key_file:
        raise TrustStoreError("give either --root-key or --root-key-file, not both")
    if root_key:
        return Anchor(normalise_key(root_key, "--root-key"), "--root-key", network)
    if root_key_file:
        try:
            text = root_key_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise TrustStoreError(f"cannot read the root key file {root_key_file}: {exc}") from None
        return Anchor(normalise_key(text, str(root_key_file)), f"--root-key-file {root_key_file}", network)
    if environ.get(ROOT_KEY_ENV, "").strip():
        return Anchor(normalise_key(environ[ROOT_KEY_ENV], ROOT_KEY_ENV), ROOT_KEY_ENV, network)
    wanted = network or bundle_network
    store = store_path or trust_store_path()
    if wanted is not None:
        key = load_anchors(store).get(wanted)
        if key is not None:
            return Anchor(key, f"trust store {store} (network {wanted})", wanted)
    beside = bundle_path.parent / BESIDE_KEY_NAME
    if beside.is_file():
        raise BesideKeyOnly(
            f"{beside} lies next to the bundle and is not a trust anchor (whoever made the bundle could have made it);"
            f" get the operator's root key from them, then: oretrace trust add {shown} KEY",
            beside,
        )
    raise NoAnchor(
        f"no trust anchor for network {wanted!r}: pass --root-key HEX, set {ROOT_KEY_ENV},"
        f" or run: oretrace trust add {shown} KEY"
    )
