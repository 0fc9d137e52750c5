"""`oretrace`: run the server, start a network, act as an operator, auditor or supplier, verify bundles.

    oretrace network init --network ID                         (a new network: operator wallet + settings)
    oretrace serve [--network ID --root-public-key HEX | --demo] [--host H] [--port P] [--data-dir D]
    oretrace demo --out DIR [--size full|small]
    oretrace verify BUNDLE [--root-key HEX | --root-key-file F] [--json]
    oretrace trust add NETWORK KEY | list | remove NETWORK       (verify's pinned root keys)
    oretrace keys --org ORG --country CC --role ROLE --wallet W.json
    oretrace register REQUEST.json --wallet operator.json       (network operator)
    oretrace rotate-key | revoke-key --org ORG --key-id K ...   (network operator)
    oretrace attest --wallet auditor.json --site ... --capacity-g N   (auditor)
    oretrace issue | transfer | transform | claim | lots | bundle --wallet W.json ...
    oretrace wallet export-keys | restore | show --wallet W.json
    oretrace witness --name N --key-file F --log ORIGIN=VKEY --state-dir D   (C2SP tlog-witness)
    oretrace monitor --api URL --root-key HEX [--state D]       (replays the whole log)

Supplier commands talk to the API at --api (env ORETRACE_API, else the `api`
of the network settings file, else http://127.0.0.1:8000/graphql) and keep
their secrets in the wallet file (--wallet, env ORETRACE_WALLET), which never
leaves the machine.

Every command checks its arguments, output paths and wallet (readable,
well-formed, its directory writable) before it signs anything. Exit codes:

| code | meaning                                                                     |
|------|-----------------------------------------------------------------------------|
| 0    | done                                                                        |
| 1    | refused (by the server, or by the wallet's honest prover): nothing published |
| 2    | usage error (a bad argument, file or wallet): nothing signed or published   |
| 3    | published, but the result could not be saved locally: the message gives the ids and the command that recovers |
| 4    | outcome unknown (the server could not be reached after sending): running the same command again resubmits the same signed publication, never a second one |
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import stat
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
import typer.core
from typer.exceptions import TyperException
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from ledger.models import JSON_SAFE_MAX, MAX_CLAIM_LOTS, ORIGIN_CLASSES
from ledger.view import OPERATOR

from .cli_params import (
    GRAMS,
    SHARE_MAX,
    ClaimClassChoice,
    ClaimKindChoice,
    OriginClassChoice,
    ProcessChoice,
    RoleChoice,
    country,
    hex_key,
    ident,
    idents,
    latitude,
    longitude,
    output_file,
    parse_outputs,
    probe_writable_dir,
    text,
)
from .network_config import DEFAULT_CONFIG, NetworkConfigError, load_config

from .terminal import plain_console, safe, strip_controls

app = typer.Typer(
    name="oretrace",
    help="Confidential, verifiable provenance for critical-mineral supply chains.\n\n"
    "Exit codes: 0 done; 1 refused (nothing published); 2 usage error (nothing signed); 3 published but not"
    " saved locally (the message gives the ids and the command that recovers); 4 outcome unknown (run the same"
    " command again: it resubmits the same signed publication).",
    rich_markup_mode=None,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
wallet_app = typer.Typer(help="Wallet maintenance.", no_args_is_help=True)
app.add_typer(wallet_app, name="wallet")

# Text is never hard-wrapped when it goes to a file or a pipe (ids stay whole for scripts).
console = Console(soft_wrap=not sys.stdout.isatty())
err = Console(stderr=True, soft_wrap=not sys.stderr.isatty())

EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_NOT_SAVED = 3
EXIT_OUTCOME_UNKNOWN = 4

DEFAULT_API = "http://127.0.0.1:8000/graphql"

ApiOpt = Annotated[
    str | None,
    typer.Option("--api", envvar="ORETRACE_API", show_default=False,
                 help=f"GraphQL endpoint of the oretrace API [default: the network file's, else {DEFAULT_API}]."),
]  # fmt: skip
PublicQuantityOpt = Annotated[
    bool,
    typer.Option(
        "--allow-public-quantity",
        help="Publish a text that states a mass, volume or percentage anyway (it is public: every bundle shows it).",
    ),
]
#: Every text field of an envelope is signed in clear and copied into every bundle.
PUBLIC_TEXT = "PUBLIC: every bundle shows it; state no quantity or grade"
WalletOpt = Annotated[
    Path, typer.Option("--wallet", "-w", envvar="ORETRACE_WALLET", help="The organisation's wallet file (JSON, 0600).")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON (for scripts).")]
NetworkOpt = Annotated[
    str | None,
    typer.Option("--network", envvar="ORETRACE_NETWORK", callback=ident, show_default=False,
                 help="Network id [env ORETRACE_NETWORK, else the network file's]; the demo's is oretrace-demo."),
]  # fmt: skip
RootKeyOpt = Annotated[
    str | None,
    typer.Option("--root-public-key", envvar="ORETRACE_ROOT_PUBLIC_KEY", callback=hex_key, show_default=False,
                 help="The network operator's Ed25519 public key, 64 hex [env ORETRACE_ROOT_PUBLIC_KEY, else the network file's]."),
]  # fmt: skip

_config_path: Path | None = None  # --config of this invocation


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            print(f"oretrace {version('oretrace')}")
        except PackageNotFoundError:  # pragma: no cover - running from a source tree that is not installed
            print("oretrace (not installed)")
        raise typer.Exit(0)


@app.callback()
def _main(
    version: Annotated[bool, typer.Option("--version", is_eager=True, callback=_version, help="Print the version and exit.")] = False,
    config: Annotated[Path | None, typer.Option("--config", envvar="ORETRACE_CONFIG", show_default=False,
                      help="Network settings file [default: ./oretrace-network.json if present].")] = None,
) -> None:  # fmt: skip
    """The options every command shares."""
    global _config_path
    _config_path = config


# --------------------------------------------------------------------------- helpers


def _fail(message: str, code: int = EXIT_REFUSED) -> None:
    """Print `message` (possibly from the server, a wallet or a file: printed literally,
    control characters removed) as a one-line error and exit with `code`."""
    err.print(Text.assemble(("error: ", "bold red"), strip_controls(message)))
    raise typer.Exit(code)


def _warn(message: str) -> None:
    err.print(Text.assemble(("warning: ", "yellow"), message))


def _emit(as_json: bool, data: Any, human) -> None:
    """JSON on stdout for scripts, or the human rendering."""
    if as_json:
        print(json.dumps(data, indent=2))
    else:
        human()


def _config():
    try:
        return load_config(_config_path)
    except NetworkConfigError as exc:
        _fail(str(exc), EXIT_USAGE)


def _api_url(api: str | None) -> str:
    if api is None:
        cfg = _config()
        api = cfg.api if cfg else DEFAULT_API
    _check_api(api)
    return api


def _check_api(api: str) -> None:
    """Exit 2 unless `api` is an http(s) URL httpx can send to: no spaces or control characters, a valid port."""
    import httpx

    if not api.startswith(("http://", "https://")):
        _fail(f"--api {api!r} is not an http(s) URL (e.g. {DEFAULT_API})", EXIT_USAGE)
    if not api.isprintable() or any(ch.isspace() for ch in api):
        _fail(f"--api {api!r} holds spaces or control characters (e.g. {DEFAULT_API})", EXIT_USAGE)
    try:
        port = httpx.URL(api).port
    except httpx.InvalidURL as exc:
        _fail(f"--api {api!r} is not a valid URL ({exc})", EXIT_USAGE)
    if port is not None and not 1 <= port <= 65535:
        _fail(f"--api {api!r}: port {port} is not between 1 and 65535", EXIT_USAGE)


def _api_hint(api: str) -> str:
    path = api.split("://", 1)[-1].partition("/")[2]
    return "" if path.rstrip("/").endswith("graphql") else f" (the API is at /graphql: try --api {api.rstrip('/')}/graphql)"


def _network_and_root(network: str | None, root: str | None) -> tuple[str, str | None]:
    """Network id and root key: flag or environment, else the network settings file; no silent default."""
    cfg = _config()
    if network is None:
        if cfg is None:
            _fail("which network? pass --network ID (or set ORETRACE_NETWORK), or run where the oretrace-network.json"
                  " of `oretrace network init` is; the demo's network is --network oretrace-demo", EXIT_USAGE)  # fmt: skip
        network = cfg.network
    if root is None and cfg is not None and cfg.network == network:
        root = cfg.root_public_key
    return network, root


def _check_output(path: Path) -> None:
    try:
        output_file(path)
    except typer.BadParameter as exc:
        _fail(exc.message, EXIT_USAGE)


def _taken(path: Path, advice: str) -> str:
    """Why a file the command would create is refused: it exists (then `advice`), or it is a
    symbolic link to nothing (a wallet is written through links, so the target is named)."""
    if path.is_symlink() and not path.exists():
        return (f"{path} is a symbolic link to {os.readlink(path)}, which does not exist: remove the link,"
                " or create the wallet where it points with --wallet <target>")  # fmt: skip
    return f"{path} exists; {advice}"


def _save_new(wallet, path: Path) -> None:
    try:
        wallet.save(path)
    except OSError as exc:
        _fail(f"cannot write {path}: {exc.strerror}", EXIT_REFUSED)


def _run(coro, *, wallet: Path | None = None, journal=None, api: str | None = None):
    """Run a coroutine; every expected failure becomes one message and its exit code (never a traceback)."""
    from .client import ApiError, ApiRejection
    from .publisher import ClaimSetRefused, NotSaved, ProvingRefused
    from .wallet import WalletError

    try:
        return asyncio.run(coro)
    except NotSaved as exc:
        r = exc.published
        ids = ", ".join(x for x in [*r.lot_ids, r.claim_id or "", r.attestation_id or ""] if x)
        _fail(
            f"the server accepted the {r.type} (event {r.event_id}{', ' + ids if ids else ''}) but the wallet could not"
            f" be saved: {exc.reason.strerror or exc.reason}. Free the disk or fix the permissions, then run the same"
            f" command again (it resubmits the same signed publication, never a second one), or rebuild the wallet"
            f" with: oretrace wallet restore --wallet {wallet}",
            EXIT_NOT_SAVED,
        )
    except ApiRejection as exc:
        if exc.code == "OUTCOME_UNKNOWN":  # the server could not tell whether it committed
            _fail(f"{exc.code}: {exc.message}. Run the same command again: it resubmits the same signed"
                  " publication, so it cannot be published twice.", EXIT_OUTCOME_UNKNOWN)  # fmt: skip
        hint = _api_hint(api) if api and exc.code.startswith("GRAPHQL") else ""
        _fail(f"the API refused it: {exc.code}: {exc.message}{hint}; nothing was published")
    except ProvingRefused as exc:
        verb = "send" if isinstance(exc, ClaimSetRefused) else "prove"
        _fail(f"the wallet refuses to {verb} it: {exc}; nothing was published")
    except WalletError as exc:
        _fail(str(exc))
    except ApiError as exc:
        hint = _api_hint(api) if api else ""
        if journal is not None and journal.path.exists():
            _fail(f"{exc}{hint}. The outcome of the publication is unknown: run the same command again; it resubmits"
                  " the same signed publication, so it cannot be published twice.", EXIT_OUTCOME_UNKNOWN)  # fmt: skip
        _fail(f"{exc}{hint}")
    except OSError as exc:
        _fail(f"{exc.strerror or exc}: {exc.filename or ''}; nothing was published")


def _load_wallet(path: Path, *, writable: bool = False):
    """The wallet at `path`, or exit 2 (missing, unreadable, malformed, or, if `writable`, unsaveable)."""
    from .wallet import Wallet, WalletError, permission_problem

    try:
        w = Wallet.load(path)
    except WalletError as exc:
        _fail(str(exc), EXIT_USAGE)
    problem = permission_problem(path)
    if problem:
        _warn(problem)
    if writable:
        why = probe_writable_dir(Path(os.path.realpath(path)).parent)
        if why:
            _fail(f"the wallet could not be saved after publishing: {why}. Nothing was signed.", EXIT_USAGE)
    return w


def _progress() -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    )


def _grams(g: int) -> str:
    """Grams of cobalt for people, never rounded: 950 g, 12.345 kg, 3,899.995 kg."""
    if g < 1_000:
        return f"{g} g"
    return f"{g // 1000:,}.{g % 1000:03d} kg"


# --------------------------------------------------------------------------- verify and trust

#: `verify` exit codes: 0 proven, 1 not proven, 2 unreadable input or no anchor,
#: 3 the only root key in sight lies next to the bundle (never an anchor).
EXIT_BESIDE_KEY = 3

def _verify_refusal(error: str, code: int, bundle: str | None) -> str:
    """`verify --json`'s document when nothing was verified (exit 2 or 3): `error` without
    control characters, `bundle` the path given (null if there was none)."""
    document = {"ok": False, "verified": False, "exit_code": code, "error": strip_controls(error), "bundle": bundle}
    return json.dumps(document, indent=2)


class _VerifyCommand(typer.core.TyperCommand):
    """`verify`: with --json, a usage error found before the command runs (a bad option value,
    an unknown option, no bundle) also prints the refusal document on stdout (`bundle` null);
    click then prints its usage message on stderr and exits 2 as for any command."""

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:
        options = args[: args.index("--")] if "--" in args else list(args)  # the parser consumes `args`
        try:
            return super().parse_args(ctx, args)
        except TyperException as exc:  # typer's click: UsageError, BadParameter, NoSuchOption, ...
            if "--json" in options:  # `bundle` null: the command line was not understood
                print(_verify_refusal(exc.format_message(), exc.exit_code, None))
            raise


trust_app = typer.Typer(
    help="Pinned trust anchors: the root public key of each network, for `oretrace verify`.",
    no_args_is_help=True,
)
app.add_typer(trust_app, name="trust")


@app.command(cls=_VerifyCommand)
def verify(
    bundle: Annotated[Path, typer.Argument(help="A disclosure bundle (JSON).", show_default=False)],
    root_key: Annotated[str | None, typer.Option("--root-key", help="The network operator's root public key (hex).")] = None,
    root_key_file: Annotated[Path | None, typer.Option("--root-key-file", help="File holding the root public key.")] = None,
    network: Annotated[
        str | None, typer.Option("--network", help="Accept only bundles of this network (when one root key serves several).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    witness: Annotated[
        list[str] | None,
        typer.Option("--witness", help="A trusted witness's vkey NAME+ID+KEY (cosignature/v1; repeatable)."),
    ] = None,
    min_cosignatures: Annotated[
        int, typer.Option("--min-cosignatures", min=0, help="Cosignatures by --witness keys the checkpoint needs.")
    ] = 0,
    allow_unanchored: Annotated[
        bool,
        typer.Option(
            "--allow-unanchored",
            help="Accept a bundle without a log checkpoint and inclusion proofs (it then proves only that SOME"
            " signed history makes the claim true, not that it is the ledger's; see docs/log.md).",
        ),
    ] = False,
) -> None:
    """Verify a disclosure bundle offline.

    The root key comes from --root-key / --root-key-file, else ORETRACE_ROOT_PUBLIC_KEY,
    else the trust store (`oretrace trust add NETWORK KEY`); a root-key.hex next to the
    bundle is never used. Exit 0: the claim is proven; 1: it is not; 2: unreadable input,
    no trust anchor or a malformed ORETRACE_BUNDLE_WORKERS / ORETRACE_BUNDLE_WORKER_TIMEOUT;
    3: the only key found lies next to the bundle."""
    from crypto.batch import WorkerSettingError, check_settings
    from ledger.bundle import verify_bundle

    from .report import UnreadableBundle, json_report, print_report, read_bundle_file
    from .trust_store import BESIDE_KEY_NAME, BesideKeyOnly, TrustStoreError, resolve_anchor

    out, errors = plain_console(), plain_console(stderr=True)

    def refuse(exc: Exception, code: int) -> NoReturn:
        """Nothing was verified: the reason on stderr (and, with --json, as a JSON document)."""
        errors.print(f"[bold red]error:[/] {safe(exc)}")
        if as_json:
            print(_verify_refusal(str(exc), code, str(bundle)))
        raise typer.Exit(code)

    try:
        check_settings()
        witnesses = _witness_keys(witness or [], min_cosignatures)
        data = read_bundle_file(bundle)
        bundle_network = data.get("network") if isinstance(data.get("network"), str) else None
        anchor = resolve_anchor(root_key=root_key, root_key_file=root_key_file, network=network,
                                bundle_network=bundle_network, bundle_path=bundle)  # fmt: skip
    except BesideKeyOnly as exc:
        refuse(exc, EXIT_BESIDE_KEY)
    except (UnreadableBundle, TrustStoreError, BadWitnessOption, WorkerSettingError) as exc:
        refuse(exc, 2)
    beside = bundle.parent / BESIDE_KEY_NAME
    beside_key = _key_file_text(beside)
    ignored = beside if beside_key is not None and beside_key != anchor.root_public_key else None

    started = time.perf_counter()
    checks = dict(
        network=anchor.network, require_log=not allow_unanchored, witnesses=witnesses, min_cosignatures=min_cosignatures
    )
    if as_json:
        report = verify_bundle(data, anchor.root_public_key, **checks)
    else:
        with errors.status("Replaying the bundle's events and verifying every proof..."):
            report = verify_bundle(data, anchor.root_public_key, **checks)
    elapsed = time.perf_counter() - started
    if as_json:
        document = json_report(report, bundle, anchor, elapsed)
        if ignored is not None:
            document["ignored_key_file"] = str(ignored)
        print(json.dumps(document, indent=2))
    else:
        print_report(out, report, bundle, anchor, elapsed, ignored)
    raise typer.Exit(0 if report.ok else 1)


#: The most of a key file next to a bundle that `verify` reads (a key is 64 hex digits).
MAX_KEY_FILE_BYTES = 4096


def _key_file_text(path: Path) -> str | None:
    """The key in `path` (stripped, lowercase) if it is a regular file, else None. Opened without
    blocking and read up to MAX_KEY_FILE_BYTES: a FIFO or a device planted beside a bundle (an
    archive can carry either, or a link to one) must neither hang `verify` nor fill its memory."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as file:
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return None
            return file.read(MAX_KEY_FILE_BYTES).decode().strip().lower()
        except (OSError, UnicodeDecodeError):
            return None


