"""API benchmark: ingestion with verification, and provenance over HTTP vs raw pymongo.

    python bench/api.py --quick --json bench/results/api.json   # ~1-2 min
    python bench/api.py --json bench/results/api.json           # more samples (~4-6 min)

Everything runs against the embedded database (SecantusDB child process) of a
real server process (`python -m api.server`, uvicorn, one worker) on
127.0.0.1; this process is only the client. Keys (medians in ms unless said
otherwise; every ratio is measured in this one run):

  ingest.{M}.sequential.{tx_per_s,p50_ms,p99_ms}  transformations (1 input -> 1 output + loss,
                                               real proofs verified by the server), one at a time;
                                               M = process | thread (ORETRACE_VERIFY_MODE)
  ingest.{M}.concurrent{C}.tx_per_s            the same with C requests in flight
  ingest.{M}.read_p50_ms.{idle,under_load}     `lot(id) { owner { name } }` while idle / while
                                               the concurrent ingestion runs
  ingest.transform.inflight8.{tx_per_s,p99_ms} transformations with 8 requests in flight (default
                                               thread verifiers); p99 of each request's latency
  ingest.transform.inflight8.batching.rounds   (--ingest-only) per round, what the measured publications
                                               formed: verification batches and transactions by size,
                                               their means, gathers (the server's `ingestion batching`
                                               log line at shutdown; null for a checkout without it)
  ingest.transform.rules_apply_ms              CPU time of the server's verification of one
                                               transformation (api.service.verify_publication:
                                               rules.apply, all its proofs in one MSM), one thread,
                                               in this process (same run)
  ingest.transform.inflight8.cpu_ms_per_tx.{event_loop,server_threads,database}
                                               the server's CPU per transformation during that run:
                                               its event-loop thread, its other threads (verifiers),
                                               the embedded database process (/proc deltas)
  ingest.transform.batch{k}_cpu_ms             CPU per transformation of verifying k at once
                                               (api.verification_batches, one MSM), k = 1, 2, 4, 8:
                                               the least of 5 trials, the sizes interleaved in each
                                               (`...batch{k}_cpu_ms.trials`: all 5)
  ingest.transform.{with,without}_cap_cpu_ms   the same, with and without verifying the loss-cap
                                               proof (the server accepts no v2 transformation
                                               without one: "without" leaves it out in-process)
  ingest.transform.loss_cap_ratio              with_cap / without_cap (issue 9: <= 1.3)
  verify.transform_ms                          verify_publication of one transformation, in this process
  verify.threads2_speedup                      2 threads vs 1 on the same verifications (best of 3)
  verify.threads2_cpu_over_wall                process CPU time / wall time with 2 threads: ~2 means
                                               arkworks released the GIL and both threads ran
  provenance.dag1000.api.{p50_ms,p99_ms}       `provenance(lotId, maxDepth: 256)` over HTTP, 1,000 ancestors
                                               (10 levels x 100 lots, 2-3 parents each), nodes + edges
  provenance.dag1000.store.{p50_ms,p99_ms}     the same read with api.store.Store.provenance (pymongo +
                                               pydantic validation), 11 round trips
  provenance.dag1000.raw_bfs.{p50_ms,p99_ms}   bare pymongo: one `$in` find per level, dicts only
  provenance.dag1000.raw_graphlookup.p50_ms    bare pymongo: one `$graphLookup` (maxDepth 255)
  provenance.dag1000.api_over_raw              api p50 / raw_bfs p50
  provenance.chain256.{raw_bfs,raw_graphlookup}.p50_ms   a 256-deep chain (the depth limit)
  machine.other_cores_busy_during_run          cores kept busy by OTHER processes (noise; ~0 = clean)
  machine.*

The 1,000-ancestor DAG is written through `Store.apply_effects` (the server's
write path, one transaction per level) with synthetic commitments: building it
from real signed transformations would spend ~0.6 s of proving per lot, and
the read path does not look at proofs.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import datetime as _dt
import json
import os
import platform
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# bench/ itself must not shadow the `api` and `crypto` packages (this file, bench/crypto.py),
# also when PYTHONPATH already holds the repository.
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]

import httpx  # noqa: E402
from nacl.public import PrivateKey  # noqa: E402
from nacl.signing import SigningKey  # noqa: E402

from api.embedded import local_client_uri  # noqa: E402
from api.store import Store  # noqa: E402
from crypto.pedersen import Opening  # noqa: E402
from ledger import statements as st  # noqa: E402
from ledger.builders import PlannedOutput, build_attestation, build_issue, build_transfer, build_transform  # noqa: E402
from ledger.effects import Effects  # noqa: E402
from ledger.envelope import sign  # noqa: E402
from ledger.models import KeyEntry, Location, Lot, RegisterOrganization, SiteInfo  # noqa: E402
from supervision.children import die_with_parent  # noqa: E402

NETWORK = "oretrace-bench"
IDENTITY = "c0" + "00" * 47


# --------------------------------------------------------------------------- publications


class Org:
    def __init__(self, org_id: str, role: str) -> None:
        self.org_id, self.role = org_id, role
        self.signing = SigningKey.generate()
        self.sealing = PrivateKey.generate()
        self.openings: dict[str, dict[str, Opening]] = {}

    @property
    def sealing_public(self) -> str:
        return self.sealing.public_key.encode().hex()


class Publisher:
    """Builds signed envelopes with real proofs (client side)."""

    def __init__(self, root: SigningKey) -> None:
        self.root = root
        self.orgs: dict[str, Org] = {}

    def sign(self, payload, signer: str, nonce: str | None = None):
        if signer == "operator":
            return sign(payload, network=NETWORK, signer="operator", key_id="root", signing_key=self.root, nonce=nonce)
        return sign(payload, network=NETWORK, signer=signer, key_id="k1", signing_key=self.orgs[signer].signing, nonce=nonce)

    def register(self, org_id: str, role: str):
        org = self.orgs[org_id] = Org(org_id, role)
        payload = RegisterOrganization(
            org_id=org_id, name=org_id, country="CD", roles=[role],
            signing_keys=[KeyEntry(key_id="k1", public_key=org.signing.verify_key.encode().hex())],
            sealing_key=org.sealing_public,
        )  # fmt: skip
        return self.sign(payload, "operator")

    def attest(self, auditor: str, operator: str, capacity: int):
        nonce = secrets.token_hex(16)
        self.capacity = Opening.fresh(capacity)
        self.issued = Opening.zero()
        self.seq = 0
        site = SiteInfo(site_id="bench-site", operator=operator, name="Bench site", country="CD", region="Lualaba",
                        location=Location(lat=-10.7, lon=25.5), origin_class="industrial")  # fmt: skip
        now = datetime.now(UTC)
        payload = build_attestation(NETWORK, auditor, nonce, site=site, valid_from=now - timedelta(days=1),
                                    valid_until=now + timedelta(days=30), capacity=self.capacity,
                                    operator_sealing_key=self.orgs[operator].sealing_public)  # fmt: skip
        self.site_operator = operator
        self.attestation_id = st.attestation_id(NETWORK, auditor, nonce)
        return self.sign(payload, auditor, nonce)

    def issue(self, amount: int):
        nonce, opening = secrets.token_hex(16), Opening.fresh(amount)
        op = self.site_operator
        payload = build_issue(NETWORK, op, nonce, site_id="bench-site", origin_class="industrial",
                              attestation_id=self.attestation_id, seq=self.seq, opening=opening,
                              issued_before=self.issued, capacity=self.capacity, product="hydroxide",
                              owner_sealing_key=self.orgs[op].sealing_public)  # fmt: skip
        self.issued, self.seq = self.issued + opening, self.seq + 1
        lot_id = st.issued_lot_id(NETWORK, op, nonce)
        self.orgs[op].openings[lot_id] = {"industrial": opening}
        return self.sign(payload, op, nonce), lot_id

    def transfer(self, owner: str, lot_id: str, to: str):
        openings = self.orgs[owner].openings[lot_id]
        self.orgs[to].openings[lot_id] = openings
        payload = build_transfer(lot_id=lot_id, to=to, openings=openings,
                                 receiver_sealing_key=self.orgs[to].sealing_public)  # fmt: skip
        return self.sign(payload, owner)

    def refine(self, owner: str, lot_id: str):
        """1 input -> 1 output (98 %) + loss: a 2-value aggregated range proof and a balance proof."""
        org = self.orgs[owner]
        nonce = secrets.token_hex(16)
        inputs = {lot_id: org.openings[lot_id]}
        out = {k: Opening.fresh(o.value * 98 // 100) for k, o in inputs[lot_id].items()}
        payload = build_transform(NETWORK, owner, nonce, process="refine", inputs=inputs,
                                  outputs=[PlannedOutput("sulfate", out)], owner_sealing_key=org.sealing_public)  # fmt: skip
        return self.sign(payload, owner, nonce)


MUTATION = {
    "register_organization": "registerOrganization",
    "attest_site": "attestSite",
    "issue": "issueLot",
    "transfer": "transferLot",
    "transform": "transformLots",
}


# --------------------------------------------------------------------------- server process


def cpu_busy_seconds() -> float:
    """Busy CPU seconds of the whole machine so far (all cores), from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def process_tree_cpu(root_pid: int) -> float:
    """CPU seconds used so far by a process and all its live descendants (/proc)."""
    stats: dict[int, tuple[int, float]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ppid, utime, stime, cutime, cstime = int(fields[1]), *map(int, fields[11:15])
        stats[int(entry)] = (ppid, (utime + stime + cutime + cstime) / os.sysconf("SC_CLK_TCK"))
    total, todo = 0.0, [root_pid]
    while todo:
        pid = todo.pop()
        if pid in stats:
            total += stats[pid][1]
            todo.extend(child for child, (ppid, _) in stats.items() if ppid == pid)
    return total


def server_cpu_split(pid: int) -> dict[str, float]:
    """CPU seconds so far of a server process, split: its main thread (the event
    loop), its other threads (the verifier threads, pymongo's monitors, the
    database supervisor) and its descendants (the embedded database process)."""
    tick = os.sysconf("SC_CLK_TCK")
    split = {"event_loop": 0.0, "server_threads": 0.0}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                utime, stime = map(int, f.read().rsplit(")", 1)[1].split()[11:13])
        except OSError:
            continue  # a thread that just ended
        split["event_loop" if int(tid) == pid else "server_threads"] += (utime + stime) / tick
    with open(f"/proc/{pid}/stat") as f:
        own = sum(map(int, f.read().rsplit(")", 1)[1].split()[11:15])) / tick
    split["database"] = process_tree_cpu(pid) - own
    return split


class CpuAccount:
    """Noise indicator: cores kept busy by processes other than this benchmark's."""

    def __init__(self) -> None:
        self.wall0, self.busy0 = time.monotonic(), cpu_busy_seconds()
        self.load0 = round(os.getloadavg()[0], 2)
        self.ours = 0.0  # CPU of server trees that already stopped
        self.own0 = process_tree_cpu(os.getpid())

    def server_stopping(self, server: Server) -> None:
        self.ours += process_tree_cpu(server.process.pid)

    def other_cores_busy(self) -> float:
        wall = time.monotonic() - self.wall0
        ours = self.ours + process_tree_cpu(os.getpid()) - self.own0
        return round(max(0.0, (cpu_busy_seconds() - self.busy0) - ours) / wall, 2)


PORT_RANGE: range | None = None  # --ports A-B: the server's port is taken from this range


def free_port() -> int:
    for port in PORT_RANGE or [0]:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise RuntimeError(f"no free port in {PORT_RANGE}")


class Server:
    """`python -m api.server` of the checkout `code` (default: this one) on a free port.
    It dies with this process (`supervision.children.die_with_parent`, and its embedded
    database with it), so an interrupted or killed benchmark leaves no server running.
    Started from the main thread only (PDEATHSIG follows the thread that forked)."""

    def __init__(
        self, data_dir: Path, root: SigningKey, verify_mode: str = "thread", code: Path = ROOT,
        extra_env: dict[str, str] | None = None, log_level: str = "warning",
    ) -> None:  # fmt: skip
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir = data_dir
        env = {k: v for k, v in os.environ.items() if k != "MONGODB_URI"}
        env["ORETRACE_VERIFY_MODE"] = verify_mode
        env.update(extra_env or {})
        env["PYTHONPATH"] = str(code)
        self.log = open(data_dir / "server.log", "wb")  # noqa: SIM115
        parent = os.getpid()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "api.server", "--port", str(self.port), "--data-dir", str(data_dir),
             "--root-public-key", root.verify_key.encode().hex(), "--network", NETWORK, "--log-level", log_level],
            cwd=code, env=env, stdout=self.log, stderr=subprocess.STDOUT,
            preexec_fn=lambda: die_with_parent(parent),  # noqa: PLW1509 - the main thread, see above
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.log.close()
                raise RuntimeError((data_dir / "server.log").read_text())
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        else:
            self.stop()
            raise RuntimeError("server did not start")

    @property
    def db_uri(self) -> str:
        """Its embedded database's URI with the login it requires (a baseline checkout older
        than that login has none: EmbeddedDatabaseError, and no side asks it for one)."""
        return local_client_uri(self.data_dir)

    def stop(self, account: CpuAccount | None = None) -> None:
        if account is not None:
            account.server_stopping(self)
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


