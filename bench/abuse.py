"""Abuse benchmark (issue 8): for each class of expensive or malformed request,
the server's CPU time and memory growth for the most expensive request the
limits still allow, and /healthz latency while 8 such requests run at once.

    python bench/abuse.py --json bench/results/abuse.json          # ~2-4 min
    python bench/abuse.py --quick --json bench/results/abuse.json  # fewer rounds
    python bench/abuse.py --quick --variant main@/work/main --variant probe \
        --classes entities_at_cap,cost_lots_parents_parents             # side by side

A real server process (`python -m api.server`, one uvicorn worker, embedded
SecantusDB child) on 127.0.0.1, default settings; this process is the client.
For each class C (keys `C.*`):

  C.cpu_s            CPU seconds of the server process tree (server + embedded
                     database + heavy-query processes + body decoders) for ONE
                     request, alone (median of 3)
  C.rss_growth_mb    per request (the issue's target): the server's peak RSS while ONE
                     request runs alone (sampled every 5 ms) minus its RSS just before it,
                     the largest of the 3 single requests. "The server's RSS": the server
                     process's plus its worker processes' (`python -m api.*`: heavy-query
                     processes, body decoders; since 2026-11-30 15:50 UTC, before which
                     they were not counted), not the embedded database's
  C.rss_growth_mb_8  under 8 concurrent copies: the server's peak RSS during the rounds
                     (sampled every 5 ms) minus its RSS before the class
  C.statuses_8       HTTP statuses of the concurrent copies (a large body beyond the
                     admitted ones may wait; 503 only after ORETRACE_LARGE_BODY_WAIT_SECONDS)
  C.status / C.code  HTTP status and first error code of that request (what the limits answer)
  C.healthz_p99_ms   /healthz latency p99 (and p50), probed every 10 ms on a fixed schedule and
  C.healthz_p50_ms   counted from each probe's scheduled time (a stall counts for every probe it
                     delays), by a process of its own (bench/healthz_prober.py, as a load
                     balancer would; before 2026-11-30 14:00 UTC: back to back, from the send,
                     which hid stalls: see that file), while 8 copies of the
                     request run at once, for `rounds` rounds, and more rounds (at most
                     MAX_ROUNDS) until `--min-probes` probes were taken: a p99 of a handful
                     of probes is their maximum (C.healthz_failures: probes answered 503,
                     the database ping having waited more than 2 s; C.rounds: rounds run)
  C.wall_s_8         wall time of one round of 8 concurrent copies (median)
  targets.*          the issue's targets, and whether every class met them
  switch_interval.*  with --switch-cost: a CPU-bound Python thread's work per second and the
                     lateness of an event loop's 2 ms wake-ups, per switch interval (5, 1,
                     0.5 ms), in this process: the two sides of ORETRACE_GIL_SWITCH_INTERVAL_SECONDS

Classes: the largest fragment fan-out and the heaviest validation that fit the
token limit; the costliest list nesting within the cost budget over a DAG
where every lot has 32 parents (the protocol's maximum); 100 attestations of
one site, nested; a 1,000-lot provenance; `_entities` at its cap; 1 MiB bodies
nested past the limit or holding huge integers; 1 MiB bodies of small values
and of small containers (`[[[[]]]], ...`), over the value limit
(ORETRACE_MAX_BODY_VALUES) and refused since it exists; the accepted 1 MiB
body at that limit; an id of 1 MiB; and 30
connections trickling their headers. Data is written through
`Store.apply_effects` with synthetic commitments (the read path ignores
proofs), as bench/api.py does.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as _dt
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# `bench/` (this script's folder, first on sys.path) holds api.py: the project's `api` must win
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() not in (ROOT, ROOT / "bench")]

import httpx  # noqa: E402
from nacl.signing import SigningKey  # noqa: E402

from api.settings import Limits  # noqa: E402
from api.store import Store  # noqa: E402
from bench.api import IDENTITY, CpuAccount, Publisher, Server, insert_dag, log, pct, process_tree_cpu, setup  # noqa: E402
from ledger.effects import Effects  # noqa: E402
from ledger.models import Attestation, Lot  # noqa: E402

TARGET_CPU_S = 1.0
TARGET_RSS_MB = 64.0
TARGET_HEALTHZ_P99_MS = 100.0
LIMITS = Limits()


# --------------------------------------------------------------------------- data


async def insert_fan_dag(store: Store, pub: Publisher, width: int, fan: int) -> list[str]:
    """Three levels of `width` lots; every lot of levels 0 and 1 has `fan` parents on the level above."""
    now = datetime.now(UTC)
    names = [[f"lot_fan{d}x{i:04d}" for i in range(width)] for d in range(3)]
    for d in (2, 1, 0):
        lots = [
            Lot(lot_id=lot_id, owner="trader", issuer="trader", commitments={"industrial": IDENTITY},
                product="synthetic", created_by_event="evt_synthetic", created_at=now,
                parents=[] if d == 2 else sorted({names[d + 1][(i + k) % width] for k in range(fan)}))
            for i, lot_id in enumerate(names[d])
        ]  # fmt: skip
        carrier = pub.register(f"carrier-fan-{d}", "trader")
        await store.apply_effects(Effects(carrier, "transform", lot_ids=[x.lot_id for x in lots], new_lots=lots))
    return names[0]


async def insert_attestations(store: Store, pub: Publisher, site_id: str, count: int) -> None:
    now = datetime.now(UTC)
    for i in range(count):
        att = Attestation(attestation_id=f"att_bench{i:04d}", site_id=site_id, auditor="auditor",
                          origin_class="industrial", valid_from=now - timedelta(days=1),
                          valid_until=now + timedelta(days=30), capacity_commitment=IDENTITY,
                          event_id=f"evt_att{i:04d}")  # fmt: skip
        # any signed envelope carries the synthetic attestation (the read path looks at neither)
        await store.apply_effects(Effects(pub.register(f"carrier-att-{i}", "auditor"), "transform", attestations=[att]))


# --------------------------------------------------------------------------- requests


def diamond_fan_out(n: int, leaf: str = "__typename") -> str:
    fragments = " ".join(
        f"fragment A{i} on Query {{ ...A{i + 1} ...B{i + 1} }} fragment B{i} on Query {{ ...A{i + 1} ...B{i + 1} }}"
        for i in range(n)
    )
    return f"query {{ ...A0 ...B0 }} {fragments} fragment A{n} on Query {{ {leaf} }} fragment B{n} on Query {{ {leaf} }}"


def deep_array(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def requests(fan_roots: list[str], dag_root: str, cap: int) -> dict[str, dict[str, Any]]:
    """class -> {"body": bytes, "content_type": str}: the costliest request each limit lets through
    (or, for malformed input, the biggest one the body limit lets through)."""
    body_limit = LIMITS.max_body_bytes

    def gql(query: str, variables: dict | None = None) -> dict[str, Any]:
        return {"body": json.dumps({"query": query, "variables": variables or {}}).encode()}

    per_lot = 1 + 1 + 32 * (1 + 32 * (1 + 1))  # lots edge/node + parents x parents x (lot + owner)
    first = LIMITS.max_query_cost // per_lot
    entity_selection = "... on Lot { id owner { name } parents { id owner { name } } }"  # 1 + 1 + 32 * 2 per item
    count = body_limit // 32
    while len(json.dumps({f"v{i}": [i, "x" * 8] for i in range(count)})) > body_limit - 200:
        count -= 1000
    big_variables = {f"v{i}": [i, "x" * 8] for i in range(count)}  # just under the body limit (values: over the cap)
    # the costliest body the value limit lets through: max_body_values values (the request
    # object, its query and its variables among them) filling the body limit
    at_cap = LIMITS.max_body_values - 4
    string = "x" * ((body_limit - 400) // at_cap - 4)
    at_value_cap = {"a": [string] * at_cap}
    # about the most containers a body can hold (4 lists in 13 bytes as json.dumps writes them):
    # the costliest accepted value for the server to rebuild from its decoder process
    containers = body_limit // 10
    while len(json.dumps({"query": "{ __typename }", "variables": {"x": [[[[[]]]]] * containers}})) > body_limit - 200:
        containers -= 1000
    return {
        "fanout_diamond": gql(diamond_fan_out(95)),
        "validation_same_name": gql("{ " + " ".join(["__typename"] * (LIMITS.max_tokens - 10)) + " }"),
        "cost_lots_parents_parents": gql(
            f"{{ lots(first: {first}) {{ edges {{ node {{ parents {{ parents {{ id owner {{ name }} }} }} }} }} }} }}"
        ),
        "cost_site_attestations_nested": gql(
            '{ site(id: "bench-site") { attestations(first: 100) { id site { attestations(first: 97) { id } } } } }'
        ),
        "cost_provenance_1000": gql(
            "query($l: ID!) { provenance(lotId: $l) { nodes { id owner { name } } edges { parent child } truncated } }",
            {"l": dag_root},
        ),
        "entities_at_cap": gql(
            f"query($r: [_Any!]!) {{ _entities(representations: $r) {{ {entity_selection} }} }}",
            {"r": [{"__typename": "Lot", "id": fan_roots[i % len(fan_roots)]} for i in range(cap)]},
        ),
        "body_nested_1mib": {"body": deep_array(body_limit // 2)},
        "body_huge_integers": {"body": b'{"query": "{ __typename }", "variables": {"x": [' + b",".join([b"9" * 5000] * (body_limit // 5002 - 1)) + b"]}}"},
        "body_1mib_small_values": gql("{ __typename }", big_variables),
        "body_1mib_small_containers": gql("{ __typename }", {"x": [[[[[]]]]] * containers}),
        "body_1mib_at_value_cap": gql("{ __typename }", at_value_cap),
        "id_1mib": gql("query($x: ID!) { lot(id: $x) { id } }", {"x": "l" * (body_limit - 200)}),
    }


# --------------------------------------------------------------------------- measurements


def rss_kb(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(field)


def worker_pids(pid: int) -> list[int]:
    """The server's own worker processes (`python -m api.*`: heavy-query processes, body
    decoders), not its embedded database: the children of each of its threads (a child
    started by a thread is listed under that thread), from /proc/PID/task/TID/children."""
    found = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                children = f.read().split()
        except OSError:  # the thread ended meanwhile
            continue
        for child in children:
            try:
                with open(f"/proc/{child}/cmdline", "rb") as f:
                    if b"\0-m\0api." in f.read():
                        found.append(int(child))
            except OSError:
                continue
    return found


def server_rss_kb(pid: int) -> int:
    """RSS (kB) of the server process plus that of its worker processes (`worker_pids`)."""
    total = rss_kb(pid, "VmRSS")
    for child in worker_pids(pid):
        try:
            total += rss_kb(child, "VmRSS")
        except (OSError, RuntimeError):  # it ended meanwhile
            continue
    return total


async def send(client: httpx.AsyncClient, request: dict[str, Any]) -> httpx.Response:
    return await client.post("/graphql", content=request["body"], headers={"content-type": "application/json"})


class HealthzProber:
    """/healthz probed on a fixed schedule by bench/healthz_prober.py, a process of its own,
    from `async with` entry (once its first probe answered) to exit: `ms` holds the
    latencies (ms) so far, `failures` the answers other than 200 (the database ping
    timing out after 2 s) and the probes that got no answer."""

    def __init__(self, url: str) -> None:
        host, port = url.removeprefix("http://").rsplit(":", 1)
        self.argv = [sys.executable, str(Path(__file__).with_name("healthz_prober.py")), host, port]
        self.ms: list[float] = []
        self.failures: list[int | str] = []

    def _record(self, line: bytes) -> None:
        seconds, status = line.decode().split()
        if seconds == "-":
            self.failures.append(status)
            return
        self.ms.append(float(seconds) * 1000)
        if status != "200":
            self.failures.append(int(status))

    async def _read(self) -> None:
        while line := await self.process.stdout.readline():
            self._record(line)

    async def __aenter__(self) -> HealthzProber:
        self.process = await asyncio.create_subprocess_exec(
            *self.argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
        )
        try:
            first = await asyncio.wait_for(self.process.stdout.readline(), 30)
        except TimeoutError:
            first = b""
        if not first:
            self.process.kill()
            await self.process.wait()
            raise RuntimeError("the /healthz prober got no answer from the server within 30 s")
        self._record(first)
        self.reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.process.stdin.close()
        await self.reader
        await self.process.wait()


def first_code(response: httpx.Response) -> str | None:
    try:
        errors = response.json().get("errors") or []
    except ValueError:
        return "not JSON"
    return (errors[0].get("extensions") or {}).get("code") if errors else None


async def sample_rss(pid: int, stop: asyncio.Event, rss: list[int]) -> None:
    """The server's RSS (kB, `server_rss_kb`) every 5 ms until `stop` (reading /proc costs the server nothing)."""
    while not stop.is_set():
        rss.append(server_rss_kb(pid))
        await asyncio.sleep(0.005)