class BadWitnessOption(ValueError):
    """A --witness or --min-cosignatures value `verify` cannot use (exit 2)."""


def _witness_keys(vkeys: list[str], min_cosignatures: int) -> tuple:
    """--witness vkeys as ledger.checkpoint.NoteKey (type 0x04). BadWitnessOption on a malformed one."""
    from ledger.checkpoint import COSIGNATURE_V1, NoteError, distinct_witnesses, parse_vkey

    keys = []
    for text in vkeys:
        try:
            key = parse_vkey(text)
        except NoteError as exc:
            raise BadWitnessOption(f"--witness {text!r}: {exc}") from None
        if key.type != COSIGNATURE_V1:
            raise BadWitnessOption(f"--witness {text!r}: not a cosignature/v1 (type 0x04) key")
        keys.append(key)
    try:
        keys = distinct_witnesses(keys)
    except NoteError as exc:
        raise BadWitnessOption(f"--witness: {exc}") from None
    if min_cosignatures > len(keys):
        raise BadWitnessOption(f"--min-cosignatures {min_cosignatures} needs at least that many --witness keys")
    return tuple(keys)


@trust_app.command("add")
def trust_add(
    network: Annotated[str, typer.Argument(help="The network name, as in its bundles' \"network\" field.")],
    key: Annotated[str, typer.Argument(help="Its operator's root public key (64 hex), obtained from the operator.")],
    replace: Annotated[bool, typer.Option("--replace", help="Replace a different key already pinned for NETWORK.")] = False,
) -> None:
    """Pin NETWORK's root public key in the trust store (check it with the operator first)."""
    from .trust_store import TrustStoreError, add_anchor, trust_store_path

    try:
        changed = add_anchor(network, key, replace=replace)
    except TrustStoreError as exc:
        plain_console(stderr=True).print(f"[bold red]error:[/] {safe(exc)}")
        raise typer.Exit(2) from None
    verb = "pinned" if changed else "already pinned"
    plain_console().print(f"{safe(network)}: root key {key.strip().lower()} {verb} in {safe(trust_store_path())}")


@trust_app.command("list")
def trust_list(as_json: Annotated[bool, typer.Option("--json", help="Print the anchors as JSON.")] = False) -> None:
    """List the pinned networks and their root keys."""
    from .trust_store import TrustStoreError, load_anchors, trust_store_path

    try:
        anchors = load_anchors()
    except TrustStoreError as exc:
        plain_console(stderr=True).print(f"[bold red]error:[/] {safe(exc)}")
        raise typer.Exit(2) from None
    if as_json:
        print(json.dumps({"trust_store": str(trust_store_path()), "anchors": anchors}, indent=2))
        return
    console_ = plain_console()
    if not anchors:
        console_.print(f"no pinned networks in {safe(trust_store_path())}; add one with: oretrace trust add NETWORK KEY")
        return
    for name, value in sorted(anchors.items()):
        console_.print(f"{safe(name)}  {value}")


