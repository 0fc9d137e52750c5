"""Where a transformation's time goes in the server, outside `rules.apply`.

    python bench/ingest_profile.py --count 40 --ports 8500-8599 [--out PATH.prof]
    python bench/ingest_profile.py --transforms-only --inflight 8 --count 48 --ports 8500-8599 [--out PATH.prof]
    python bench/ingest_profile.py --commands --count 20 --inflight 8 --db-port 9557 [--per-transaction K] [--json PATH]
    python bench/ingest_profile.py --verify --count 16 --batch-sizes 1,8 --ports 8500-8599 [--json PATH]

Starts a real server (`python -m api.server`, embedded SecantusDB) under
cProfile, publishes `count` refining transformations one at a time (as
bench/api.py does), stops it and prints the event-loop thread's profile:
cumulative time of the stages of a publication, and the top functions by own
time. cProfile profiles the main thread only: `rules.apply` runs in verifier
threads, so what is printed is exactly the part between the HTTP request and
the answer that is *not* verification. The profiler's clock is the event-loop
thread's CPU time (`time.thread_time`), so waiting for the database, the
client, the GIL or the verifier thread does not count. Profiling slows Python
code ~1.5-2x: compare the shares, not the absolute milliseconds.

`--transforms-only` profiles the transformations only, `--inflight` at a
time (8 by default, as `ingest.transform.inflight8` of bench/api.py): the
server's profiler starts on SIGUSR1 before them and stops on SIGUSR2 after
them, so the figures are per transformation and exclude the set-up.

`--commands` measures the other side, the database: the app runs in this
process (`api.app.create_app` over httpx's ASGI transport, its own embedded
SecantusDB on 127.0.0.1) with a pymongo command listener, `count`
transformations are published `--inflight` at a time, and every database
command sent meanwhile is timed (wall time from sent to answered, so it
includes waiting for the database process and for this event loop). Printed
and written (`--json`) per publication: commands by name and collection,
how many and how long (`ingest.commands.<name>:<collection>.{per_tx,ms_per_tx}`,
`ingest.commands.total.{per_tx,ms_per_tx}`, `ingest.commands.tx_per_s`). The
integrator's background reads and writes of the log are counted too. Also
written: how many verification batches of each size the server formed
(`ingest.commands.verify_batches.size{k}`, api.verification_batches;
`--gather-ms` sets the verifier's gathering window), how many transactions
of each size the store committed (`ingest.commands.tx_batches.size{k}`,
group commit, `StoreStats.batch_sizes`; `--per-transaction` sets
ORETRACE_MAX_PUBLICATIONS_PER_TRANSACTION) and their mean
(`ingest.commands.tx_batches.mean_size`), and how long the store's
`log_sequencer` (held around each transaction, one at a time) was held:
`ingest.commands.log_sequencer.held_ms_per_tx` (wall, per publication) and
`.held_share` of the run's wall time (near 1.0: the transactions are the
bottleneck, whatever verification costs).

`--verify` profiles the verification itself (`verification` below): CPU per
transformation of the MSM, point decoding, the signature, proof replay
(transcripts), folding, and the rules' own Python, for batches of each size
(`verify_profile.batch{k}.*_ms_per_tx`).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import importlib.util
import json
import os
import pstats
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# bench/ itself must not shadow the `api` and `crypto` packages (bench/api.py, bench/crypto.py).
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]

from pymongo import monitoring  # noqa: E402

_spec = importlib.util.spec_from_file_location("bench_api", ROOT / "bench" / "api.py")
bench_api = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_api)

#: Stages of a publication, as (label, substring of a profiled function's "file:line(name)").
STAGES = [
    ("HTTP request in, answer out (uvicorn + Starlette)", "starlette/routing.py", "__call__"),
    ("GraphQL execution of the mutation (strawberry)", "strawberry/schema/schema.py", "execute"),
    ("GraphQL parse + validation", "graphql/validation/validate.py", "validate"),
    ("I-JSON body reading (loads_strict)", "ledger/encoding.py", "loads_strict"),
    ("envelope parsing (pydantic)", "ledger/envelope.py", "parse_envelope"),
    ("service.publish (all of it, incl. waiting for the verifier thread)", "api/service.py", "publish"),
    ("prefetch of referenced records (store reads)", "api/store.py", "prefetch"),
    ("the write transaction (store.apply_effects)", "api/store.py", "apply_effects"),
]


# uvicorn re-raises SIGTERM after its graceful shutdown, which would kill the
# process before the profile is written: the wrapper swallows that re-raise.
_WRAPPER = """
import cProfile, os, runpy, signal, sys, time
out = sys.argv[1]
sys.argv = ["api.server", *sys.argv[2:]]
signal.raise_signal = lambda signum: None
profile = cProfile.Profile(time.thread_time)  # CPU time of the event-loop thread, not wall time
if os.environ.get("ORETRACE_PROFILE_ON_SIGNAL"):  # --transforms-only: SIGUSR1 starts it, SIGUSR2 stops it
    signal.signal(signal.SIGUSR1, lambda *_: profile.enable())
    signal.signal(signal.SIGUSR2, lambda *_: profile.disable())