#: publications sent so far, by client (`bench_inflight`: the batches of its setup); the
#: client itself is the key: a later round's server may reuse a port, hence a URL
PUBLISHED: collections.Counter[httpx.AsyncClient] = collections.Counter()


async def publish(client: httpx.AsyncClient, envelope) -> dict[str, Any]:
    name = MUTATION[envelope.payload.type]
    PUBLISHED[client] += 1
    response = await client.post(
        "/graphql",
        json={"query": f"mutation($e: JSON!) {{ {name}(envelope: $e) {{ eventId lotIds }} }}",
              "variables": {"e": envelope.to_json()}},  # fmt: skip
    )
    body = response.json()
    if body.get("errors"):
        raise RuntimeError(body["errors"])
    return body["data"][name]


# --------------------------------------------------------------------------- measurements


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(samples_s: list[float]) -> dict[str, float]:
    ms = [s * 1000 for s in samples_s]
    return {"p50_ms": round(statistics.median(ms), 3), "p99_ms": round(pct(ms, 0.99), 3), "n": len(ms)}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


async def prepare_lots(client, pub: Publisher, count: int) -> list:
    """`count` issued lots moved to the trader, and one refine envelope per lot (proved here)."""
    lots = []
    for _ in range(count):
        env, lot_id = pub.issue(1_000_000)
        await publish(client, env)
        await publish(client, pub.transfer("mine", lot_id, "trader"))
        lots.append(lot_id)
    t0 = time.perf_counter()
    envelopes = [pub.refine("trader", lot_id) for lot_id in lots]
    log(f"  proved {count} transformations in {time.perf_counter() - t0:.1f} s (client side)")
    return envelopes