@trust_app.command("remove")
def trust_remove(network: Annotated[str, typer.Argument(help="The network to unpin.")]) -> None:
    """Unpin NETWORK (exit 1 if it was not pinned)."""
    from .trust_store import TrustStoreError, remove_anchor

    try:
        removed = remove_anchor(network)
    except TrustStoreError as exc:
        plain_console(stderr=True).print(f"[bold red]error:[/] {safe(exc)}")
        raise typer.Exit(2) from None
    if not removed:
        plain_console(stderr=True).print(f"[bold red]error:[/] network {safe(network)} is not pinned")
        raise typer.Exit(1)
    plain_console().print(f"{safe(network)}: unpinned")

# --------------------------------------------------------------------------- serve / demo


def _settings(data_dir: Path | None, **overrides):
    from api.settings import Settings, SettingsError

    try:
        return Settings.from_env(data_dir=data_dir, **overrides)
    except SettingsError as exc:
        _fail(str(exc), 2)


def _require_worker_settings() -> None:
    """Exit 2 naming it on a malformed ORETRACE_BUNDLE_WORKERS / ORETRACE_BUNDLE_WORKER_TIMEOUT,
    before a demo starts: the demo verifies its bundles (`verify_bundle`), and every one
    would otherwise end "INVALID: internal" after the whole run."""
    from crypto.batch import WorkerSettingError, check_settings

    try:
        check_settings()
    except WorkerSettingError as exc:
        _fail(str(exc), 2)


def _print_log_key(settings) -> None:
    """Print the transparency log's origin and checkpoint key (created on first start), for the
    operator to compare with what `oretrace log register-key` registers."""
    from api.translog import load_log_key
    from ledger.checkpoint import key_from_signing_key

    try:
        key = key_from_signing_key(settings.origin, load_log_key(settings.log_key, settings.data_dir))
    except (OSError, ValueError) as exc:
        _fail(f"the log key in {settings.data_dir} cannot be read ({exc}); restore it from a backup", EXIT_USAGE)
    console.print(f"transparency log {settings.origin}, checkpoint key {key.public_key.hex()}\n  vkey {key.vkey()}\n"
                  "the operator registers it once (bundles are anchored only then): oretrace log register-key"
                  " --wallet operator.json", highlight=False, soft_wrap=True)  # fmt: skip


def _require_free_port(host: str, port: int) -> None:
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            _fail(f"cannot listen on {host}:{port} ({exc.strerror}); is another server running? choose --port", 2)


def _require_free_data_dir(settings) -> None:
    """Refuse (exit 2) a data directory whose embedded database another live server runs.

    The API records its embedded database's pid in <data dir>/embedded.json while it
    runs and removes it on a clean stop; a record whose process is gone is stale.
    """
    if settings.mongodb_uri:
        return
    info = Path(settings.data_dir) / "embedded.json"
    try:
        pid = int(json.loads(info.read_text())["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return  # stale: that server is gone
    except PermissionError:
        pass  # alive, another user's
    _fail(f"the data directory {settings.data_dir} is in use by another oretrace server (its database runs as"
          f" process {pid}); stop that server, or choose another --data-dir", EXIT_USAGE)  # fmt: skip


@app.command()
def serve(
    network: NetworkOpt = None,
    root_public_key: RootKeyOpt = None,
    demo: Annotated[bool, typer.Option("--demo", help="Seed the demo supply chain first (once per data directory); brings its own demo network and key.")] = False,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port.")] = 8000,
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="Embedded database directory [env ORETRACE_DATA_DIR; ./oretrace-data].")
    ] = None,
    size: Annotated[str, typer.Option(help="Demo size: full or small.")] = "full",
    log_level: Annotated[str, typer.Option(help="Server log level: critical, error, warning, info or debug.")] = "info",
) -> None:
    """Run the GraphQL API (embedded database unless MONGODB_URI is set); GraphiQL at /graphql.

    A real network needs its id and its operator's root public key: --network / ORETRACE_NETWORK and
    --root-public-key / ORETRACE_ROOT_PUBLIC_KEY, or the oretrace-network.json of `oretrace network init`.
    Other settings (MONGODB_URI, ORETRACE_DATABASE, limits) are environment variables: docs/operations.md.
    """
    from api.server import LOG_LEVELS

    if size not in ("full", "small"):
        _fail("--size must be full or small", EXIT_USAGE)
    if log_level not in LOG_LEVELS:
        _fail(f"--log-level must be one of {', '.join(LOG_LEVELS)}", EXIT_USAGE)
    if demo:
        _require_worker_settings()
    _require_free_port(host, port)
    _require_free_data_dir(_settings(data_dir))
    if not demo:
        from api.server import serve as api_serve

        net, root = _network_and_root(network, root_public_key)
        if root is None:
            _fail("no root public key: pass --root-public-key HEX (or set ORETRACE_ROOT_PUBLIC_KEY), the network"
                  " operator's key printed by `oretrace network init`; or run `oretrace serve --demo`", EXIT_USAGE)  # fmt: skip
        settings = _settings(data_dir, network=net, root_public_key=root)
        console.print(f"oretrace API for network {net} on http://{host}:{port}/graphql (GraphiQL in a browser),"
                      " health at /healthz", highlight=False)  # fmt: skip
        _print_log_key(settings)
        try:
            api_serve(host, port, settings=settings, log_level=log_level)
        except KeyboardInterrupt:
            pass
        except SystemExit as exc:  # uvicorn exits this way when startup fails (it logged why)
            if exc.code not in (0, None):
                _fail("the server could not start (see the log above)", EXIT_REFUSED)
        return
    try:
        asyncio.run(_serve_demo(host, port, data_dir, size, log_level))
    except KeyboardInterrupt:
        pass
    except SystemExit as exc:  # uvicorn exits this way when startup fails (it logged why)
        if exc.code not in (0, None):
            _fail("the server could not start (see the log above)", 1)


async def _serve_demo(host: str, port: int, data_dir: Path | None, size: str, log_level: str) -> None:
    from .client import ApiRejection, Client
    from .demo import load_wallets, make_wallets, save_wallets
    from .hosting import running_server
    from .wallet import write_private_json

    base = _settings(data_dir)
    wallet_dir = Path(base.data_dir) / "demo-wallets"
    marker = Path(base.data_dir) / "demo-seeded.json"
    if (wallet_dir / "operator.json").exists():
        wallets = load_wallets(wallet_dir)
    else:
        wallets = make_wallets(base.network)
        save_wallets(wallets, wallet_dir)
    operator = wallets["operator"]
    if base.root_public_key and base.root_public_key != operator.signing_public_hex:
        err.print("[yellow]note:[/] --demo uses its own demo operator key, not ORETRACE_ROOT_PUBLIC_KEY")
    settings = base.model_copy(update={"root_public_key": operator.signing_public_hex, "network": operator.network})

    console.print(f"Starting oretrace (data in {Path(settings.data_dir).resolve()}, "
                  f"{'MongoDB at MONGODB_URI' if settings.mongodb_uri else 'embedded database'})...")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - non-Unix
            pass
    async with running_server(settings, host, port, log_level="warning" if log_level == "info" else log_level) as (
        url, server, task,
    ):  # fmt: skip
        api = f"{url}/graphql"
        ids: dict[str, Any] | None = None
        async with Client(api) as client:
            if marker.exists():
                ids = json.loads(marker.read_text()).get("ids")
                if ids and await client.lot(ids.get("lot_pack_clean", "")) is None:
                    ids = None  # the database was reset: seed again
            if ids is None:
                console.print("Seeding the demo supply chain through the API (once per data directory, about 15 s)...")
                seeding = asyncio.create_task(_seed(client, wallets, size))
                stopper = asyncio.create_task(stop.wait())
                done, _ = await asyncio.wait({seeding, stopper}, return_when=asyncio.FIRST_COMPLETED)
                if seeding not in done:
                    seeding.cancel()
                    return
                stopper.cancel()
                try:
                    result = seeding.result()
                except ApiRejection as exc:
                    hint = (
                        " (this data directory holds an earlier demo whose wallets are gone: use another"
                        " --data-dir or delete it)" if exc.code == "ALREADY_EXISTS" else ""
                    )
                    _fail(f"seeding the demo failed: {exc.code}: {exc.message}{hint}")
                save_wallets(wallets, wallet_dir)
                ids = result.ids
                write_private_json(marker, {"ids": ids, "root_public_key": result.root_public_key, "result": result.to_json()})
                _print_outcomes(result)
        _print_banner(api, settings, ids, wallet_dir)
        waiter = asyncio.create_task(stop.wait())
        await asyncio.wait({waiter, task}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        console.print("Shutting down...")


async def _seed(client, wallets, size, out=None):
    """Play the scenario with a progress bar (one step per stage of the story)."""
    from .demo import STAGES, run_scenario

    with _progress() as progress:
        task = progress.add_task("starting", total=STAGES)
        seen = 0

        def say(msg: str) -> None:
            nonlocal seen
            if msg.startswith("  "):
                progress.console.print(msg)
            else:
                if seen:
                    progress.advance(task)
                seen += 1
                progress.update(task, description=msg)

        result = await run_scenario(client, wallets, size=size, out_dir=out, progress=say)
        progress.update(task, completed=STAGES)
        return result


def _print_banner(api: str, settings, ids: dict[str, Any], wallet_dir: Path) -> None:
    pack = ids.get("lot_pack_clean", "<lot id>")
    mixed = ids.get("lot_pack_mixed", "<lot id>")
    claim = ids.get("claim_clean_recycled_16pct", "<claim id>")
    aggregate = ids.get("claim_model_year_recycled_16pct", "<claim id>")
    console.rule("[bold]oretrace is running")
    console.print(f"[bold]GraphiQL[/]: open {api} in a browser (health: {api.rsplit('/graphql', 1)[0]}/healthz)")
    console.print(f"Network [bold]{settings.network}[/], root public key {settings.root_public_key}")
    console.print(f"Demo wallets (keys and openings of each organisation, mode 0600): {wallet_dir}")
    console.print("\nTry these in GraphiQL (ids are from this seeding):\n")
    examples = [
        "The OEM's lots and their claims",
        '{ lots(owner: "rhine-motors", first: 5) { edges { node { id product claims { id lotIds kind classSet originClass p pMax q } } } } }',
        "Ancestry of the clean pack batch (A), back to the mine sites",
        f'{{ provenance(lotId: "{pack}", maxDepth: 20) {{ truncated nodes {{ id product originClass site {{ name region }} owner {{ name country }} }} edges {{ parent child }} }} }}',
        "Ancestry of the mixed batch (B): note the artisanal nodes",
        f'{{ provenance(lotId: "{mixed}") {{ nodes {{ id originClass site {{ name region }} }} }} }}',
        "A disclosure bundle (save it as a file and run `oretrace verify FILE --root-key <root public key>`)",
        f'{{ disclosureBundle(lotId: "{pack}", claimId: "{claim}") }}',
        "The bundle of the aggregate claim over the model's three clean deliveries (its lots come from the claim)",
        f'{{ disclosureBundle(claimId: "{aggregate}") }}',
    ]
    for title, query in zip(examples[::2], examples[1::2]):
        console.print(f"  [dim]# {title}[/]")
        console.print("  " + query, soft_wrap=True, highlight=False, markup=False)
    console.print(
        f"\nThe OEM's own lots with decrypted amounts:\n  oretrace lots --api {api} --wallet {wallet_dir / 'rhine-motors.json'}",
        soft_wrap=True,
    )
    console.print("\nPress Ctrl-C to stop.")


def _print_outcomes(result) -> None:
    table = Table(title=f"Demo scenario ({result.size}): {result.accepted} publications accepted, "
                  f"{result.rejected} rejected, {result.seconds:.1f} s")
    table.add_column("", width=1)
    table.add_column("step", ratio=3, overflow="fold")
    table.add_column("expected", ratio=2, overflow="fold")
    table.add_column("observed", ratio=4, overflow="fold")
    for o in result.outcomes:
        observed = o.observed if len(o.observed) <= 140 else o.observed[:139] + "…"
        table.add_row("[green]✓[/]" if o.ok else "[bold red]✗[/]", safe(o.step), safe(o.expected), safe(observed))
    console.print(table)


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", help="Directory for the disclosure bundles and root-key.hex.")] = Path(
        "demo-out"
    ),
    size: Annotated[str, typer.Option(help="full (realistic volumes, several shipments) or small.")] = "full",
    as_json: Annotated[bool, typer.Option("--json", help="Also print the outcome as JSON.")] = False,
) -> None:
    """Run the demo supply chain on a fresh embedded instance, write and verify its bundles."""
    if size not in ("full", "small"):
        _fail("--size must be full or small", 2)
    _require_worker_settings()
    try:
        result = asyncio.run(_demo(out, size))
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    _print_outcomes(result)
    table = Table(title=f"Disclosure bundles in {out}/ (verify with: oretrace verify {out}/<name>.json)")
    table.add_column("bundle")
    table.add_column("claim")
    table.add_column("offline verification")
    for b in result.bundles:
        table.add_row(
            b.path.name if b.path else b.name,
            b.statement + (f", over {len(b.lot_ids)} lots" if len(b.lot_ids) > 1 else ""),
            f"[green]VALID[/] ({b.verify_seconds:.1f} s)" if b.ok else "[bold red]INVALID[/]",
        )
    console.print(table)
    if as_json:
        print(json.dumps(result.to_json(), indent=2))
    if result.ok:
        console.print(f"[bold green]All {len(result.outcomes)} expected outcomes happened[/] in {result.seconds:.1f} s.")
    else:
        bad = sum(not o.ok for o in result.outcomes)
        console.print(f"[bold red]{bad} expected outcome(s) did not happen.[/]")
        raise typer.Exit(1)