#: the most rounds of 8 a class runs to reach `--min-probes` probes
MAX_ROUNDS = 40


async def bench_class(server: Server, request: dict[str, Any], rounds: int, min_probes: int) -> dict[str, Any]:
    pid = server.process.pid
    rss0 = server_rss_kb(pid)
    rss = [rss0]
    cpu, wall8, single_growth = [], [], []
    async with httpx.AsyncClient(base_url=server.url, timeout=300) as client:
        for _ in range(3):
            before = server_rss_kb(pid)
            during = [before]
            stop = asyncio.Event()
            sampler = asyncio.create_task(sample_rss(pid, stop, during))
            c0 = process_tree_cpu(pid)
            response = await send(client, request)
            cpu.append(process_tree_cpu(pid) - c0)
            stop.set()
            await sampler
            during.append(server_rss_kb(pid))
            single_growth.append(max(during) - before)
            rss.extend(during)
        statuses: list[int] = []
        stop = asyncio.Event()
        sampler = asyncio.create_task(sample_rss(pid, stop, rss))
        async with HealthzProber(server.url) as prober:
            while len(wall8) < rounds or (len(prober.ms) < min_probes and len(wall8) < MAX_ROUNDS):
                t = time.perf_counter()
                statuses += [r.status_code for r in await asyncio.gather(*(send(client, request) for _ in range(8)))]
                wall8.append(time.perf_counter() - t)
        stop.set()
        await sampler
    ms, failures = prober.ms, prober.failures
    return {
        "status": response.status_code,
        "code": first_code(response),
        "response_bytes": len(response.content),
        "cpu_s": round(statistics.median(cpu), 3),
        "rss_growth_mb": round(max(single_growth) / 1024, 1),
        "rss_growth_mb_8": round((max(rss) - rss0) / 1024, 1),
        "statuses_8": {str(code): statuses.count(code) for code in sorted(set(statuses))},
        "healthz_p50_ms": round(statistics.median(ms), 2),
        "healthz_p99_ms": round(pct(ms, 0.99), 2),
        "healthz_n": len(ms),
        "healthz_failures": len(failures),
        "wall_s_8": round(statistics.median(wall8), 3),
        "rounds": len(wall8),
    }