async def reader(client, lot_id: str, stop: asyncio.Event, samples: list[float]) -> None:
    query = {"query": "query($id: ID!) { lot(id: $id) { id owner { name } } }", "variables": {"id": lot_id}}
    while not stop.is_set():
        t = time.perf_counter()
        await client.post("/graphql", json=query)
        samples.append(time.perf_counter() - t)
        await asyncio.sleep(0.01)


async def bench_ingestion(client, pub: Publisher, count: int, concurrency: int, results: dict, mode: str) -> str:
    log(f"ingestion ({mode} verifiers): preparing {2 * count} lots")
    sequential = await prepare_lots(client, pub, count)
    concurrent = await prepare_lots(client, pub, count)

    idle: list[float] = []
    stop = asyncio.Event()
    task = asyncio.create_task(reader(client, "lot_none", stop, idle))
    await asyncio.sleep(1.0)
    stop.set()
    await task

    latencies = []
    t0 = time.perf_counter()
    out_lot = None
    for env in sequential:
        t = time.perf_counter()
        out_lot = (await publish(client, env))["lotIds"][0]
        latencies.append(time.perf_counter() - t)
    elapsed = time.perf_counter() - t0
    results[f"ingest.{mode}.sequential.tx_per_s"] = round(count / elapsed, 2)
    s = summary(latencies)
    results[f"ingest.{mode}.sequential.p50_ms"], results[f"ingest.{mode}.sequential.p99_ms"] = s["p50_ms"], s["p99_ms"]
    log(f"  sequential: {count / elapsed:.1f} tx/s, p50 {s['p50_ms']:.0f} ms")

    under_load: list[float] = []
    stop = asyncio.Event()
    read_task = asyncio.create_task(reader(client, out_lot, stop, under_load))
    semaphore = asyncio.Semaphore(concurrency)

    async def one(env) -> None:
        async with semaphore:
            await publish(client, env)

    t0 = time.perf_counter()
    await asyncio.gather(*(one(env) for env in concurrent))
    elapsed = time.perf_counter() - t0
    stop.set()
    await read_task
    results[f"ingest.{mode}.concurrent{concurrency}.tx_per_s"] = round(count / elapsed, 2)
    results[f"ingest.{mode}.read_p50_ms.idle"] = summary(idle)["p50_ms"]
    results[f"ingest.{mode}.read_p50_ms.under_load"] = summary(under_load)["p50_ms"]
    results[f"ingest.{mode}.read_p99_ms.under_load"] = summary(under_load)["p99_ms"]
    log(f"  concurrent x{concurrency}: {count / elapsed:.1f} tx/s; reads p50 idle "
        f"{results[f'ingest.{mode}.read_p50_ms.idle']} ms, "
        f"under load {results[f'ingest.{mode}.read_p50_ms.under_load']} ms")
    return out_lot