async def _demo(out: Path, size: str):
    import tempfile

    from api.settings import Settings

    from .client import Client
    from .demo import make_wallets
    from .hosting import running_server

    wallets = make_wallets()
    operator = wallets["operator"]
    with tempfile.TemporaryDirectory(prefix="oretrace-demo-") as tmp:
        settings = Settings(
            data_dir=Path(tmp),
            network=operator.network,
            root_public_key=operator.signing_public_hex,
        )
        err.print(f"Starting a fresh embedded oretrace instance in {tmp} ...")
        async with running_server(settings) as (url, _server, _task):
            err.print(f"API at {url}/graphql; running the scenario through it")
            async with Client(f"{url}/graphql") as client:
                return await _seed(client, wallets, size, out)


# --------------------------------------------------------------------------- check, then publish, then save


def _intent(command: str, **args: Any) -> dict[str, Any]:
    """What this invocation asks for, as JSON data (a retry of the same command has the same intent)."""
    return json.loads(json.dumps({"command": command, **args}))


def _report_resumed(resumed) -> None:
    kind = resumed.pending.envelope.payload.type
    if resumed.published is not None:
        _warn(f"an interrupted {kind} publication was completed first: event {resumed.published.event_id}"
              + (f", lots {', '.join(resumed.published.lot_ids)}" if resumed.published.lot_ids else "")
              + (f", claim {resumed.published.claim_id}" if resumed.published.claim_id else ""))
    else:
        reason = f" ({resumed.rejection.code}: {resumed.rejection.message})" if resumed.rejection else ""
        _warn(f"an interrupted {kind} publication was not accepted{reason}; it published nothing")


def _publish(wallet_path: Path, api: str | None, intent: dict[str, Any], act, *, keep_pending: bool = False):
    """Load and check the wallet, settle any pending publication, then `await act(publisher, client)`.

    If the pending publication was this very command (a retry), its outcome is
    returned and nothing new is signed. Returns (Published, the wallet as saved).
    `keep_pending`: the command has more to save after publishing (a bundle), so the
    envelope stays in the journal until the caller clears it: a retry still publishes once.
    """
    from .client import Client
    from .journal import Journal, resume_pending
    from .publisher import Publisher

    w = _load_wallet(wallet_path, writable=True)
    journal = Journal(wallet_path, intent)
    url = _api_url(api)

    async def go():
        async with Client(url) as client:
            resumed = await resume_pending(w, client, journal)
            if resumed is not None:
                _report_resumed(resumed)
                if resumed.published is not None and resumed.pending.intent == journal.intent:
                    _keep(resumed.pending.envelope)
                    return resumed.published
            published = await act(Publisher(w, client, journal=journal, fetch_receipts=True), client)
            _keep(journal.last_envelope)
            return published

    def _keep(envelope) -> None:
        if keep_pending and envelope is not None:
            try:
                journal.record(envelope)
            except OSError:  # best effort: the caller prints the recovery command anyway
                pass

    return _run(go(), wallet=wallet_path, journal=journal, api=url), w


def _published_json(r) -> dict[str, Any]:
    return {"event_id": r.event_id, "type": r.type, "lot_ids": r.lot_ids, "claim_id": r.claim_id,
            "attestation_id": r.attestation_id}  # fmt: skip


# --------------------------------------------------------------------------- network and keys


network_app = typer.Typer(help="Start and describe a network of your own.", no_args_is_help=True)
app.add_typer(network_app, name="network")


@network_app.command("init")
def network_init(
    network: Annotated[str, typer.Option("--network", callback=ident, help="The new network's id (1-64 of A-Z a-z 0-9 _ . : -).")],
    wallet: Annotated[Path, typer.Option("--wallet", "-w", help="Where to create the operator's wallet (0600).")] = Path("operator.json"),
    config: Annotated[Path, typer.Option("--config", help="Where to write the network settings file.")] = DEFAULT_CONFIG,
    api: Annotated[str, typer.Option("--api", help="The GraphQL endpoint suppliers will use.")] = DEFAULT_API,
    as_json: JsonOpt = False,
) -> None:
    """Create a new network: the operator's wallet (its key is the network's root key) and the settings file.

    Prints the root public key and the environment to export for `oretrace serve`. Refuses to overwrite
    an existing wallet or settings file.
    """
    from .network_config import NetworkConfig
    from .wallet import Wallet

    for path, what in ((wallet, "wallet"), (config, "settings file")):
        if path.exists() or path.is_symlink():
            _fail(_taken(path, f"this network's {what} would be lost (choose another path)"), EXIT_USAGE)
        _check_output(path)
    _check_api(api)
    w = Wallet.generate(OPERATOR, network, key_id="root", name="network operator", roles=[])
    w.root_public_key = w.signing_public_hex
    cfg = NetworkConfig(network, w.signing_public_hex, api)
    _save_new(w, wallet)
    cfg.save(config)
    data = {"network": network, "root_public_key": w.signing_public_hex, "api": api, "wallet": str(wallet),
            "config": str(config)}  # fmt: skip
    if as_json:
        print(json.dumps(data, indent=2))
        return
    console.print(f"network {network}: operator wallet {wallet} (0600), settings {config}")
    console.print(f"root public key: {w.signing_public_hex}")
    console.print("Give the root public key to every organisation and verifier (they pin it); keep the wallet offline"
                  f" and backed up: oretrace wallet export-keys --wallet {wallet} --out {wallet}.backup")
    console.print("Serve the network with (or run the commands in this directory, they read the settings file):")
    print(f"export ORETRACE_NETWORK={network}\nexport ORETRACE_ROOT_PUBLIC_KEY={w.signing_public_hex}")


@app.command()
def keys(
    org: Annotated[str, typer.Option("--org", callback=ident, help="The organisation id (as the operator will register it).")],
    wallet: WalletOpt,
    network: NetworkOpt = None,
    root_public_key: RootKeyOpt = None,
    key_id: Annotated[str, typer.Option("--key-id", callback=ident, help="Id of the signing key.")] = "k1",
    name: Annotated[str | None, typer.Option(callback=text, help="Legal name (for the registration request).")] = None,
    country_code: Annotated[str | None, typer.Option("--country", callback=country, help="ISO 3166-1 alpha-2 country code (e.g. CD, DE).")] = None,
    role: Annotated[list[RoleChoice] | None, typer.Option("--role", case_sensitive=False, help="Role (repeat for several, at most 4).")] = None,
    force: Annotated[bool, typer.Option(help="Overwrite an existing wallet (its keys would be lost).")] = False,
) -> None:
    """Generate an organisation's signing and sealing keys into a new wallet (0600).

    Prints the registration request (public keys only, JSON on stdout) to hand to the network operator.
    """
    from .wallet import Wallet

    net, root = _network_and_root(network, root_public_key)
    roles = [r.value for r in role or []]
    if org == OPERATOR:
        _fail("the operator's wallet is created by `oretrace network init`", EXIT_USAGE)
    if country_code is None:
        _fail("--country is required (ISO 3166-1 alpha-2, e.g. CD)", EXIT_USAGE)
    if not 1 <= len(roles) <= 4 or len(set(roles)) != len(roles):
        _fail(f"give one to four different --role values ({', '.join(r.value for r in RoleChoice)})", EXIT_USAGE)
    if (wallet.exists() or wallet.is_symlink()) and not force:
        _fail(_taken(wallet, "use --force to overwrite (its keys would be lost)"), EXIT_USAGE)
    _check_output(wallet)
    w = Wallet.generate(org, net, key_id=key_id, root_public_key=root, name=name or org, country=country_code, roles=roles)
    _save_new(w, wallet)
    request = {
        "org_id": w.org_id,
        "name": w.meta["name"],
        "country": country_code,
        "roles": roles,
        "key_id": w.key_id,
        "signing_public_key": w.signing_public_hex,
        "sealing_public_key": w.sealing_public_hex,
        "network": net,
    }
    err.print(f"wallet written to {wallet} (mode 0600); it holds the private keys.")
    err.print(f"Back it up now (the keys exist nowhere else): oretrace wallet export-keys --wallet {wallet} --out {wallet}.backup")
    if root is None:
        _warn("no root public key pinned (pass --root-public-key, or run where oretrace-network.json is)")
    print(json.dumps(request, indent=2))