async def bench_slow_headers(server: Server, connections: int) -> dict[str, Any]:
    """`connections` sockets trickle header bytes; how long until the server closes them, what they cost."""
    pid = server.process.pid
    rss0 = server_rss_kb(pid)
    rss = [rss0]
    host, port = "127.0.0.1", server.port
    opened = [await asyncio.open_connection(host, port) for _ in range(connections)]
    t0 = time.perf_counter()
    closed_after: list[float] = []

    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        payload = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 100_000
        for byte in payload:
            if reader.at_eof():
                break
            try:
                writer.write(bytes([byte]))
                await writer.drain()
            except ConnectionError:
                break
            try:
                await asyncio.wait_for(reader.read(1), 0.2)
            except TimeoutError:
                continue
            except ConnectionError:
                break
        closed_after.append(time.perf_counter() - t0)
        writer.close()

    stop = asyncio.Event()
    sampler = asyncio.create_task(sample_rss(pid, stop, rss))
    async with HealthzProber(server.url) as prober:
        await asyncio.wait_for(asyncio.gather(*(trickle(r, w) for r, w in opened)), 300)
    stop.set()
    await sampler
    ms, failures = prober.ms, prober.failures
    return {
        "connections": connections,
        "closed_after_s_max": round(max(closed_after), 2),
        "header_timeout_s": LIMITS.header_timeout_seconds,
        "rss_growth_mb": round((max(rss) - rss0) / 1024, 1),
        "healthz_p50_ms": round(statistics.median(ms), 2),
        "healthz_p99_ms": round(pct(ms, 0.99), 2),
        "healthz_n": len(ms),
        "healthz_failures": len(failures),
    }


