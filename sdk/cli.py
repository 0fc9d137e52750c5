"""`oretrace`: run the server, play the demo, verify bundles, act as a supplier.

    oretrace serve [--demo] [--host H] [--port P] [--data-dir D]
    oretrace demo --out DIR [--size full|small]
    oretrace verify BUNDLE [--root-key HEX | --root-key-file F] [--json]
    oretrace trust add NETWORK KEY | list | remove NETWORK
    oretrace keys --org ORG --wallet W.json [--name ... --country .. --role ...]
    oretrace register REQUEST.json --wallet operator.json          (network operator)
    oretrace attest --wallet auditor.json --site ... --capacity-g N (auditor)
    oretrace issue | transfer | transform | claim | lots --wallet W.json ...
    oretrace wallet restore --wallet W.json
    oretrace witness --name N --key-file F --log ORIGIN=VKEY --state-dir D   (C2SP tlog-witness)
    oretrace monitor --api URL --root-key HEX [--state D]              (replays the whole log)

Supplier commands talk to the API at --api (env ORETRACE_API, default
http://127.0.0.1:8000/graphql) and keep their secrets in the wallet file
(--wallet, env ORETRACE_WALLET), which never leaves the machine.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from ledger.models import ORIGIN_CLASSES

app = typer.Typer(
    name="oretrace",
    help="Confidential, verifiable provenance for critical-mineral supply chains.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
wallet_app = typer.Typer(help="Wallet maintenance.", no_args_is_help=True)
app.add_typer(wallet_app, name="wallet")

console = Console()
err = Console(stderr=True)

DEFAULT_API = "http://127.0.0.1:8000/graphql"

ApiOpt = Annotated[str, typer.Option("--api", envvar="ORETRACE_API", help="GraphQL endpoint of the oretrace API.")]
WalletOpt = Annotated[
    Path, typer.Option("--wallet", "-w", envvar="ORETRACE_WALLET", help="The organisation's wallet file (JSON, 0600).")
]


# --------------------------------------------------------------------------- helpers


def _fail(message: str, code: int = 1) -> None:
    err.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


def _run(coro):
    """Run a coroutine; typed API errors become a one-line message and exit 1."""
    from .client import ApiError, ApiRejection
    from .publisher import ProvingRefused
    from .wallet import WalletError

    try:
        return asyncio.run(coro)
    except ApiRejection as exc:
        _fail(f"the API rejected it: [bold]{exc.code}[/]: {exc.message}")
    except ProvingRefused as exc:
        _fail(f"the wallet refuses to prove it: {exc}")
    except WalletError as exc:
        _fail(str(exc))
    except ApiError as exc:
        _fail(str(exc), 2)


def _load_wallet(path: Path):
    from .wallet import Wallet, WalletError

    try:
        return Wallet.load(path)
    except WalletError as exc:
        _fail(str(exc), 2)


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
    if g >= 1_000_000:
        return f"{g / 1_000_000:,.3f} t"
    if g >= 1_000:
        return f"{g / 1_000:,.1f} kg"
    return f"{g} g"


# --------------------------------------------------------------------------- verify and trust

#: `verify` exit codes: 0 proven, 1 not proven, 2 unreadable input or no anchor,
#: 3 the only root key in sight lies next to the bundle (never an anchor).
EXIT_BESIDE_KEY = 3

trust_app = typer.Typer(
    help="Pinned trust anchors: the root public key of each network, for `oretrace verify`.",
    no_args_is_help=True,
)
app.add_typer(trust_app, name="trust")


@app.command()
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
    bundle is never used. Exit 0: the claim is proven; 1: it is not; 2: unreadable input
    or no trust anchor; 3: the only key found lies next to the bundle."""
    from ledger.bundle import verify_bundle

    from .report import UnreadableBundle, json_report, print_report, read_bundle_file
    from .terminal import plain_console, safe
    from .trust_store import BESIDE_KEY_NAME, BesideKeyOnly, TrustStoreError, resolve_anchor

    out, errors = plain_console(), plain_console(stderr=True)
    witnesses = _witness_keys(witness or [], min_cosignatures)
    try:
        data = read_bundle_file(bundle)
        bundle_network = data.get("network") if isinstance(data.get("network"), str) else None
        anchor = resolve_anchor(root_key=root_key, root_key_file=root_key_file, network=network,
                                bundle_network=bundle_network, bundle_path=bundle)  # fmt: skip
    except BesideKeyOnly as exc:
        errors.print(f"[bold red]error:[/] {safe(exc)}")
        raise typer.Exit(EXIT_BESIDE_KEY) from None
    except (UnreadableBundle, TrustStoreError) as exc:
        errors.print(f"[bold red]error:[/] {safe(exc)}")
        raise typer.Exit(2) from None
    beside = bundle.parent / BESIDE_KEY_NAME
    try:
        ignored = beside if beside.read_text().strip().lower() != anchor.root_public_key else None
    except (OSError, UnicodeDecodeError):
        ignored = None

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