def _read_request(path: Path, network: str) -> dict[str, Any]:
    """A registration request from `oretrace keys`, every field checked (exit 2 otherwise)."""
    from ledger.encoding import StrictJSONError, loads_strict

    try:
        req = loads_strict(path.read_bytes())
    except FileNotFoundError:
        _fail(f"{path}: no such file", EXIT_USAGE)
    except OSError as exc:
        _fail(f"cannot read {path}: {exc.strerror}", EXIT_USAGE)
    except StrictJSONError as exc:
        _fail(f"{path} is not a registration request ({exc})", EXIT_USAGE)
    if not isinstance(req, dict):
        _fail(f"{path} is not a registration request (a JSON object is expected)", EXIT_USAGE)
    required = ("org_id", "name", "country", "roles", "signing_public_key", "sealing_public_key")
    missing = [k for k in required if k not in req]
    if missing:
        _fail(f"{path}: missing {', '.join(missing)} (make the request with `oretrace keys`)", EXIT_USAGE)
    problems = []
    for key, check in (("org_id", ident), ("key_id", ident), ("name", text), ("country", country)):
        value = req.get(key, "k1" if key == "key_id" else None)
        try:
            if not isinstance(value, str):
                raise typer.BadParameter("must be a string")
            req[key] = check(value)
        except typer.BadParameter as exc:
            problems.append(f"{key}: {exc.message}")
    allowed = [r.value for r in RoleChoice]
    roles = req["roles"]
    if not isinstance(roles, list) or not 1 <= len(roles) <= 4 or any(r not in allowed for r in roles):
        problems.append(f"roles: one to four of {', '.join(allowed)} (got {roles!r})")
    for key in ("signing_public_key", "sealing_public_key"):
        value = req[key]
        if not isinstance(value, str) or len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
            problems.append(f"{key}: 64 lowercase hexadecimal characters expected")
    if req.get("network", network) != network:
        problems.append(f"network: the request is for {req.get('network')!r}, this operator runs {network!r}")
    if problems:
        _fail(f"{path} is not a valid registration request: " + "; ".join(problems), EXIT_USAGE)
    return req