def _python_work(stop: threading.Event, done: list[tuple[int, float]]) -> None:
    """CPU-bound Python like result completion: build small dicts until `stop`; count
    them, with this thread's CPU time (a loaded machine's other processes do not count)."""
    n, cpu0 = 0, time.thread_time()
    while not stop.is_set():
        for i in range(1000):
            {"id": f"lot_{i}", "owner": {"name": "trader"}, "parents": [i, i + 1]}
        n += 1000
    done.append((n, time.thread_time() - cpu0))


async def switch_interval_cost(intervals: list[float], seconds: float = 1.0, repeats: int = 4) -> dict[str, Any]:
    """Both sides of `sys.setswitchinterval`, in this process: one thread runs CPU-bound
    Python (its work per CPU second: the heavy work's throughput) while this event loop wakes
    every 2 ms (how late each wake-up is: what a probe waits for the GIL). Intervals
    alternate `repeats` times; the medians are reported, and the ratio to the first interval."""
    saved = sys.getswitchinterval()
    runs: dict[float, list[tuple[float, float]]] = {i: [] for i in intervals}
    try:
        for r in range(repeats):
            for interval in intervals if r % 2 == 0 else intervals[::-1]:
                sys.setswitchinterval(interval)
                stop, done, late = threading.Event(), [], []
                worker = threading.Thread(target=_python_work, args=(stop, done))
                t0 = time.perf_counter()
                worker.start()
                while time.perf_counter() - t0 < seconds:
                    t = time.perf_counter()
                    await asyncio.sleep(0.002)
                    late.append(time.perf_counter() - t - 0.002)
                stop.set()
                worker.join()
                count, cpu = done[0]
                runs[interval].append((count / cpu, pct([x * 1000 for x in late], 0.99)))
    finally:
        sys.setswitchinterval(saved)
    out: dict[str, Any] = {}
    base = statistics.median(ops for ops, _ in runs[intervals[0]])
    for interval, values in runs.items():
        ops = statistics.median(v[0] for v in values)
        key = f"switch_interval.{interval * 1000:g}ms"
        out[f"{key}.worker_dicts_per_cpu_s"] = round(ops)
        out[f"{key}.worker_throughput_ratio"] = round(ops / base, 3)
        out[f"{key}.loop_wakeup_late_p99_ms"] = round(statistics.median(v[1] for v in values), 2)
    return out