def _witness_keys(vkeys: list[str], min_cosignatures: int) -> tuple:
    """--witness vkeys as ledger.checkpoint.NoteKey (type 0x04); exit 2 on a malformed one."""
    from ledger.checkpoint import COSIGNATURE_V1, NoteError, distinct_witnesses, parse_vkey

    keys = []
    for text in vkeys:
        try:
            key = parse_vkey(text)
        except NoteError as exc:
            _fail(f"--witness {text!r}: {exc}", 2)
        if key.type != COSIGNATURE_V1:
            _fail(f"--witness {text!r}: not a cosignature/v1 (type 0x04) key", 2)
        keys.append(key)
    try:
        keys = distinct_witnesses(keys)
    except NoteError as exc:
        _fail(f"--witness: {exc}", 2)
    if min_cosignatures > len(keys):
        _fail(f"--min-cosignatures {min_cosignatures} needs at least that many --witness keys", 2)
    return tuple(keys)


@trust_app.command("add")
def trust_add(
    network: Annotated[str, typer.Argument(help="The network name, as in its bundles' \"network\" field.")],
    key: Annotated[str, typer.Argument(help="Its operator's root public key (64 hex), obtained from the operator.")],
    replace: Annotated[bool, typer.Option("--replace", help="Replace a different key already pinned for NETWORK.")] = False,
) -> None:
    """Pin NETWORK's root public key in the trust store (check it with the operator first)."""
    from .terminal import plain_console, safe
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
    from .terminal import plain_console, safe
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
    from .terminal import plain_console, safe
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


def _require_free_port(host: str, port: int) -> None:
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            _fail(f"cannot listen on {host}:{port} ({exc.strerror}); is another server running? choose --port", 2)