@app.command()
def register(
    request: Annotated[Path, typer.Argument(help="A registration request printed by `oretrace keys`.", show_default=False)],
    wallet: WalletOpt,
    api: ApiOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """(Network operator) register an organisation from its registration request."""
    w = _load_wallet(wallet)
    if w.org_id != OPERATOR:
        _fail(f"{wallet} is the wallet of {w.org_id}: only the network operator's wallet registers organisations",
              EXIT_USAGE)  # fmt: skip
    req = _read_request(request, w.network)

    async def act(pub, client):
        return await pub.register_organization(
            req["org_id"], req["name"], req["country"], req["roles"],
            req["signing_public_key"], req["sealing_public_key"], req.get("key_id", "k1"),
        )  # fmt: skip

    r, _ = _publish(wallet, api, _intent("register", request=req), act)
    _emit(as_json, {**_published_json(r), "org_id": req["org_id"]},
          lambda: console.print(f"registered {req['org_id']} (event {r.event_id})", highlight=False))


@app.command("rotate-key")
def rotate_key(
    org: Annotated[str, typer.Option("--org", callback=ident, help="The organisation whose key is added.")],
    key_id: Annotated[str, typer.Option("--key-id", callback=ident, help="Id of the new signing key (e.g. k2).")],
    public_key: Annotated[str, typer.Option("--public-key", callback=hex_key, help="The new Ed25519 signing public key (64 hex).")],
    wallet: WalletOpt,
    sealing_key: Annotated[str | None, typer.Option("--sealing-key", callback=hex_key, help="Also replace the X25519 sealing public key (64 hex).")] = None,
    api: ApiOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """(Network operator) add a signing key to an organisation (and optionally replace its sealing key)."""
    from ledger.models import KeyEntry, RotateKey

    payload = RotateKey(org_id=org, new_key=KeyEntry(key_id=key_id, public_key=public_key), sealing_key=sealing_key)
    _operator_publish(wallet, api, as_json, payload, f"added key {key_id} to {org}")


@app.command("revoke-key")
def revoke_key(
    org: Annotated[str, typer.Option("--org", callback=ident, help="The organisation whose key is revoked.")],
    key_id: Annotated[str, typer.Option("--key-id", callback=ident, help="Id of the signing key to revoke.")],
    wallet: WalletOpt,
    reason: Annotated[str, typer.Option(callback=text, help="Why (kept in the ledger, at most 200 characters).")] = "",
    api: ApiOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """(Network operator) revoke a signing key: its envelopes dated from now on are refused."""
    from ledger.models import RevokeKey

    _operator_publish(wallet, api, as_json, RevokeKey(org_id=org, key_id=key_id, reason=reason), f"revoked key {key_id} of {org}")


def _require_operator(wallet: Path, what: str = "change an organisation's keys") -> None:
    """Exit 2 unless `wallet` is the network operator's."""
    w = _load_wallet(wallet)
    if w.org_id != OPERATOR:
        _fail(f"{wallet} is the wallet of {w.org_id}: only the network operator's wallet can {what}", EXIT_USAGE)


def _operator_publish(wallet: Path, api: str | None, as_json: bool, payload, done: str, extra: dict | None = None) -> None:
    """Sign `payload` with the operator's wallet and publish it (journalled: a retry publishes it once);
    print `done` (or, with --json, the publication's ids and `extra`)."""
    from .publisher import new_nonce

    _require_operator(wallet)

    async def act(pub, client):
        return pub.settle(await pub.submit(pub.sign(payload, new_nonce())), save=False)

    r, _ = _publish(wallet, api, _intent(payload.type, payload=payload.model_dump(mode="json")), act)
    _emit(as_json, {**(extra or {}), **_published_json(r)},
          lambda: console.print(f"{done} (event {r.event_id})", highlight=False))  # fmt: skip


@app.command()
def attest(
    wallet: WalletOpt,
    site: Annotated[str, typer.Option("--site", callback=ident, help="Site id.")],
    operator: Annotated[str, typer.Option(callback=ident, help="Org id of the site's operator.")],
    origin_class: Annotated[OriginClassChoice, typer.Option("--class", case_sensitive=False, help="The site's origin class.")],
    capacity_g: Annotated[int, typer.Option("--capacity-g", **GRAMS, help="Audited capacity for the period, grams of contained cobalt.")],
    name: Annotated[str, typer.Option(callback=text, help=f"Site name ({PUBLIC_TEXT}).")],
    country_code: Annotated[str, typer.Option("--country", callback=country, help="ISO 3166-1 alpha-2 country code.")],
    region: Annotated[str, typer.Option(callback=text, help=f"Region / province ({PUBLIC_TEXT}).")] = "",
    lat: Annotated[float, typer.Option(callback=latitude, help="Latitude, degrees (-90 to 90).")] = 0.0,
    lon: Annotated[float, typer.Option(callback=longitude, help="Longitude, degrees (-180 to 180).")] = 0.0,
    valid_from: Annotated[datetime | None, typer.Option("--from", formats=["%Y-%m-%d"], help="First day of the audited period (UTC) [default: 1 January of this year].")] = None,
    valid_until: Annotated[datetime | None, typer.Option("--until", formats=["%Y-%m-%d"], help="Last day of the period, inclusive (UTC) [default: 31 December of this year].")] = None,
    allow_public_quantity: PublicQuantityOpt = False,
    supersedes: Annotated[str | None, typer.Option("--supersedes", callback=ident, help="The site's current attestation this one replaces (a capacity or class correction); its issuances count against the new capacity.")] = None,
    api: ApiOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """(Auditor) attest a site's origin class and commit to its capacity (sealed to the site operator).

    The period runs from --from 00:00 UTC to the end of --until (inclusive); without them, the calendar year.
    A period overlapping the site's current attestation needs --supersedes with that attestation's id.
    """
    today = datetime.now(UTC).date()
    first = (valid_from.date() if valid_from else today.replace(month=1, day=1))
    last = (valid_until.date() if valid_until else today.replace(month=12, day=31))
    if last < first:
        _fail(f"--until {last} is before --from {first}", EXIT_USAGE)
    start = datetime.combine(first, datetime.min.time(), UTC)
    end = datetime.combine(last + timedelta(days=1), datetime.min.time(), UTC)
    args = dict(site_id=site, operator=operator, name=name, country=country_code, region=region, lat=lat, lon=lon,
                origin_class=origin_class.value, capacity_g=capacity_g, supersedes=supersedes)  # fmt: skip

    async def act(pub, client):
        return await pub.attest_site(valid_from=start, valid_until=end, allow_public_quantity=allow_public_quantity, **args)

    r, _ = _publish(wallet, api, _intent("attest", **args, first=str(first), last=str(last)), act)
    _emit(as_json, {**_published_json(r), "valid_from": start.isoformat(), "valid_until": end.isoformat(),
                    "supersedes": supersedes},
          lambda: console.print(f"attested site {site} for {first} to {last} (inclusive): attestation"
                                f" {r.attestation_id}" + (f", superseding {supersedes}" if supersedes else "")
                                + f" (event {r.event_id})", highlight=False))


@app.command("revoke-attestation")
def revoke_attestation(
    attestation: Annotated[str, typer.Argument(callback=ident, help="The attestation to revoke.", show_default=False)],
    site: Annotated[str, typer.Option("--site", callback=ident, help="The attested site.")],
    wallet: WalletOpt,
    reason: Annotated[str, typer.Option(callback=text, help="Why (public, kept in the ledger, at most 200 characters).")] = "",
    api: ApiOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """(Auditor who made it) revoke an attestation: issuances under it are refused from now on.

    Issuances before it stand; re-attest the period with `oretrace attest --supersedes ATTESTATION`.
    """

    async def act(pub, client):
        return await pub.revoke_attestation(site_id=site, attestation_id=attestation, reason=reason)

    r, _ = _publish(wallet, api, _intent("revoke-attestation", attestation=attestation, site=site, reason=reason), act)
    _emit(as_json, {**_published_json(r), "attestation_id": attestation, "site_id": site},
          lambda: console.print(f"revoked attestation {attestation} of site {site} (event {r.event_id})", highlight=False))


@app.command()
def receipts(
    wallet: WalletOpt,
    api: ApiOpt = DEFAULT_API,
    as_json: Annotated[bool, typer.Option("--json", help="Print the receipt book as JSON.")] = False,
) -> None:
    """Fetch the log receipts still pending for this wallet's publications and list them all.

    Each publication's receipt (its leaf index, a checkpoint that includes it, the
    inclusion proof, checked against the wallet's own envelope) is kept in
    <wallet>.receipts.json. Exit 1 if some stay pending."""
    from .client import Client
    from .receipts import ReceiptBook, book_path

    _load_wallet(wallet)

    async def go():
        book = ReceiptBook(book_path(wallet))
        if book.pending():
            async with Client(api) as client:
                await book.complete(client)
        return book

    book = _run(go())
    if as_json:
        print(json.dumps(book.publications, indent=2))
    else:
        for event_id, entry in book.publications.items():
            receipt = entry["receipt"]
            state = (
                f"leaf {entry['log_index']} in checkpoint size {receipt['tree_size']}"
                if receipt
                else f"leaf {entry['log_index']}, PENDING: {entry['error'] or 'not fetched yet'}"
            )
            console.print(f"{event_id}  {escape(state)}")
    if book.pending():
        raise typer.Exit(1)


# --------------------------------------------------------------------------- supplier commands


@app.command()
def issue(
    wallet: WalletOpt,
    site: Annotated[str, typer.Option("--site", callback=ident, help="One of your attested sites.")],
    grams: Annotated[int, typer.Option("--grams", **GRAMS, help="Contained cobalt, whole grams.")],
    product: Annotated[str, typer.Option(callback=text, help=f"Product description ({PUBLIC_TEXT}).")] = "cobalt hydroxide",
    attestation: Annotated[str | None, typer.Option(callback=ident, help="Attestation id (default: the site's current one, superseded ones skipped).")] = None,
    allow_public_quantity: PublicQuantityOpt = False,
    api: ApiOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Issue a lot at one of your sites, with range and capacity proofs."""
    from .publisher import sync

    async def act(pub, client):
        att = attestation
        if att is None:
            await sync(pub.wallet, client)  # learn a superseding attestation the auditor sealed meanwhile
            candidates = pub.wallet.live_capacities(site)
            if not candidates:
                _fail(f"no attestation of site {site} is addressed to {pub.wallet.org_id}; nothing was published")
            att = candidates[-1].attestation_id
        with err.status("proving range and capacity..."):
            return await pub.issue(site_id=site, attestation_id=att, amount_g=grams, product=product,
                                   allow_public_quantity=allow_public_quantity)

    r, _ = _publish(wallet, api, _intent("issue", site=site, grams=grams, product=product, attestation=attestation), act)
    _emit(as_json, {**_published_json(r), "grams": grams, "product": product},
          lambda: console.print(f"issued lot {r.lot_ids[0]} ({_grams(grams)} Co), event {r.event_id}", highlight=False))


@app.command()
def transfer(
    lot: Annotated[str, typer.Argument(callback=ident, help="Lot id.", show_default=False)],
    to: Annotated[str, typer.Option("--to", callback=ident, help="Receiving organisation id.")],
    wallet: WalletOpt,
    api: ApiOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Hand a lot to another organisation (its openings are sealed to the receiver)."""

    async def act(pub, client):
        return await pub.transfer(lot, to)

    r, _ = _publish(wallet, api, _intent("transfer", lot=lot, to=to), act)
    _emit(as_json, {**_published_json(r), "lot_id": lot, "to": to},
          lambda: console.print(f"lot {lot} transferred to {to} (event {r.event_id})", highlight=False))


def _plan_json(inputs, planned) -> dict[str, Any]:
    available = {k: sum(e.opening(k).value for e in inputs) for k in ORIGIN_CLASSES}
    outputs = [{"product": p.product, "grams": {k: p.openings[k].value if k in p.openings else 0 for k in ORIGIN_CLASSES}}
               for p in planned]  # fmt: skip
    loss = {k: available[k] - sum(o["grams"][k] for o in outputs) for k in ORIGIN_CLASSES}
    total_in = sum(available.values())
    return {
        "inputs": [{"lot_id": e.lot_id, "product": e.product, "grams": e.amounts()} for e in inputs],
        "outputs": outputs,
        "loss": loss,
        "loss_total": sum(loss.values()),
        "loss_percent": round(100 * sum(loss.values()) / total_in, 3) if total_in else 0.0,
    }


def _print_plan(plan: dict[str, Any], exact: bool) -> None:
    table = Table(title="transformation plan (grams of contained cobalt)", box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("", no_wrap=True)
    table.add_column("lot / product", overflow="fold", ratio=1)
    for k in ORIGIN_CLASSES:
        table.add_column(_class_abbrev(k), justify="right", no_wrap=True)
    fmt = (lambda g: f"{g:,}") if exact else _grams
    for i in plan["inputs"]:
        table.add_row("in", f"{i['lot_id']} {i['product']}", *(fmt(i["grams"][k]) for k in ORIGIN_CLASSES))
    for o in plan["outputs"]:
        table.add_row("out", o["product"], *(fmt(o["grams"][k]) for k in ORIGIN_CLASSES))
    table.add_row("loss", f"{plan['loss_percent']:g} % of the input", *(fmt(plan["loss"][k]) for k in ORIGIN_CLASSES))
    console.print(table)


@app.command()
def transform(
    wallet: WalletOpt,
    inputs: Annotated[list[str], typer.Option("--input", "-i", callback=idents, help="Input lot id (repeat).")],
    outputs: Annotated[list[str], typer.Option("--output", "-o", callback=parse_outputs, help=f"Output as PRODUCT=GRAMS, grams >= 1 (repeat; PRODUCT is {PUBLIC_TEXT}).")],
    process: Annotated[ProcessChoice, typer.Option(case_sensitive=False, help="The kind of transformation.")] = ProcessChoice.refine,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show the plan and stop: nothing is signed or sent.")] = False,
    max_loss: Annotated[float, typer.Option("--max-loss-percent", min=0, max=100, help="Largest process loss accepted without --accept-loss, percent of the input cobalt.")] = 5.0,
    accept_loss: Annotated[bool, typer.Option("--accept-loss", help="Publish even if the loss exceeds --max-loss-percent.")] = False,
    exact: Annotated[bool, typer.Option("--exact", help="Show whole grams.")] = False,
    allow_public_quantity: PublicQuantityOpt = False,
    api: ApiOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Consume own lots and create outputs with the inputs' class mix; whatever is left is declared as loss.

    The plan (inputs, outputs, loss per origin class) is shown first; a loss above --max-loss-percent is
    refused (exit 1) unless --accept-loss is given.
    """
    from .publisher import proportional_outputs

    if len(set(inputs)) != len(inputs):
        _fail("an input lot is given twice", EXIT_USAGE)
    planned_outputs: list[tuple[str, int]] = outputs  # parsed by the callback

    async def act(pub, client):
        entries = [await pub.held(i) for i in inputs]
        planned = proportional_outputs([e.openings for e in entries], [g for _, g in planned_outputs],
                                       [p for p, _ in planned_outputs])  # fmt: skip
        plan = _plan_json(entries, planned)
        if not as_json:
            _print_plan(plan, exact)
        if dry_run:
            if as_json:
                print(json.dumps({"dry_run": True, "plan": plan}, indent=2))
            err.print("dry run: nothing was signed or sent")
            raise typer.Exit(0)
        if plan["loss_percent"] > max_loss and not accept_loss:
            if as_json:
                print(json.dumps({"refused": "loss", "plan": plan}, indent=2))
            _fail(f"the plan writes off {plan['loss_total']:,} g ({plan['loss_percent']:g} % of the input) as process"
                  f" loss, above --max-loss-percent {max_loss:g}; check the outputs, or pass --accept-loss."
                  " Nothing was published.", EXIT_REFUSED)  # fmt: skip
        with err.status("proving mass balance and ranges..."):
            return await pub.transform(process.value, inputs, planned, allow_public_quantity=allow_public_quantity)

    r, w = _publish(wallet, api, _intent("transform", inputs=inputs, outputs=planned_outputs, process=process.value), act)
    created = [{"lot_id": i, "product": w.lots[i].product if i in w.lots else "", "grams": w.lots[i].total if i in w.lots else None}
               for i in r.lot_ids]  # fmt: skip

    def human() -> None:
        for c in created:
            console.print(f"created lot {c['lot_id']}: {c['product']} ({_grams(c['grams'] or 0)} Co)", highlight=False)
        console.print(f"event {r.event_id}", highlight=False)

    _emit(as_json, {**_published_json(r), "outputs": created}, human)


def _check_claim_args(kind, origin_class, p, p_max, q, low, high) -> None:
    shares = (ClaimKindChoice.share_at_most, ClaimKindChoice.share_at_least, ClaimKindChoice.share_in_range)
    classes = ", ".join(c.value for c in ClaimClassChoice)
    if kind is ClaimKindChoice.ancestry_excludes or kind in shares:
        if origin_class is None:
            _fail(f"--kind {kind.value} needs --class ({classes})", EXIT_USAGE)
        if low is not None or high is not None:
            _fail(f"--low/--high apply to amount_in_range, not {kind.value}", EXIT_USAGE)
    if kind is ClaimKindChoice.ancestry_excludes and (p is not None or q is not None or p_max is not None):
        _fail("--p/--p-max/--q apply to share claims", EXIT_USAGE)
    if kind in shares:
        if p is None or q is None:
            _fail(f"--kind {kind.value} needs --p and --q (the share p/q, e.g. --p 16 --q 100)", EXIT_USAGE)
        if p > q:
            _fail(f"--p {p} is larger than --q {q}: a share is at most 1", EXIT_USAGE)
    if kind is ClaimKindChoice.share_in_range:
        if p_max is None:
            _fail("--kind share_in_range needs --p-max (the share lies in [p/q, p_max/q], e.g. --p 160 --p-max 169 --q 1000)", EXIT_USAGE)
        if not p <= p_max <= q:
            _fail(f"share_in_range needs --p <= --p-max <= --q (got {p}, {p_max}, {q})", EXIT_USAGE)
    elif p_max is not None:
        _fail("--p-max applies to share_in_range only", EXIT_USAGE)
    if kind is ClaimKindChoice.amount_in_range:
        if low is None or high is None:
            _fail("--kind amount_in_range needs --low and --high (grams)", EXIT_USAGE)
        if low > high:
            _fail(f"--low {low} is above --high {high}", EXIT_USAGE)
        if origin_class is not None or p is not None or q is not None:
            _fail("amount_in_range takes --low and --high only", EXIT_USAGE)


@app.command()
def claim(
    lots: Annotated[list[str], typer.Argument(callback=idents, metavar="LOT...", help="Your lot(s): one lot, or several (up to 64) for an aggregate claim over their sum.", show_default=False)],
    wallet: WalletOpt,
    kind: Annotated[ClaimKindChoice, typer.Option(case_sensitive=False, help="What is claimed.")],
    origin_class: Annotated[ClaimClassChoice | None, typer.Option("--class", case_sensitive=False, help="Origin class, or class set (recycled = recycled_pre_consumer + recycled_post_consumer), the claim is about.")] = None,
    p: Annotated[int | None, typer.Option(min=0, max=SHARE_MAX, help="Share numerator (share_at_most / share_at_least; share_in_range: the lower bound's).")] = None,
    p_max: Annotated[int | None, typer.Option("--p-max", min=0, max=SHARE_MAX, help="share_in_range: the upper bound's numerator (over the same --q).")] = None,
    q: Annotated[int | None, typer.Option(min=1, max=SHARE_MAX, help="Share denominator.")] = None,
    low: Annotated[int | None, typer.Option(min=0, max=JSON_SAFE_MAX, help="amount_in_range: lower bound, grams.")] = None,
    high: Annotated[int | None, typer.Option(min=0, max=JSON_SAFE_MAX, help="amount_in_range: upper bound, grams.")] = None,
    bundle_out: Annotated[Path | None, typer.Option("--bundle-out", callback=output_file, help="Also save the disclosure bundle to this file (its directory must exist).")] = None,
    api: ApiOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Publish a claim about one of your lots, or an aggregate claim about several (LOT LOT ...:
    1 to 64 lots you hold or consumed, none upstream of another); optionally save its disclosure bundle."""
    chosen = list(lots)
    if len(set(chosen)) != len(chosen):
        twice = sorted({x for x in chosen if chosen.count(x) > 1})
        _fail(f"lot(s) {', '.join(twice)} listed twice: a claim covers each lot once", EXIT_USAGE)
    if len(chosen) > MAX_CLAIM_LOTS:
        _fail(f"a claim covers at most {MAX_CLAIM_LOTS} lots, not {len(chosen)}", EXIT_USAGE)
    chosen.sort()
    _check_claim_args(kind, origin_class, p, p_max, q, low, high)
    cls = origin_class.value if origin_class else None

    async def act(pub, client):
        with err.status("proving the claim..."):
            return await pub.claim(chosen, kind.value, origin_class=cls, p=p, q=q, low=low, high=high, p_max=p_max)

    intent = _intent("claim", lots=chosen, kind=kind.value, origin_class=cls, p=p, p_max=p_max, q=q, low=low,
                     high=high, bundle_out=str(bundle_out) if bundle_out else None)  # fmt: skip
    r, _ = _publish(wallet, api, intent, act, keep_pending=bundle_out is not None)
    if bundle_out:
        from .journal import Journal

        _fetch_bundle(api, chosen[0], r.claim_id, bundle_out, published=r)
        Journal(wallet, intent).clear()  # published and saved: nothing is pending any more
    scope = f"lot {chosen[0]}" if len(chosen) == 1 else f"{len(chosen)} lots ({', '.join(chosen)})"
    _emit(as_json, {**_published_json(r), "lot_ids": chosen, "bundle": str(bundle_out) if bundle_out else None},
          lambda: console.print(f"claim {r.claim_id} published on {scope} (event {r.event_id})", highlight=False))
    if bundle_out and not as_json:
        console.print(f"disclosure bundle written to {bundle_out}; check it with: oretrace verify {bundle_out}", highlight=False)


def _fetch_bundle(api: str | None, lot: str, claim_id: str, out: Path, *, published=None) -> None:
    """Download a claim's disclosure bundle to `out` (atomic). After a publication, failure is exit 3."""
    from .client import ApiError, Client
    from .wallet import write_private_json

    url = _api_url(api)

    async def go():
        async with Client(url) as client:
            return await client.disclosure_bundle(lot, claim_id)

    recover = f"oretrace bundle {lot} {claim_id} --out {out}"
    try:
        bundle = asyncio.run(go())
        write_private_json(out, bundle)
    except (ApiError, OSError) as exc:
        if published is None:
            _fail(f"cannot save the bundle: {exc}", EXIT_REFUSED)
        _fail(f"the claim was published (claim {claim_id}, event {published.event_id}) but its bundle was not"
              f" saved ({exc}). Fetch it again with: {recover} (or run the same claim command again: it publishes"
              " nothing new)", EXIT_NOT_SAVED)  # fmt: skip


@app.command()
def bundle(
    lot: Annotated[str, typer.Argument(callback=ident, help="The claimed lot (for an aggregate claim: any lot of its set).", show_default=False)],
    claim_id: Annotated[str, typer.Argument(callback=ident, help="The claim id.", show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", callback=output_file, help="File to write the bundle to.")],
    api: ApiOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Download a claim's disclosure bundle (to give to anyone who checks it with `oretrace verify`)."""
    _fetch_bundle(api, lot, claim_id, out)
    _emit(as_json, {"lot_id": lot, "claim_id": claim_id, "bundle": str(out)},
          lambda: console.print(f"disclosure bundle written to {out}; check it with: oretrace verify {out}", highlight=False))


@app.command()
def lots(
    wallet: WalletOpt,
    api: ApiOpt = None,
    all_: Annotated[bool, typer.Option("--all", help="Include lots you no longer hold.")] = False,
    offline: Annotated[bool, typer.Option(help="Do not ask the server for incoming lots first.")] = False,
    exact: Annotated[bool, typer.Option("--exact", help="Show whole grams per origin class.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """List your lots with their decrypted amounts (only your wallet can open them)."""
    from .client import Client
    from .publisher import sync

    w = _load_wallet(wallet)
    if not offline:
        url = _api_url(api)

        async def go():
            async with Client(url) as client:
                return await sync(w, client)

        _run(go(), wallet=wallet, api=url)
        try:
            w.save()
        except OSError as exc:
            _warn(f"the wallet could not be saved ({exc.strerror}); the list below is not kept")
    shown = [e for e in w.lots.values() if all_ or not e.spent]
    if as_json:
        print(json.dumps([{"lot_id": e.lot_id, "product": e.product, "grams": e.amounts(), "total": e.total,
                           "held": not e.spent} for e in shown], indent=2))  # fmt: skip
        return
    table = Table(title=f"Lots of {safe(w.meta.get('name', w.org_id))} ({safe(w.org_id)})", box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("lot", no_wrap=True)
    table.add_column("product", overflow="fold", ratio=1, min_width=10)
    if exact:
        table.add_column("Co g by origin", justify="right", no_wrap=True)
    else:
        table.add_column("Co", justify="right", no_wrap=True)
        table.add_column("origin mix", no_wrap=True)
    if all_:
        table.add_column("held", no_wrap=True)
    for e in shown:
        amounts = e.amounts()
        cells = [_exact_by_origin(amounts)] if exact else [_grams(e.total), _mix(amounts)]
        table.add_row(safe(e.lot_id), safe(e.product), *cells, *(["yes" if not e.spent else "no"] if all_ else []))
    console.print(table)
    if not shown:
        console.print("no lots", style="dim")


def _exact_by_origin(amounts: dict[str, int]) -> str:
    """Exact grams per non-zero origin class, one per line ("ind 7,000,000"), so that a row fits 80 columns."""
    return "\n".join(f"{_class_abbrev(k)} {amounts[k]:,}" for k in ORIGIN_CLASSES if amounts[k]) or "0"


def _class_abbrev(origin_class: str) -> str:
    """A short, distinct label of an origin class for narrow tables: "ind", "art", "rec-pre", "rec-post"."""
    head, *rest = origin_class.split("_")
    return head[:3] + "".join(f"-{part}" for part in rest[:1])


def _mix(amounts: dict[str, int]) -> str:
    """Shares of the origin classes, e.g. "ind 84% rec-post 16%" (whole percent, rounded down, >0 shown as <1%)."""
    total = sum(amounts.values())
    if not total:
        return "-"
    parts = []
    for k in ORIGIN_CLASSES:
        if amounts[k]:
            pct = 100 * amounts[k] // total
            parts.append(f"{_class_abbrev(k)} {pct}%" if pct else f"{_class_abbrev(k)} <1%")
    return " ".join(parts)


# --------------------------------------------------------------------------- wallet maintenance


def _passphrase(confirm: bool) -> str:
    if os.environ.get("ORETRACE_BACKUP_PASSPHRASE"):
        return os.environ["ORETRACE_BACKUP_PASSPHRASE"]
    if not sys.stdin.isatty():
        _fail("no passphrase: set ORETRACE_BACKUP_PASSPHRASE or run in a terminal", EXIT_USAGE)
    return typer.prompt("Backup passphrase", hide_input=True, confirmation_prompt=confirm)


@wallet_app.command("export-keys")
def wallet_export_keys(
    wallet: WalletOpt,
    out: Annotated[Path, typer.Option("--out", "-o", callback=output_file, help="The backup file to write (0600).")],
    force: Annotated[bool, typer.Option(help="Overwrite an existing backup file.")] = False,
) -> None:
    """Write a passphrase-encrypted backup of the wallet's keys (Argon2id + XSalsa20-Poly1305).

    With the backup and the passphrase, `oretrace wallet restore --from-backup FILE` rebuilds the whole wallet
    (every lot and capacity opening) from the server. Passphrase: prompted, or $ORETRACE_BACKUP_PASSPHRASE.
    """
    from .backup import BackupError, export_keys

    w = _load_wallet(wallet)
    if out.exists() and not force:
        _fail(f"{out} exists; use --force to overwrite it", EXIT_USAGE)
    try:
        export_keys(w, out, _passphrase(confirm=True))
    except BackupError as exc:
        _fail(str(exc), EXIT_USAGE)
    except OSError as exc:
        _fail(f"cannot write {out}: {exc.strerror}", EXIT_REFUSED)
    err.print(f"keys of {w.org_id} backed up to {out} (encrypted). Keep it, and the passphrase, apart from this machine.")


@wallet_app.command("restore")
def wallet_restore(
    wallet: WalletOpt,
    from_backup: Annotated[Path | None, typer.Option("--from-backup", help="Create the wallet from a key backup (`wallet export-keys`).")] = None,
    force: Annotated[bool, typer.Option(help="With --from-backup: replace an existing wallet file.")] = False,
    api: ApiOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Rebuild the wallet's openings (every lot, with its product, and every capacity) from the server.

    Needs only the keys: from the wallet itself, or from a key backup with --from-backup.
    """
    from .backup import BackupError, import_keys
    from .client import Client
    from .publisher import restore

    if from_backup is not None:
        if (wallet.exists() or wallet.is_symlink()) and not force:
            _fail(_taken(wallet, "restore into a new file, or pass --force to replace it"), EXIT_USAGE)
        _check_output(wallet)
        try:
            fresh = import_keys(from_backup, _passphrase(confirm=False))
        except BackupError as exc:
            _fail(str(exc), EXIT_USAGE)
    else:
        fresh = _load_wallet(wallet, writable=True).keys_only()
    fresh.path = wallet
    url = _api_url(api)

    async def go():
        async with Client(url) as client:
            with _progress() as progress:
                task = progress.add_task("unsealing openings", total=None)
                return await restore(fresh, client, progress=lambda done, total: progress.update(task, completed=done, total=total))

    report = _run(go(), api=url)
    try:
        fresh.save()
    except OSError as exc:
        _fail(f"restored, but the wallet could not be saved to {wallet} ({exc.strerror}); nothing was published:"
              " run the restore again with a writable --wallet", EXIT_NOT_SAVED)  # fmt: skip
    data = {"wallet": str(wallet), "lots": report.lots, "capacities": report.capacities, "sealed": report.sealed,
            "held": report.held, "unreadable": report.unreadable}  # fmt: skip
    _emit(as_json, data, lambda: console.print(
        f"restored {report.lots} lot openings and {report.capacities} capacity openings from {report.sealed} sealed"
        f" boxes; {report.held} lots currently held" + (f"; {report.unreadable} unreadable" if report.unreadable else ""),
        highlight=False))  # fmt: skip


@wallet_app.command("new-key")
def wallet_new_key(
    wallet: WalletOpt,
    key_id: Annotated[str, typer.Option("--key-id", callback=ident, help="Id of the new signing key (e.g. k2).")],
    as_json: JsonOpt = False,
) -> None:
    """Replace the wallet's signing key with a new one and print the request for the operator.

    The sealing key stays (openings sealed to it remain readable). Until the operator runs the printed
    `oretrace rotate-key` command, the server refuses this wallet's publications (UNKNOWN_KEY).
    Refused for the operator's wallet: its key is the network's root key.
    """
    from nacl.signing import SigningKey

    from .journal import Journal

    w = _load_wallet(wallet, writable=True)
    if w.org_id == OPERATOR:
        _fail(f"{wallet} holds the network's root key, which every wallet and verifier pins: a new key would be a"
              " new network (`oretrace network init`), so the wallet keeps its key", EXIT_USAGE)  # fmt: skip
    if key_id == w.key_id:
        _fail(f"{key_id} is already the wallet's key id; choose a new one (e.g. k2)", EXIT_USAGE)
    if Journal(wallet).path.exists():
        _fail("a publication signed with the current key is pending: run the command that was interrupted"
              " again first", EXIT_USAGE)  # fmt: skip
    old_key_id = w.key_id
    w.signing_seed = bytes(SigningKey.generate())
    w.key_id = key_id
    try:
        w.save()
    except OSError as exc:
        _fail(f"cannot save {wallet}: {exc.strerror}; the wallet keeps its old key", EXIT_REFUSED)
    request = {"org_id": w.org_id, "network": w.network, "key_id": key_id, "signing_public_key": w.signing_public_hex,
               "replaces": old_key_id}  # fmt: skip
    command = (f"oretrace rotate-key --org {w.org_id} --key-id {key_id} --public-key {w.signing_public_hex}"
               " --wallet operator.json")  # fmt: skip

    def human() -> None:
        err.print(f"{wallet} now signs with key {key_id}. Ask the network operator to run:")
        print(command)
        err.print(f"then to retire the old key: oretrace revoke-key --org {w.org_id} --key-id {old_key_id}"
                  " --wallet operator.json. Make a new key backup: oretrace wallet export-keys")  # fmt: skip

    _emit(as_json, {**request, "operator_command": command}, human)


@wallet_app.command("show")
def wallet_show(wallet: WalletOpt) -> None:
    """Print the wallet's public identity as JSON (never the private keys)."""
    w = _load_wallet(wallet)
    print(
        json.dumps(
            {
                "org_id": w.org_id,
                "network": w.network,
                "key_id": w.key_id,
                "signing_public_key": w.signing_public_hex,
                "sealing_public_key": w.sealing_public_hex,
                "root_public_key": w.root_public_key,
                "lots": len(w.lots),
                "held": len(w.unspent()),
                "capacities": sorted(w.capacities),
            },
            indent=2,
        )
    )


# --------------------------------------------------------------------------- the transparency log

log_app = typer.Typer(help="The network's transparency log (docs/log.md).", no_args_is_help=True)
app.add_typer(log_app, name="log")


@log_app.command("register-key")
def log_register_key(
    wallet: WalletOpt,
    api: ApiOpt = None,
    public_key: Annotated[
        str | None,
        typer.Option("--public-key", callback=hex_key,
                     help="The log key `oretrace serve` printed at startup (64 hex): refuse if the server reports another."),
    ] = None,  # fmt: skip
    as_json: JsonOpt = False,
) -> None:
    """(Network operator) register the checkpoint key of the log your server runs: its bundles get anchored.

    Reads `logKey` from the server at --api, prints the key it registers (compare it with the log key
    `oretrace serve` printed at startup, or pass that as --public-key) and publishes a register_log_key
    event signed with the root key. Does nothing when the key is already registered: safe to repeat.
    Exit 0 registered (or already), 1 the server refused or reported a malformed or different key, 2 usage.
    """
    from pydantic import ValidationError

    from ledger.checkpoint import ED25519, NoteKey
    from ledger.models import RegisterLogKey

    from .client import Client

    _require_operator(wallet, "register the log's key")
    url = _api_url(api)

    async def read_key() -> dict[str, Any]:
        async with Client(url) as client:
            return await client.log_key()

    served = _run(read_key(), api=url)
    try:
        payload = RegisterLogKey(origin=served.get("origin"), public_key=served.get("publicKey"))
        vkey = NoteKey(payload.origin, ED25519, bytes.fromhex(payload.public_key)).vkey()
    except (ValidationError, ValueError, TypeError, AttributeError):
        _fail(f"the server at {url} reports a malformed log key; nothing was published")
    if public_key is not None and public_key != payload.public_key:
        _fail(f"the server at {url} reports log key {payload.public_key}, not {public_key}: is --api the server"
              " you run? Nothing was published")  # fmt: skip
    key = {"origin": payload.origin, "public_key": payload.public_key, "vkey": vkey}
    if served.get("registered") is True:
        _emit(as_json, {**key, "already_registered": True},
              lambda: console.print(f"log key {payload.public_key} of {payload.origin} is already registered;"
                                    " nothing to do", highlight=False))  # fmt: skip
        return
    if not as_json:
        console.print(f"registering log key {payload.public_key} of {payload.origin}\n  vkey {vkey}\ncompare it with"
                      " the log key `oretrace serve` printed at startup", highlight=False)  # fmt: skip
    _operator_publish(wallet, url, as_json, payload, f"registered log key {payload.public_key}",
                      {**key, "already_registered": False})  # fmt: skip


# --------------------------------------------------------------------------- witness / monitor


@app.command()
def witness(
    name: Annotated[str, typer.Option(help="The witness's key name, e.g. witness.example.org/w1.")],
    key_file: Annotated[Path, typer.Option("--key-file", help="Hex Ed25519 seed (created, mode 0600, if absent).")],
    log: Annotated[list[str], typer.Option("--log", help="A log to witness: ORIGIN=VKEY (repeatable).")],
    state_dir: Annotated[Path, typer.Option("--state-dir", help="Where the latest cosigned size of each log is kept.")],
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8650,
) -> None:
    """Serve C2SP tlog-witness add-checkpoint: cosign checkpoints that extend what this witness saw."""
    import uvicorn

    from api.translog import load_or_create_key
    from ledger.checkpoint import NoteError

    from .witness import Witness, parse_log_option, witness_app

    logs: dict = {}
    for text in log:
        try:
            origin, key = parse_log_option(text)
        except (ValueError, NoteError) as exc:
            _fail(str(exc), 2)
        logs.setdefault(origin, []).append(key)
    w = Witness(name, load_or_create_key(key_file), logs, state_dir)
    _require_free_port(host, port)
    err.print(f"witness {name} on http://{host}:{port}/add-checkpoint")
    err.print(f"vkey (give it to logs and verifiers): {w.key.vkey()}")
    uvicorn.run(witness_app(w), host=host, port=port, log_level="warning")


@app.command()
def monitor(
    api: ApiOpt = DEFAULT_API,
    root_key: Annotated[str | None, typer.Option("--root-key", help="The network operator's root public key (hex).")] = None,
    state: Annotated[Path, typer.Option("--state", help="State directory (resume point).")] = Path("./oretrace-monitor"),
    checkpoint: Annotated[
        list[Path] | None, typer.Option("--checkpoint", help="A checkpoint seen elsewhere, to check too (repeatable).")
    ] = None,
) -> None:
    """Replay the whole log through the ledger rules. Exit 0: no violation; 1: violations (each names its leaf); 2: could not run."""
    from ledger.checkpoint import NoteError

    from .monitor import Monitor, MonitorError

    if root_key is None or len(root_key.strip()) != 64:
        _fail("--root-key: the root public key (64 hex characters) is required", 2)
    try:
        mon = Monitor(api, root_key.strip().lower(), state)
        for path in checkpoint or []:
            mon.add_checkpoint_text(path.read_bytes())
    except (MonitorError, NoteError, OSError) as exc:
        _fail(str(exc), 2)

    async def go():
        with _progress() as progress:
            task = progress.add_task("replaying the log", total=None)
            return await mon.run(lambda done, total: progress.update(task, completed=done, total=total))

    try:
        report = asyncio.run(go())
    except MonitorError as exc:
        _fail(str(exc), 2)
    c = report.checkpoint
    console.print(f"[bold]Log[/] {safe(c.origin)}: {report.size} entries replayed, checkpoint root"
                  f" {c.body().split(chr(10))[2]}; {report.range_proofs} range proofs batched this run")  # fmt: skip
    if report.ok:
        console.print("[bold green]OK[/]: every checkpoint matches the entries, every entry obeys the ledger rules,"
                      " no nonce, consumption, issuance step or id used twice, no event by a revoked key.")  # fmt: skip
        raise typer.Exit(0)
    for v in report.violations:
        console.print(f"[bold red]VIOLATION[/] {safe(v)}")
    raise typer.Exit(1)


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