async def bench_inflight(
    client, pub: Publisher, count: int, inflight: int, results: dict, key: str = "", server: Server | None = None
) -> None:
    """`count` transformations with `inflight` requests at once: throughput and per-request p99
    (keys `ingest.transform.inflight{N}{key}.*`); with `server`, its CPU per transformation
    during the run, split (`...cpu_ms_per_tx.{event_loop,server_threads,database}`, see
    `server_cpu_split`)."""
    log(f"ingestion with {inflight} in flight: preparing {count} lots")
    envelopes = await prepare_lots(client, pub, count)
    semaphore = asyncio.Semaphore(inflight)
    latencies: list[float] = []

    async def one(env) -> None:
        async with semaphore:
            t = time.perf_counter()
            await publish(client, env)
            latencies.append(time.perf_counter() - t)

    published_before = PUBLISHED[client]
    cpu0 = server_cpu_split(server.process.pid) if server else {}
    t0 = time.perf_counter()
    await asyncio.gather(*(one(env) for env in envelopes))
    elapsed = time.perf_counter() - t0
    cpu1 = server_cpu_split(server.process.pid) if server else {}
    key = f"ingest.transform.inflight{inflight}{key}"
    results[f"{key}.tx_per_s"] = round(count / elapsed, 2)
    results[f"{key}.p99_ms"] = summary(latencies)["p99_ms"]
    results[f"{key}.published_before"] = published_before
    for part in cpu1:
        results[f"{key}.cpu_ms_per_tx.{part}"] = round((cpu1[part] - cpu0[part]) / count * 1000, 1)
    log(f"  {inflight} in flight: {count / elapsed:.1f} tx/s, p99 {results[f'{key}.p99_ms']:.0f} ms")