else:
    profile.enable()
try:
    runpy.run_module("api.server", run_name="__main__", alter_sys=True)
finally:
    profile.disable()
    profile.dump_stats(out)
"""


class ProfiledServer(bench_api.Server):
    """bench/api.py's Server, run under `python -m cProfile -o PATH`."""

    def __init__(self, data_dir: Path, root, out: Path, on_signal: bool = False) -> None:
        real_popen = subprocess.Popen

        def popen(cmd, **kwargs):
            assert cmd[1:3] == ["-m", "api.server"], cmd
            if on_signal:
                kwargs["env"] = {**kwargs["env"], "ORETRACE_PROFILE_ON_SIGNAL": "1"}
            return real_popen([cmd[0], "-c", _WRAPPER, str(out), *cmd[3:]], **kwargs)

        bench_api.subprocess.Popen = popen
        try:
            super().__init__(data_dir, root, "thread")
        finally:
            bench_api.subprocess.Popen = real_popen


async def drive(server, pub, count: int, inflight: int = 1, transforms_only: bool = False) -> float:
    """Publish the set-up, `count` issues and transfers, then `count` transformations
    `inflight` at a time; with `transforms_only` the server profiles the
    transformations only (SIGUSR1 before them, SIGUSR2 after). Their wall seconds."""
    async with bench_api.httpx.AsyncClient(base_url=server.url, timeout=120) as client:
        await bench_api.setup(client, pub)
        envelopes = await bench_api.prepare_lots(client, pub, count)
        semaphore = asyncio.Semaphore(inflight)

        async def one(env) -> None:
            async with semaphore:
                await bench_api.publish(client, env)

        if transforms_only:
            server.process.send_signal(signal.SIGUSR1)
        t0 = time.perf_counter()
        await asyncio.gather(*(one(env) for env in envelopes))
        elapsed = time.perf_counter() - t0
        if transforms_only:
            server.process.send_signal(signal.SIGUSR2)
        return elapsed


def report(path: Path, publications: int) -> None:
    """Event-loop CPU time per publication, by stage, and the top functions.

    A coroutine counts as one call per resumption in cProfile, so stages are
    given as their total cumulative time divided by the number of
    publications (time spent waiting on I/O or on the verifier thread is not
    in it: the loop was in epoll then).
    """
    stats = pstats.Stats(str(path))
    rows = stats.stats  # (file, line, name) -> (cc, nc, tt, ct, callers)
    print(f"\nevent-loop CPU per publication ({publications} publications profiled):")
    for label, file_part, name in STAGES:
        ct = sum(v[3] for (f, _, n), v in rows.items() if file_part in f and n == name)
        print(f"  {label:<70} {ct * 1000 / publications:8.2f} ms")
    waiting = sum(v[2] for (f, _, n), v in rows.items() if "poll" in n and "epoll" in n)
    total = sum(v[2] for v in rows.values())
    print(f"  {'(in epoll: ~0 with a CPU-time clock)':<70} {waiting * 1000 / publications:8.2f} ms")
    print(f"  {'(everything, incl. start-up imports)':<70} {total * 1000 / publications:8.2f} ms")
    print("\ntop functions by own time (event-loop thread):")
    stats.sort_stats("tottime").print_stats(25)