def parse_variant(text: str) -> tuple[str, Path, dict[str, str]]:
    """`LABEL[@CODE][:VAR=VALUE,...]` -> (label, checkout to serve, environment overrides)."""
    head, _, overrides = text.partition(":")
    label, _, code = head.partition("@")
    env = dict(pair.split("=", 1) for pair in overrides.split(",") if pair)
    return label, Path(code) if code else ROOT, env


def start_server(data_dir: Path, root: SigningKey, code: Path, env: dict[str, str]) -> Server:
    """bench.api.Server with `env` added to this process's environment (the server inherits it)."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        return Server(data_dir, root, "thread", code=code)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def targets(results: dict[str, Any]) -> dict[str, Any]:
    classes = sorted({k.split(".")[0] for k in results})
    return {
        "cpu_s": TARGET_CPU_S,
        "rss_growth_mb": TARGET_RSS_MB,
        "healthz_p99_ms": TARGET_HEALTHZ_P99_MS,
        "met": {
            c: all(
                results.get(f"{c}.{k}", 0) <= t
                for k, t in (("cpu_s", TARGET_CPU_S), ("rss_growth_mb", TARGET_RSS_MB), ("healthz_p99_ms", TARGET_HEALTHZ_P99_MS))
            )
            for c in classes
        },
        # the same memory target applied to the 8 concurrent copies (not the definition)
        "rss_8_met": {c: results.get(f"{c}.rss_growth_mb_8", 0) <= TARGET_RSS_MB for c in classes},
    }


#: figures compared between variants (ratio = variant / first variant): latency, and the
#: heavy work's own cost (CPU of one request, wall time of 8 at once: its throughput)
COMPARED = ("healthz_p99_ms", "healthz_p50_ms", "cpu_s", "wall_s_8")


async def run(args) -> dict[str, Any]:
    load_at_start = round(os.getloadavg()[0], 2)
    switch_cost = await switch_interval_cost([0.005, 0.001, 0.0005]) if args.switch_cost else {}
    root = SigningKey.generate()
    account = CpuAccount()
    variants = [parse_variant(v) for v in args.variant] or [("default", ROOT, {})]
    servers: list[tuple[str, Server, Path]] = []
    per_variant: dict[str, dict[str, Any]] = {label: {} for label, _, _ in variants}
    try:
        plan = None
        for label, code, env in variants:
            data_dir = Path(tempfile.mkdtemp(prefix="oretrace-bench-abuse-"))
            server = start_server(data_dir, root, code, env)
            servers.append((label, server, data_dir))
            pub = Publisher(root)  # a fresh registry on each server
            log(f"{label}: server pid {server.process.pid} on {server.url} ({code}, {env})")
            store = await Store.connect(server.db_uri, "oretrace")
            try:
                async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
                    await setup(client, pub)
                fan_roots = await insert_fan_dag(store, pub, width=64, fan=32)
                await insert_attestations(store, pub, "bench-site", 100)
                dag_root = await insert_dag(store, pub, levels=10, width=100, prefix="p")
            finally:
                await store.close()
            plan = plan or requests(fan_roots, dag_root, LIMITS.max_entities)  # same ids on every server
        names = [n for n in plan if not args.classes or n in args.classes]
        for i, name in enumerate(names):
            # variants take turns, in an order rotated per class: a load that changes
            # during the run falls on each of them alike
            order = servers[i % len(servers):] + servers[: i % len(servers)]
            for label, server, _ in order:
                log(f"{label}: {name} ...")
                for key, value in (await bench_class(server, plan[name], args.rounds, args.min_probes)).items():
                    per_variant[label][f"{name}.{key}"] = value
        if not args.classes or "slow_headers" in args.classes:
            for label, server, _ in servers:
                log(f"{label}: slow_headers ...")
                for key, value in (await bench_slow_headers(server, 30)).items():
                    per_variant[label][f"slow_headers.{key}"] = value
    finally:
        for _, server, data_dir in servers:
            server.stop(account)
            shutil.rmtree(data_dir, ignore_errors=True)

    for figures in per_variant.values():
        figures["targets"] = targets(figures)
    if len(variants) == 1:
        results = per_variant[variants[0][0]]
    else:
        first = variants[0][0]
        base = per_variant[first]
        results = {
            "variants": {label: {"code": str(code), "env": env, **per_variant[label]} for label, code, env in variants},
            "ratios_vs_" + first: {
                label: {
                    k: round(figures[k] / base[k], 3)
                    for k in sorted(figures)
                    if k.rsplit(".", 1)[-1] in COMPARED and base.get(k)
                }
                for label, figures in per_variant.items()
                if label != first
            },
        }
    results.update(switch_cost)
    results["machine.other_cores_busy_during_run"] = account.other_cores_busy()
    results["machine.python"] = platform.python_version()
    results["machine.cpus"] = os.cpu_count()
    results["machine.loadavg_1m_at_start"] = load_at_start
    results["machine.loadavg_1m_at_end"] = round(os.getloadavg()[0], 2)
    results["machine.when"] = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    results["config"] = {"rounds": args.rounds, "min_probes": args.min_probes, "limits": LIMITS.model_dump(),
                         "server": "1 uvicorn worker, embedded SecantusDB child process, default settings"}  # fmt: skip
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument(
        "--variant", action="append", default=[], metavar="LABEL[@CHECKOUT][:VAR=VALUE,...]",
        help="a server to measure: its label, the checkout it runs (default: this one) and environment "
        "overrides; several variants run in one process, taking turns class by class, and the results "
        "give each one's figures and their ratios to the first one's",
    )  # fmt: skip
    parser.add_argument("--switch-cost", action="store_true",
                        help="first measure what a smaller sys.setswitchinterval costs a CPU-bound thread (in this process)")
    parser.add_argument("--switch-cost-only", action="store_true", help="only that measurement (no server)")
    parser.add_argument("--min-probes", type=int, default=100, help="/healthz probes per class at least (more rounds)")
    parser.add_argument("--classes", type=lambda s: s.split(","), default=None, help="comma-separated classes (default: all)")
    args = parser.parse_args()
    args.rounds = 2 if args.quick else 5
    if args.switch_cost_only:
        results = asyncio.run(switch_interval_cost([0.005, 0.001, 0.0005]))
        results["machine.loadavg_1m"] = round(os.getloadavg()[0], 2)
    else:
        results = asyncio.run(run(args))
    text = json.dumps(results, indent=2, sort_keys=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