def server_batching(log_path: Path, published_before: int) -> dict[str, Any] | None:
    """What the measured publications formed on a stopped server: its `ingestion batching`
    line (api.service.Ingestion.close, INFO, at shutdown) less the `published_before`
    publications sent ahead of the measurement, one at a time, each a verification batch
    and a transaction of one. {"verify_batches": {size: batches}, "transactions": {size:
    count}, "gathers": n, "mean_verify_batch", "mean_transaction"}; None when the server
    logged no such line (a checkout before it, or a log level above INFO)."""
    marker = "ingestion batching "
    lines = [line for line in log_path.read_text(errors="replace").splitlines() if marker in line]
    if not lines:
        return None
    logged = json.loads(lines[-1].split(marker, 1)[1])
    out: dict[str, Any] = {"gathers": logged["gathers"]}
    for part, mean in (("verify_batches", "mean_verify_batch"), ("transactions", "mean_transaction")):
        sizes = {int(k): v for k, v in logged[part].items()}
        if sizes.get(1, 0) < published_before:
            raise RuntimeError(f"{log_path}: fewer {part} of one than the {published_before} sequential publications")
        sizes[1] -= published_before
        sizes = {k: v for k, v in sorted(sizes.items()) if v}
        out[part] = sizes
        out[mean] = round(
            sum(k * v for k, v in sizes.items()) / max(1, sum(sizes.values())), 2
        )
    return out


#: batch sizes of `ingest.transform.batch{k}_cpu_ms`
BATCH_SIZES = (1, 2, 4, 8)


def bench_verification(pub: Publisher, store_view, results: dict, count: int) -> None:
    """The server's verification (`api.service.verify_publication`: rules.apply, every proof of
    the envelope in one MSM) in this process: 1 thread vs 2 threads (does it release the GIL?),
    and the loss-cap proof's share of it."""
    from api.service import verify_publication
    from ledger import rules
    from ledger.envelope import parse_envelope
    from ledger.proofs import BatchCollector

    envs, views = store_view
    policy = rules.Policy(network=NETWORK, root_public_key=pub.root.verify_key.encode().hex())

    def received():
        """The envelopes as the server decodes them, afresh for each trial: a verified
        signature is remembered on the envelope object (ledger.envelope.signature_is_valid),
        and a transformation's signature is checked in the rules (no prefetch check)."""
        return [(parse_envelope(env.to_json()), view) for env, view in zip(envs, views, strict=True)]

    ones, twos, cpu_ratios, cpus = [], [], [], []
    for _ in range(3):  # trials: a second CPU-bound job on the machine skews any single one
        pairs = received()
        t0, c0 = time.perf_counter(), time.thread_time()
        for env, view in pairs:
            verify_publication(env, view, policy)
        ones.append(time.perf_counter() - t0)
        cpus.append(time.thread_time() - c0)
        pairs = received()
        with ThreadPoolExecutor(2) as pool:
            t0, c0 = time.perf_counter(), time.process_time()
            list(pool.map(lambda ev: verify_publication(ev[0], ev[1], policy), pairs))
            twos.append(time.perf_counter() - t0)
            cpu_ratios.append((time.process_time() - c0) / twos[-1])
    one, two = min(ones), min(twos)
    results["verify.transform_ms"] = round(one / count * 1000, 2)
    results["ingest.transform.rules_apply_ms"] = round(min(cpus) / count * 1000, 2)
    results["verify.threads2_speedup"] = round(one / two, 2)
    results["verify.threads2_cpu_over_wall"] = round(max(cpu_ratios), 2)  # ~2 = both threads ran at once
    log(f"verification: {one / count * 1000:.1f} ms per transformation, 2 threads speed-up x{one / two:.2f} "
        f"(CPU time / wall time {max(cpu_ratios):.2f})")  # fmt: skip

    # cross-publication batches (api.verification_batches): CPU per transformation, batches of k
    from api.verification_batches import verify_publications

    sizes = [k for k in BATCH_SIZES if k <= count]
    samples: dict[int, list[float]] = {k: [] for k in sizes}
    for _ in range(5):  # trials, the batch sizes interleaved in each: the same machine load for all
        for k in sizes:
            items = [(env, view, policy) for env, view in received()[: count - count % k]]
            c0 = time.thread_time()
            for i in range(0, len(items), k):
                verify_publications(items[i : i + k])
            samples[k].append((time.thread_time() - c0) / len(items))
    for k in sizes:
        results[f"ingest.transform.batch{k}_cpu_ms"] = round(min(samples[k]) * 1000, 2)
        results[f"ingest.transform.batch{k}_cpu_ms.trials"] = [round(x * 1000, 2) for x in samples[k]]
    log("batched verification, CPU ms per transformation: " + ", ".join(
        f"k={k}: {results[f'ingest.transform.batch{k}_cpu_ms']}" for k in BATCH_SIZES if k <= count))  # fmt: skip

    class WithoutLossCap(BatchCollector):
        """The same verification minus the loss-cap proof (a v2 server accepts no transformation
        without one, so "without" can only be measured by leaving that proof out here)."""

        def check_range(self, name, statement, meaning=""):
            if name != "loss-cap proof":
                super().check_range(name, statement, meaning)

    def verify(sink_type, pairs):
        for env, view in pairs:
            sink = sink_type()
            rules.apply(env, view, policy, sink)
            sink.verify()

    cpu = {BatchCollector: [], WithoutLossCap: []}
    for _ in range(5):  # interleaved trials, CPU time of this thread
        for sink_type, trials in cpu.items():
            pairs = received()
            c0 = time.thread_time()
            verify(sink_type, pairs)
            trials.append(time.thread_time() - c0)
    with_cap, without_cap = min(cpu[BatchCollector]), min(cpu[WithoutLossCap])
    results["ingest.transform.with_cap_cpu_ms"] = round(with_cap / count * 1000, 2)
    results["ingest.transform.without_cap_cpu_ms"] = round(without_cap / count * 1000, 2)
    results["ingest.transform.loss_cap_ratio"] = round(with_cap / without_cap, 3)
    log(f"loss cap: {with_cap / count * 1000:.1f} ms with, {without_cap / count * 1000:.1f} ms without "
        f"(x{with_cap / without_cap:.2f})")  # fmt: skip


