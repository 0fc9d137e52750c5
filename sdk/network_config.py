"""The network settings file written by `oretrace network init` and read by the other commands.

A network is named by its id and anchored by its operator's root public key;
suppliers also need the API address. `oretrace network init` writes them to
`oretrace-network.json`; every command that needs one of them and was not
given it (flag or environment variable) reads this file, found at `--config`,
else `$ORETRACE_CONFIG`, else `./oretrace-network.json` when it exists.
Precedence: flag > environment variable > this file. Nothing falls back to
the demo network silently.

Format (JSON object, read with `ledger.encoding.loads_strict`):

    {"format": "oretrace-network/v1",
     "network": "<id, ^[A-Za-z0-9_.:-]{1,64}$>",
     "root_public_key": "<64 lowercase hex: Ed25519 public key of the operator>",
     "api": "<GraphQL endpoint URL, ending in /graphql>"}

The file holds no secret (mode 0644 is fine; it is written 0600 like every
oretrace file and may be shared with the organisations of the network).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ledger.encoding import StrictJSONError, loads_strict

from .cli_params import IDENT_RE
from .wallet import write_private_json

CONFIG_FORMAT = "oretrace-network/v1"
DEFAULT_CONFIG = Path("oretrace-network.json")


class NetworkConfigError(ValueError):
    """The network settings file is unreadable or malformed (the message says which field)."""


@dataclass(frozen=True)
class NetworkConfig:
    network: str
    root_public_key: str
    api: str
    path: Path | None = None

    def to_json(self) -> dict[str, str]:
        return {"format": CONFIG_FORMAT, "network": self.network, "root_public_key": self.root_public_key, "api": self.api}

    def save(self, path: str | os.PathLike) -> Path:
        write_private_json(path, self.to_json())
        return Path(path)

    @classmethod
    def from_json(cls, data: object, path: Path | None = None) -> NetworkConfig:
        if not isinstance(data, dict) or data.get("format") != CONFIG_FORMAT:
            raise NetworkConfigError(f"{path}: not an oretrace network file (format {CONFIG_FORMAT!r} expected)")
        network, root, api = data.get("network"), data.get("root_public_key"), data.get("api")
        if not isinstance(network, str) or not IDENT_RE.match(network):
            raise NetworkConfigError(f"{path}: 'network' must be an id (1-64 of A-Z a-z 0-9 _ . : -)")
        if not isinstance(root, str) or len(root) != 64 or any(c not in "0123456789abcdef" for c in root):
            raise NetworkConfigError(f"{path}: 'root_public_key' must be 64 lowercase hexadecimal characters")
        if not isinstance(api, str) or not api.startswith(("http://", "https://")):
            raise NetworkConfigError(f"{path}: 'api' must be an http(s) URL")
        return cls(network, root, api, path)


def config_path(explicit: Path | None) -> Path | None:
    """Where the settings file is: --config, $ORETRACE_CONFIG, or ./oretrace-network.json if present."""
    if explicit is not None:
        return explicit
    if os.environ.get("ORETRACE_CONFIG"):
        return Path(os.environ["ORETRACE_CONFIG"])
    return DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None


def load_config(explicit: Path | None = None) -> NetworkConfig | None:
    """The network settings, or None when there is no file. NetworkConfigError if it is unusable."""
    path = config_path(explicit)
    if path is None:
        return None
    try:
        data = loads_strict(path.read_bytes())
    except FileNotFoundError:
        raise NetworkConfigError(f"{path}: no such network file") from None
    except OSError as exc:
        raise NetworkConfigError(f"{path}: cannot read it ({exc.strerror})") from None
    except StrictJSONError as exc:
        raise NetworkConfigError(f"{path} is not a network settings file ({exc})") from None
    return NetworkConfig.from_json(data, path)


__all__ = ["CONFIG_FORMAT", "DEFAULT_CONFIG", "NetworkConfig", "NetworkConfigError", "config_path", "load_config"]