def machine() -> dict:
    return {"machine.cpus": os.cpu_count(), "machine.loadavg_1m_at_start": round(os.getloadavg()[0], 2),
            "machine.when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}  # fmt: skip


class CommandTimes(monitoring.CommandListener):
    """Wall time of each command, by "<name>:<collection>", while `on`."""

    def __init__(self) -> None:
        self.on = False
        self.started_at: dict[int, tuple[float, str]] = {}
        self.seconds: dict[str, float] = collections.defaultdict(float)
        self.calls: collections.Counter[str] = collections.Counter()

    def started(self, event) -> None:
        target = event.command.get(event.command_name)
        self.started_at[event.request_id] = (time.perf_counter(), f"{event.command_name}:{target if isinstance(target, str) else ''}")

    def succeeded(self, event) -> None:
        t0, key = self.started_at.pop(event.request_id, (None, ""))
        if self.on and t0 is not None:
            self.seconds[key] += time.perf_counter() - t0
            self.calls[key] += 1

    failed = succeeded


class HeldTime(asyncio.Lock):
    """An asyncio.Lock that adds up the wall time it is held while `on` (for the
    store's `log_sequencer`, which serialises the publications' transactions)."""

    def __init__(self) -> None:
        super().__init__()
        self.on = False
        self.held = 0.0
        self.acquired_at = 0.0

    async def acquire(self) -> bool:
        await super().acquire()
        self.acquired_at = time.perf_counter()
        return True

    def release(self) -> None:
        if self.on:
            self.held += time.perf_counter() - self.acquired_at
        super().release()


async def commands(
    count: int, inflight: int, db_port: int | None, gather_ms: float = 0.0, per_transaction: int | None = None
) -> dict:
    from api.app import create_app
    from api.embedded import EmbeddedDatabase
    from api.settings import Settings
    from api.store import Store

    data_dir = Path(tempfile.mkdtemp(prefix="oretrace-commands-"))
    db = EmbeddedDatabase(data_dir / "db", host="127.0.0.1", port=db_port)
    times = CommandTimes()
    store = await Store.connect(await db.astart(), "oretrace", event_listeners=[times])
    store.log_sequencer = sequencer = HeldTime()
    root = bench_api.SigningKey.generate()
    pub = bench_api.Publisher(root)
    settings = Settings(database="oretrace", data_dir=data_dir / "app", network=bench_api.NETWORK,
                        root_public_key=root.verify_key.encode().hex(), verify_gather_ms=gather_ms)  # fmt: skip
    if per_transaction is not None:
        settings = settings.model_copy(update={"max_publications_per_transaction": per_transaction})
    app = create_app(settings, store=store)
    try:
        async with app.router.lifespan_context(app):
            transport = bench_api.httpx.ASGITransport(app=app)
            async with bench_api.httpx.AsyncClient(transport=transport, base_url="http://bench", timeout=120) as client:
                await bench_api.setup(client, pub)
                envelopes = await bench_api.prepare_lots(client, pub, count)
                semaphore = asyncio.Semaphore(inflight)

                async def one(envelope) -> None:
                    async with semaphore:
                        await bench_api.publish(client, envelope)

                batch_sizes = app.state.runtime.ingestion.verifier.batch_sizes
                batches0 = collections.Counter(batch_sizes)
                transactions0 = collections.Counter(store.stats.batch_sizes)
                times.on = sequencer.on = True
                t0 = time.perf_counter()
                await asyncio.gather(*(one(e) for e in envelopes))
                wall = time.perf_counter() - t0
                times.on = sequencer.on = False
                batches = collections.Counter(batch_sizes)
                batches.subtract(batches0)
                transactions = collections.Counter(store.stats.batch_sizes)
                transactions.subtract(transactions0)
    finally:
        await store.close()
        await db.astop()
        shutil.rmtree(data_dir, ignore_errors=True)
    out = {"ingest.commands.tx_per_s": round(count / wall, 2), "ingest.commands.inflight": inflight,
           "ingest.commands.count": count, "ingest.commands.verify_gather_ms": gather_ms,
           # the transactions, one at a time (api.store.Store.log_sequencer): wall ms held per
           # publication, and the share of the run it was held (1.0 = the bottleneck)
           "ingest.commands.log_sequencer.held_ms_per_tx": round(sequencer.held * 1000 / count, 2),
           "ingest.commands.log_sequencer.held_share": round(sequencer.held / wall, 3)}  # fmt: skip
    for key, seconds in sorted(times.seconds.items(), key=lambda kv: -kv[1]):
        out[f"ingest.commands.{key}.per_tx"] = round(times.calls[key] / count, 2)
        out[f"ingest.commands.{key}.ms_per_tx"] = round(seconds * 1000 / count, 2)
    for size, n in sorted(batches.items()):  # verification batches (api.verification_batches) by size
        if n:
            out[f"ingest.commands.verify_batches.size{size}"] = n
    for size, n in sorted(transactions.items()):  # transactions (group commit, api.store) by publications
        if n:
            out[f"ingest.commands.tx_batches.size{size}"] = n
    written = sum(size * n for size, n in transactions.items())
    out["ingest.commands.tx_batches.mean_size"] = round(written / max(1, sum(transactions.values())), 2)
    out["ingest.commands.max_publications_per_transaction"] = settings.max_publications_per_transaction
    out["ingest.commands.total.per_tx"] = round(sum(times.calls.values()) / count, 2)
    out["ingest.commands.total.ms_per_tx"] = round(sum(times.seconds.values()) * 1000 / count, 2)
    return out


#: Parts of verification CPU, as (key, file, name of the function whose cumulative
#: time is the part). The functions never call one another, so the parts add up.
VERIFY_PARTS = [
    ("msm", "crypto/group.py", "msm"),  # the native MSM and its scalar conversion
    ("point_decoding", "crypto/group.py", "decode_checked"),  # on-curve + subgroup checks
    ("signature", "ledger/envelope.py", "signature_is_valid"),  # RFC 8785 message + Ed25519
    ("proof_replay", "crypto/bulletproofs.py", "range_relation"),  # transcripts, challenges
    ("proof_replay", "crypto/sigma.py", "zero_relation"),
    ("folding", "crypto/batch.py", "_fold"),  # weighted coefficients of the one MSM
    ("folding", "crypto/batch.py", "_prepare"),  # one inversion per batch
]


async def verification(count: int, sizes: list[int]) -> dict:
    """`--verify`: where a transformation's verification CPU goes, alone and in
    batches (`api.verification_batches.verify_publications`), in this process,
    under cProfile with a CPU clock: ms per transformation of each VERIFY_PARTS
    part and "rules_and_rest" (the rules' own Python: references, mass balance,
    statements, pydantic models). A real server only prepares the envelopes and
    their prefetched views (as bench/api.py does)."""
    import cProfile

    from api.service import _warm_up
    from api.store import Store
    from api.verification_batches import verify_publications
    from ledger import rules

    root = bench_api.SigningKey.generate()
    pub = bench_api.Publisher(root)
    data_dir = Path(tempfile.mkdtemp(prefix="oretrace-verify-profile-"))
    server = bench_api.Server(data_dir, root, "thread")
    store = await Store.connect(server.db_uri, "oretrace")
    try:
        async with bench_api.httpx.AsyncClient(base_url=server.url, timeout=120) as client:
            await bench_api.setup(client, pub)
            envelopes = []
            for _ in range(count):
                env, lot_id = pub.issue(1_000_000)
                await bench_api.publish(client, env)
                await bench_api.publish(client, pub.transfer("mine", lot_id, "trader"))
                envelopes.append(pub.refine("trader", lot_id))
            views = [await store.prefetch(rules.references(e)) for e in envelopes]
    finally:
        await store.close()
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
    _warm_up()
    policy = rules.Policy(network=bench_api.NETWORK, root_public_key=root.verify_key.encode().hex())
    items = [(e, v, policy) for e, v in zip(envelopes, views, strict=True)]
    out: dict = {"verify_profile.count": count}
    for k in sizes:
        batches = [items[i : i + k] for i in range(0, count - count % k, k)]
        done = sum(map(len, batches))
        for batch in batches:  # once unprofiled: caches warm
            verify_publications(batch)
        profile = cProfile.Profile(time.thread_time)
        profile.enable()
        for batch in batches:
            assert all(status == "ok" for status, _ in verify_publications(batch).verdicts)
        profile.disable()
        rows = pstats.Stats(profile).stats
        total = sum(v[2] for v in rows.values())
        parts: dict[str, float] = collections.defaultdict(float)
        for key, file_part, name in VERIFY_PARTS:
            # the outermost of the functions of that name in that file (group.msm calls the backend's msm)
            parts[key] += max((v[3] for (f, _, n), v in rows.items() if f.endswith(file_part) and n == name), default=0)
        parts["rules_and_rest"] = total - sum(parts.values())
        out[f"verify_profile.batch{k}.total_ms_per_tx"] = round(total * 1000 / done, 2)
        for key, seconds in parts.items():
            out[f"verify_profile.batch{k}.{key}_ms_per_tx"] = round(seconds * 1000 / done, 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=40)
    ap.add_argument("--ports", help="take the server's port from this range, e.g. 8500-8599")
    ap.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "oretrace-ingest.prof")
    ap.add_argument("--report-only", action="store_true", help="only print the report of an existing --out file")
    ap.add_argument("--commands", action="store_true", help="time the database commands instead (see above)")
    ap.add_argument("--inflight", type=int, default=8,
                    help="with --commands or --transforms-only: publications in flight")
    ap.add_argument("--transforms-only", action="store_true",
                    help="profile the event loop during the transformations only, --inflight at a time")
    ap.add_argument("--db-port", type=int, help="with --commands: port of the embedded database")
    ap.add_argument("--gather-ms", type=float, default=0.0,
                    help="with --commands: the verifier's gathering window (ORETRACE_VERIFY_GATHER_MS)")
    ap.add_argument("--per-transaction", type=int,
                    help="with --commands: ORETRACE_MAX_PUBLICATIONS_PER_TRANSACTION (default: the setting's)")
    ap.add_argument("--json", type=Path, help="with --commands or --verify: write the figures here")
    ap.add_argument("--verify", action="store_true", help="profile verification alone and in batches (see above)")
    ap.add_argument("--batch-sizes", default="1,8", help="with --verify: batch sizes, e.g. 1,2,4,8")
    args = ap.parse_args()
    if args.ports:
        low, high = (int(x) for x in args.ports.split("-"))
        bench_api.PORT_RANGE = range(low, high + 1)
    if args.commands or args.verify:
        if args.verify:
            sizes = [int(k) for k in args.batch_sizes.split(",")]
            figures = asyncio.run(verification(args.count, sizes))
        else:
            figures = asyncio.run(
                commands(args.count, args.inflight, args.db_port, args.gather_ms, args.per_transaction)
            )
        out = {**machine(), **figures}
        text = json.dumps(out, indent=2, sort_keys=True)
        print(text)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(text + "\n")
        return
    # 3 registrations + 1 attestation, then issue + transfer + transform each; or the transformations only
    publications = args.count if args.transforms_only else 4 + 3 * args.count
    if args.report_only:
        report(args.out, publications)
        return
    inflight = args.inflight if args.transforms_only else 1
    root = bench_api.SigningKey.generate()
    pub = bench_api.Publisher(root)
    data_dir = Path(tempfile.mkdtemp(prefix="oretrace-profile-"))
    server = ProfiledServer(data_dir, root, args.out, on_signal=args.transforms_only)
    try:
        elapsed = asyncio.run(drive(server, pub, args.count, inflight, args.transforms_only))
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
    print(f"{args.count} transformations {inflight} in flight under the profiler: {args.count / elapsed:.1f} tx/s")
    report(args.out, publications)


if __name__ == "__main__":
    main()