async def insert_dag(store: Store, pub: Publisher, levels: int, width: int, prefix: str) -> str:
    """levels x width synthetic lots (2-3 parents each on the level above) and one root; returns the root id."""
    names = [[f"lot_{prefix}{d:03d}x{i:04d}" for i in range(width)] for d in range(levels)]
    now = datetime.now(UTC)
    for d in reversed(range(levels)):
        lots = []
        for i, lot_id in enumerate(names[d]):
            parents = [] if d == levels - 1 else sorted({names[d + 1][i], names[d + 1][(i + 1) % width],
                                                         names[d + 1][(i * 7 + 3) % width]})  # fmt: skip
            lots.append(Lot(lot_id=lot_id, owner="trader", issuer="trader", commitments={"industrial": IDENTITY},
                            product="synthetic", created_by_event="evt_synthetic", created_at=now, parents=parents))  # fmt: skip
        carrier = pub.register(f"carrier-{prefix}-{d}", "trader")  # any signed envelope: apply_effects stores it
        await store.apply_effects(Effects(carrier, "transform", lot_ids=[x.lot_id for x in lots], new_lots=lots))
    root = Lot(lot_id=f"lot_{prefix}root", owner="trader", issuer="trader", commitments={"industrial": IDENTITY},
               product="synthetic", created_by_event="evt_synthetic", created_at=now, parents=names[0])  # fmt: skip
    await store.apply_effects(Effects(pub.register(f"carrier-{prefix}-root", "trader"), "transform", new_lots=[root]))
    return root.lot_id


async def raw_bfs(db, lot_id: str, max_depth: int) -> tuple[list[dict], list[tuple[str, str]]]:
    root = await db.lots.find_one({"_id": lot_id})
    found = {root["_id"]: root}
    frontier, depth = list(dict.fromkeys(root["parents"])), 0
    while frontier and depth < max_depth:
        level = await db.lots.find({"_id": {"$in": frontier}}).to_list(None)
        depth += 1
        for doc in level:
            found[doc["_id"]] = doc
        frontier = list(dict.fromkeys(p for doc in level for p in doc["parents"] if p not in found))
    edges = [(p, d["_id"]) for d in found.values() for p in d["parents"] if p in found]
    return list(found.values()), edges


async def raw_graphlookup(db, lot_id: str, max_depth: int) -> int:
    pipeline = [
        {"$match": {"_id": lot_id}},
        {"$graphLookup": {"from": "lots", "startWith": "$parents", "connectFromField": "parents",
                          "connectToField": "_id", "as": "ancestors", "maxDepth": max_depth - 1}},
    ]  # fmt: skip
    docs = await (await db.lots.aggregate(pipeline)).to_list(None)
    return len(docs[0]["ancestors"])


async def timed(fn, reps: int) -> list[float]:
    samples = []
    for _ in range(reps):
        t = time.perf_counter()
        await fn()
        samples.append(time.perf_counter() - t)
    return samples