@app.command()
def serve(
    demo: Annotated[bool, typer.Option("--demo", help="Seed the demo supply chain first (once per data directory).")] = False,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="Embedded database directory [env ORETRACE_DATA_DIR; ./oretrace-data].")
    ] = None,
    size: Annotated[str, typer.Option(help="Demo size: full or small.")] = "full",
    log_level: Annotated[str, typer.Option(help="Server log level.")] = "info",
) -> None:
    """Run the GraphQL API (embedded database unless MONGODB_URI is set); GraphiQL at /graphql."""
    _require_free_port(host, port)
    if not demo:
        from api.server import serve as api_serve
        from api.settings import SettingsError

        settings = _settings(data_dir)
        try:
            settings.require_root_public_key()
        except SettingsError as exc:
            _fail(f"{exc}\n(or run `oretrace serve --demo`, which brings its own demo operator key)", 2)
        console.print(f"oretrace API on http://{host}:{port}/graphql (GraphiQL in a browser), health at /healthz")
        try:
            api_serve(host, port, settings=settings, log_level=log_level)
        except KeyboardInterrupt:
            pass
        return
    if size not in ("full", "small"):
        _fail("--size must be full or small", 2)
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
    console.rule("[bold]oretrace is running")
    console.print(f"[bold]GraphiQL[/]: open {api} in a browser (health: {api.rsplit('/graphql', 1)[0]}/healthz)")
    console.print(f"Network [bold]{settings.network}[/], root public key {settings.root_public_key}")
    console.print(f"Demo wallets (keys and openings of each organisation, mode 0600): {wallet_dir}")
    console.print("\nTry these in GraphiQL (ids are from this seeding):\n")
    examples = [
        "The OEM's lots and their claims",
        '{ lots(owner: "rhine-motors", first: 5) { edges { node { id product claims { id kind originClass p q } } } } }',
        "Ancestry of the clean pack batch (A), back to the mine sites",
        f'{{ provenance(lotId: "{pack}", maxDepth: 20) {{ truncated nodes {{ id product originClass site {{ name region }} owner {{ name country }} }} edges {{ parent child }} }} }}',
        "Ancestry of the mixed batch (B): note the artisanal nodes",
        f'{{ provenance(lotId: "{mixed}") {{ nodes {{ id originClass site {{ name region }} }} }} }}',
        "A disclosure bundle (save it as a file and run `oretrace verify FILE --root-key <root public key>`)",
        f'{{ disclosureBundle(lotId: "{pack}", claimId: "{claim}") }}',
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
        table.add_row("[green]✓[/]" if o.ok else "[bold red]✗[/]", o.step, o.expected, observed)
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
            b.statement,
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


# --------------------------------------------------------------------------- keys and registry


@app.command()
def keys(
    org: Annotated[str, typer.Option("--org", help="The organisation id (as the operator will register it).")],
    wallet: WalletOpt,
    network: Annotated[str, typer.Option(envvar="ORETRACE_NETWORK", help="Network id.")] = "oretrace-demo",
    key_id: Annotated[str, typer.Option("--key-id")] = "k1",
    name: Annotated[str | None, typer.Option(help="Legal name (for the registration request).")] = None,
    country: Annotated[str, typer.Option(help="ISO 3166-1 alpha-2 country code.")] = "ZZ",
    role: Annotated[list[str] | None, typer.Option("--role", help="Role(s): mine, trader, refiner, ...")] = None,
    force: Annotated[bool, typer.Option(help="Overwrite an existing wallet.")] = False,
) -> None:
    """Generate an organisation's signing and sealing keys into a new wallet (0600).

    Prints the registration request (public keys only) to hand to the network operator.
    """
    from .wallet import Wallet

    if wallet.exists() and not force:
        _fail(f"{wallet} exists; use --force to overwrite (its keys would be lost)", 2)
    if org == "operator":
        w = Wallet.generate("operator", network, key_id="root", name=name or "network operator", country=country, roles=[])
    else:
        w = Wallet.generate(org, network, key_id=key_id, name=name or org, country=country, roles=list(role or []))
    w.save(wallet)
    request = {
        "org_id": w.org_id,
        "name": w.meta["name"],
        "country": country,
        "roles": w.meta["roles"],
        "key_id": w.key_id,
        "signing_public_key": w.signing_public_hex,
        "sealing_public_key": w.sealing_public_hex,
        "network": network,
    }
    err.print(f"wallet written to {wallet} (mode 0600); keep it safe: it holds the private keys")
    if org == "operator":
        err.print(f"root public key (ORETRACE_ROOT_PUBLIC_KEY): {w.signing_public_hex}")
    print(json.dumps(request, indent=2))


@app.command()
def register(
    request: Annotated[Path, typer.Argument(help="A registration request printed by `oretrace keys`.")],
    wallet: WalletOpt,
    api: ApiOpt = DEFAULT_API,
) -> None:
    """(Network operator) register an organisation from its registration request."""
    from .client import Client
    from .publisher import Publisher

    try:
        req = json.loads(request.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        _fail(f"cannot read {request}: {exc}", 2)
    w = _load_wallet(wallet)

    async def go():
        async with Client(api) as client:
            return await Publisher(w, client, fetch_receipts=True).register_organization(
                req["org_id"], req["name"], req["country"], req["roles"],
                req["signing_public_key"], req["sealing_public_key"], req.get("key_id", "k1"),
            )  # fmt: skip

    r = _run(go())
    console.print(f"registered [bold]{req['org_id']}[/] (event {r.event_id})")


@app.command()
def attest(
    wallet: WalletOpt,
    site: Annotated[str, typer.Option("--site", help="Site id.")],
    operator: Annotated[str, typer.Option(help="Org id of the site's operator.")],
    origin_class: Annotated[str, typer.Option("--class", help="industrial, artisanal or recycled.")],
    capacity_g: Annotated[int, typer.Option("--capacity-g", help="Audited capacity for the period, grams of Co.")],
    name: Annotated[str, typer.Option(help="Site name.")],
    country: Annotated[str, typer.Option(help="ISO country code.")],
    region: Annotated[str, typer.Option(help="Region / province.")] = "",
    lat: float = 0.0,
    lon: float = 0.0,
    valid_from: Annotated[datetime | None, typer.Option("--from", help="Start of the period (UTC).")] = None,
    valid_until: Annotated[datetime | None, typer.Option("--until", help="End of the period (UTC).")] = None,
    api: ApiOpt = DEFAULT_API,
) -> None:
    """(Auditor) attest a site's origin class and commit to its capacity (sealed to the operator)."""
    from .client import Client
    from .demo_data import attestation_period
    from .publisher import Publisher

    w = _load_wallet(wallet)
    start, end = attestation_period()
    start = (valid_from or start).replace(tzinfo=(valid_from or start).tzinfo or UTC)
    end = (valid_until or end).replace(tzinfo=(valid_until or end).tzinfo or UTC)

    async def go():
        async with Client(api) as client:
            return await Publisher(w, client, fetch_receipts=True).attest_site(
                site_id=site, operator=operator, name=name, country=country, region=region, lat=lat, lon=lon,
                origin_class=origin_class, valid_from=start, valid_until=end, capacity_g=capacity_g,
            )  # fmt: skip

    r = _run(go())
    console.print(f"attested site [bold]{site}[/]: attestation [bold]{r.attestation_id}[/] (event {r.event_id})")


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
    site: Annotated[str, typer.Option("--site", help="One of your attested sites.")],
    grams: Annotated[int, typer.Option("--grams", help="Contained cobalt, integer grams.")],
    product: Annotated[str, typer.Option(help="Product description.")] = "cobalt hydroxide",
    attestation: Annotated[str | None, typer.Option(help="Attestation id (default: the latest for the site).")] = None,
    api: ApiOpt = DEFAULT_API,
) -> None:
    """Issue a lot at one of your sites, with range and capacity proofs."""
    from .client import Client
    from .publisher import Publisher, sync

    w = _load_wallet(wallet)

    async def go():
        async with Client(api) as client:
            att = attestation
            if att is None:
                candidates = [c for c in w.capacities.values() if c.site_id == site]
                if not candidates:
                    await sync(w, client)
                    candidates = [c for c in w.capacities.values() if c.site_id == site]
                if not candidates:
                    _fail(f"no attestation of site {site} is addressed to {w.org_id}")
                att = candidates[-1].attestation_id
            with err.status("proving range and capacity..."):
                return await Publisher(w, client, fetch_receipts=True).issue(site_id=site, attestation_id=att, amount_g=grams, product=product)

    r = _run(go())
    console.print(f"issued lot [bold]{r.lot_ids[0]}[/] ({_grams(grams)} Co) — event {r.event_id}")


@app.command()
def transfer(
    lot: Annotated[str, typer.Argument(help="Lot id.")],
    to: Annotated[str, typer.Option("--to", help="Receiving organisation id.")],
    wallet: WalletOpt,
    api: ApiOpt = DEFAULT_API,
) -> None:
    """Hand a lot to another organisation (its openings are sealed to the receiver)."""
    from .client import Client
    from .publisher import Publisher

    w = _load_wallet(wallet)

    async def go():
        async with Client(api) as client:
            return await Publisher(w, client, fetch_receipts=True).transfer(lot, to)

    r = _run(go())
    console.print(f"lot [bold]{lot}[/] transferred to [bold]{to}[/] (event {r.event_id})")


def _parse_output(text: str) -> tuple[str, int]:
    product, sep, grams = text.rpartition("=")
    if not sep or not product:
        raise typer.BadParameter(f"{text!r}: expected PRODUCT=GRAMS")
    try:
        return product.strip(), int(grams.replace("_", ""))
    except ValueError:
        raise typer.BadParameter(f"{text!r}: GRAMS must be an integer") from None


@app.command()
def transform(
    wallet: WalletOpt,
    inputs: Annotated[list[str], typer.Option("--input", "-i", help="Input lot id (repeat).")],
    outputs: Annotated[list[str], typer.Option("--output", "-o", help="Output as PRODUCT=GRAMS (repeat).")],
    process: Annotated[str, typer.Option(help="refine, split, merge or convert.")] = "refine",
    api: ApiOpt = DEFAULT_API,
) -> None:
    """Consume own lots and create outputs with the inputs' class mix; the rest is declared as loss."""
    from .client import Client
    from .publisher import Publisher

    if process not in ("refine", "split", "merge", "convert"):
        _fail("--process must be refine, split, merge or convert", 2)
    planned = [_parse_output(o) for o in outputs]
    w = _load_wallet(wallet)

    async def go():
        async with Client(api) as client:
            with err.status("proving mass balance and ranges..."):
                return await Publisher(w, client, fetch_receipts=True).transform_proportional(process, inputs, planned)

    r = _run(go())
    for lot_id, (product, grams) in zip(r.lot_ids, planned):
        console.print(f"created lot [bold]{lot_id}[/]: {product} ({_grams(grams)} Co)")
    console.print(f"event {r.event_id}")


@app.command()
def claim(
    lot: Annotated[str, typer.Argument(help="One of your lots.")],
    wallet: WalletOpt,
    kind: Annotated[str, typer.Option(help="ancestry_excludes, share_at_most, share_at_least, amount_in_range")],
    origin_class: Annotated[str | None, typer.Option("--class", help="Origin class the claim is about.")] = None,
    p: Annotated[int | None, typer.Option(help="Share numerator.")] = None,
    q: Annotated[int | None, typer.Option(help="Share denominator.")] = None,
    low: Annotated[int | None, typer.Option(help="amount_in_range: lower bound (g).")] = None,
    high: Annotated[int | None, typer.Option(help="amount_in_range: upper bound (g).")] = None,
    bundle_out: Annotated[Path | None, typer.Option("--bundle-out", help="Also save the disclosure bundle here.")] = None,
    api: ApiOpt = DEFAULT_API,
) -> None:
    """Publish a claim on one of your lots; optionally download its disclosure bundle."""
    from .client import Client
    from .publisher import Publisher

    w = _load_wallet(wallet)

    async def go():
        async with Client(api) as client:
            r = await Publisher(w, client, fetch_receipts=True).claim(lot, kind, origin_class=origin_class, p=p, q=q, low=low, high=high)
            bundle = await client.disclosure_bundle(lot, r.claim_id) if bundle_out else None
            return r, bundle

    r, bundle = _run(go())
    console.print(f"claim [bold]{r.claim_id}[/] published on lot {lot} (event {r.event_id})")
    if bundle_out:
        bundle_out.write_text(json.dumps(bundle, indent=1) + "\n")
        console.print(f"disclosure bundle written to {bundle_out}; check it with: oretrace verify {bundle_out}")


@app.command()
def lots(
    wallet: WalletOpt,
    api: ApiOpt = DEFAULT_API,
    all_: Annotated[bool, typer.Option("--all", help="Include lots you no longer hold.")] = False,
    offline: Annotated[bool, typer.Option(help="Do not ask the server for incoming lots first.")] = False,
) -> None:
    """List your lots with their decrypted amounts (only your wallet can open them)."""
    from .client import Client
    from .publisher import sync

    w = _load_wallet(wallet)
    if not offline:

        async def go():
            async with Client(api) as client:
                return await sync(w, client)

        _run(go())
        w.save()
    table = Table(title=f"Lots of {w.meta.get('name', w.org_id)} ({w.org_id})")
    table.add_column("lot", no_wrap=True)
    table.add_column("product", overflow="fold", ratio=1)
    for k in ORIGIN_CLASSES:
        table.add_column(k, justify="right", no_wrap=True)
    table.add_column("total Co", justify="right", no_wrap=True)
    table.add_column("status")
    shown = [e for e in w.lots.values() if all_ or not e.spent]
    for e in shown:
        amounts = e.amounts()
        table.add_row(
            e.lot_id, e.product, *(_grams(amounts[k]) if amounts[k] else "-" for k in ORIGIN_CLASSES),
            _grams(e.total), "gone" if e.spent else "held",
        )  # fmt: skip
    console.print(table)
    if not shown:
        console.print("[dim]no lots[/]")


@wallet_app.command("restore")
def wallet_restore(
    wallet: WalletOpt,
    api: ApiOpt = DEFAULT_API,
) -> None:
    """Rebuild the wallet's openings from the server (sealed to your key) using only its keys."""
    from .client import Client
    from .publisher import restore

    w = _load_wallet(wallet)
    fresh = w.keys_only()
    fresh.path = w.path

    async def go():
        async with Client(api) as client:
            with _progress() as progress:
                task = progress.add_task("unsealing openings", total=None)
                return await restore(fresh, client, progress=lambda done, total: progress.update(task, completed=done, total=total))

    report = _run(go())
    fresh.save()
    console.print(
        f"restored {report.lots} lot openings and {report.capacities} capacity openings from {report.sealed} sealed"
        f" boxes; {report.held} lots currently held" + (f"; {report.unreadable} unreadable" if report.unreadable else "")
    )


@wallet_app.command("show")
def wallet_show(wallet: WalletOpt) -> None:
    """Print the wallet's public identity (never the private keys)."""
    w = _load_wallet(wallet)
    console.print(
        json.dumps(
            {
                "org_id": w.org_id,
                "network": w.network,
                "key_id": w.key_id,
                "signing_public_key": w.signing_public_hex,
                "sealing_public_key": w.sealing_public_hex,
                "lots": len(w.lots),
                "held": len(w.unspent()),
                "capacities": sorted(w.capacities),
            },
            indent=2,
        )
    )


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
    console.print(f"[bold]Log[/] {c.origin}: {report.size} entries replayed, checkpoint root"
                  f" {c.body().split(chr(10))[2]}; {report.range_proofs} range proofs batched this run")  # fmt: skip
    if report.ok:
        console.print("[bold green]OK[/]: every checkpoint matches the entries, every entry obeys the ledger rules,"
                      " no nonce, consumption, issuance step or id used twice, no event by a revoked key.")  # fmt: skip
        raise typer.Exit(0)
    for v in report.violations:
        console.print(f"[bold red]VIOLATION[/] {v}")
    raise typer.Exit(1)


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