async def bench_provenance(client, store: Store, pub: Publisher, reps: int, results: dict) -> None:
    log("provenance: writing a 1,000-ancestor DAG and a 256-deep chain")
    dag_root = await insert_dag(store, pub, levels=10, width=100, prefix="d")
    chain_root = await insert_dag(store, pub, levels=256, width=1, prefix="c")
    db = store.db
    query = """query($id: ID!) { provenance(lotId: $id, maxDepth: 256) {
        nodes { id } edges { parent child } truncated } }"""

    async def api() -> None:
        response = await client.post("/graphql", json={"query": query, "variables": {"id": dag_root}})
        body = response.json()
        assert len(body["data"]["provenance"]["nodes"]) == 1001, body

    nodes, _ = await raw_bfs(db, dag_root, 256)
    assert len(nodes) == 1001 and await raw_graphlookup(db, dag_root, 256) == 1000
    for _ in range(3):  # warm-up
        await api()
        await raw_bfs(db, dag_root, 256)
    for name, fn in (
        ("api", api),
        ("store", lambda: store.provenance(dag_root, 256)),
        ("raw_bfs", lambda: raw_bfs(db, dag_root, 256)),
    ):
        s = summary(await timed(fn, reps))
        results[f"provenance.dag1000.{name}.p50_ms"], results[f"provenance.dag1000.{name}.p99_ms"] = s["p50_ms"], s["p99_ms"]
        log(f"  dag1000 {name}: p50 {s['p50_ms']:.1f} ms, p99 {s['p99_ms']:.1f} ms")
    gl_reps = max(3, reps // 5)
    results["provenance.dag1000.raw_graphlookup.p50_ms"] = summary(
        await timed(lambda: raw_graphlookup(db, dag_root, 256), gl_reps)
    )["p50_ms"]
    results["provenance.dag1000.api_over_raw"] = round(
        results["provenance.dag1000.api.p50_ms"] / results["provenance.dag1000.raw_bfs.p50_ms"], 2
    )
    results["provenance.dag1000.api_over_store"] = round(
        results["provenance.dag1000.api.p50_ms"] / results["provenance.dag1000.store.p50_ms"], 2
    )
    log(f"  dag1000 graphLookup: p50 {results['provenance.dag1000.raw_graphlookup.p50_ms']:.1f} ms")
    for name, fn in (
        ("raw_bfs", lambda: raw_bfs(db, chain_root, 256)),
        ("raw_graphlookup", lambda: raw_graphlookup(db, chain_root, 256)),
    ):
        results[f"provenance.chain256.{name}.p50_ms"] = summary(await timed(fn, gl_reps))["p50_ms"]
        log(f"  chain256 {name}: p50 {results[f'provenance.chain256.{name}.p50_ms']:.1f} ms")


async def setup(client, pub: Publisher) -> None:
    for org_id, role in (("auditor", "auditor"), ("mine", "mine"), ("trader", "trader")):
        await publish(client, pub.register(org_id, role))
    await publish(client, pub.attest("auditor", "mine", 10**12))


async def run_ingest(args, account: CpuAccount) -> dict[str, Any]:
    """--ingest-only: the issue-11 ingestion keys, and with --baseline DIR the same
    measurement of the server of checkout DIR, alternated with this one (`rounds`
    pairs, each on a fresh server and database) so that both see the same machine
    load. Ours: `ingest.transform.inflight8.{tx_per_s,p99_ms}` (median over rounds) and
    `...round{i}.*`; baseline: `ingest.transform.inflight8.baseline.*`."""
    results: dict[str, Any] = {}
    root = SigningKey.generate()
    sides = [("", ROOT)] + ([(".baseline", args.baseline)] if args.baseline else [])
    per_side: dict[str, list[dict]] = {name: [] for name, _ in sides}
    for i in range(args.rounds):
        for name, code in sides if i % 2 == 0 else sides[::-1]:
            pub = Publisher(root)
            data_dir = Path(tempfile.mkdtemp(prefix="oretrace-bench-ingest-"))
            server = Server(data_dir, root, "thread", code, args.server_env if name == "" else None, "info")
            log(f"round {i + 1}: {code} (server pid {server.process.pid})")
            key = f"ingest.transform.inflight8{name}"
            one: dict[str, Any] = {}
            try:
                async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
                    await setup(client, pub)
                    await bench_inflight(client, pub, args.inflight_transforms, 8, one, name, server)
            finally:
                server.stop(account)
                if one:
                    one[f"{key}.batching"] = server_batching(data_dir / "server.log", one[f"{key}.published_before"])
                    log(f"  batching: {json.dumps(one[f'{key}.batching'])}")
                    per_side[name].append(one)
                shutil.rmtree(data_dir, ignore_errors=True)
    for name, rounds in per_side.items():
        key = f"ingest.transform.inflight8{name}"
        cpu_parts = [f"cpu_ms_per_tx.{part}" for part in ("event_loop", "server_threads", "database")]
        for field in ("tx_per_s", "p99_ms", *cpu_parts):
            values = [r[f"{key}.{field}"] for r in rounds]
            results[f"{key}.{field}"] = round(statistics.median(values), 2)
            results[f"{key}.{field}.rounds"] = values
        results[f"{key}.batching.rounds"] = [r[f"{key}.batching"] for r in rounds]
    if args.baseline:
        results["ingest.transform.inflight8.tx_per_s_over_baseline"] = round(
            results["ingest.transform.inflight8.tx_per_s"] / results["ingest.transform.inflight8.baseline.tx_per_s"], 2
        )
    # rules.apply in this process, on envelopes prefetched from a database of this checkout's server
    pub = Publisher(root)
    data_dir = Path(tempfile.mkdtemp(prefix="oretrace-bench-ingest-"))
    server = Server(data_dir, root, "thread")
    store = await Store.connect(server.db_uri, "oretrace")
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
            await setup(client, pub)
            await verification_keys(client, store, pub, args.verify, results)
    finally:
        await store.close()
        server.stop(account)
        shutil.rmtree(data_dir, ignore_errors=True)
    return results


async def verification_keys(client, store: Store, pub: Publisher, count: int, results: dict) -> None:
    """`verify.*` and `ingest.transform.rules_apply_ms` on `count` fresh refine envelopes."""
    from ledger import rules

    envs = []
    for _ in range(count):
        env, lot_id = pub.issue(1_000_000)
        await publish(client, env)
        await publish(client, pub.transfer("mine", lot_id, "trader"))
        envs.append(pub.refine("trader", lot_id))
    views = [await store.prefetch(rules.references(e)) for e in envs]
    bench_verification(pub, (envs, views), results, count)


async def run(args) -> dict[str, Any]:
    account = CpuAccount()
    if args.ingest_only:
        results = await run_ingest(args, account)
        return finish(results, account, args)
    results: dict[str, Any] = {}
    root = SigningKey.generate()

    # verification in worker processes (ORETRACE_VERIFY_MODE=process): the same ingestion, its own server
    pub = Publisher(root)
    process_dir = Path(tempfile.mkdtemp(prefix="oretrace-bench-process-"))
    server = Server(process_dir, root, "process")
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
            await setup(client, pub)
            await bench_ingestion(client, pub, args.transforms, args.concurrency, results, "process")
    finally:
        server.stop(account)
        shutil.rmtree(process_dir, ignore_errors=True)

    # the default (threads): ingestion, then everything else
    pub = Publisher(root)
    data_dir = Path(tempfile.mkdtemp(prefix="oretrace-bench-"))
    server = Server(data_dir, root, "thread")
    log(f"server pid {server.process.pid} on {server.url}, embedded database {server.db_uri}")
    store = await Store.connect(server.db_uri, "oretrace")
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
            await setup(client, pub)
            await bench_ingestion(client, pub, args.transforms, args.concurrency, results, "thread")
            await bench_inflight(client, pub, args.inflight_transforms, 8, results, server=server)

            # verification in-process, on fresh envelopes against views prefetched from the same database
            await verification_keys(client, store, pub, args.verify, results)

            await bench_provenance(client, store, pub, args.reps, results)
    finally:
        await store.close()
        server.stop(account)
        shutil.rmtree(data_dir, ignore_errors=True)
    return finish(results, account, args)


def finish(results: dict[str, Any], account: CpuAccount, args) -> dict[str, Any]:
    """The machine.* keys and the configuration."""
    results["machine.other_cores_busy_during_run"] = account.other_cores_busy()
    log(f"other processes kept {results['machine.other_cores_busy_during_run']} cores busy on average")
    results["machine.python"] = platform.python_version()
    results["machine.cpus"] = os.cpu_count()
    results["machine.platform"] = platform.platform()
    results["machine.loadavg_1m_at_start"] = account.load0
    results["machine.loadavg_1m_at_end"] = round(os.getloadavg()[0], 2)
    results["machine.when"] = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    results["config"] = {"transforms": args.transforms, "concurrency": args.concurrency, "reps": args.reps,
                         "quick": args.quick, "server": "1 uvicorn worker, embedded SecantusDB child process",
                         "ingest_only": args.ingest_only, "baseline": str(args.baseline or ""),
                         "rounds": args.rounds, "inflight_transforms": args.inflight_transforms,
                         "server_env": args.server_env}  # fmt: skip
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--ports", help="take the server's port from this range, e.g. 8500-8599")
    parser.add_argument("--ingest-only", action="store_true",
                        help="only the issue-11 ingestion keys (8 in flight, rules_apply_ms)")
    parser.add_argument("--baseline", type=Path, metavar="DIR",
                        help="with --ingest-only: also measure the server of this checkout, alternated with this one")
    parser.add_argument("--rounds", type=int, default=2, help="with --ingest-only: measurements per side (default 2)")
    parser.add_argument("--inflight-transforms", type=int, help="transformations per 8-in-flight measurement")
    parser.add_argument("--server-env", action="append", default=[], metavar="NAME=VALUE",
                        help="with --ingest-only: a setting of this checkout's server only (not the baseline's), "
                             "e.g. ORETRACE_VERIFY_GATHER_MS=5; repeatable")
    args = parser.parse_args()
    args.server_env = dict(item.split("=", 1) for item in args.server_env)
    if args.ports:
        global PORT_RANGE
        low, high = (int(x) for x in args.ports.split("-"))
        PORT_RANGE = range(low, high + 1)
    args.transforms = 8 if args.quick else 30
    args.inflight_transforms = args.inflight_transforms or (16 if args.quick else 48)
    args.verify = 8 if args.quick else 16
    args.concurrency = 4
    args.reps = 30 if args.quick else 100
    results = asyncio.run(run(args))
    text = json.dumps(results, indent=2, sort_keys=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
