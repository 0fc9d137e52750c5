"""Transparency-log benchmark (docs/log.md, docs/performance.md), one run, JSON out.

    python bench/log.py --json bench/results/log.json [--quick]

Against a fresh embedded database (SecantusDB child process on 127.0.0.1), in
this process. Keys (every ratio is measured in this one run, interleaved):

  ingest.with_log.tx_per_s / ingest.without_log.tx_per_s / ingest.ratio
        `Store.apply_effects` of operator registrations (rules applied beforehand:
        the write path only, where the log's cost lies), 8 in flight. "without"
        replaces the in-transaction allocation of the leaf index (and of the `seq`,
        which rides on the same write) by a process counter and the per-process
        commit sequencer by nothing. Rounds alternate between the two.
  ingest_verified.{with_log,without_log}.tx_per_s / ingest_verified.ratio
        the whole ingestion (`Ingestion.publish`: rules with range and capacity proof
        verification in worker threads, then the transaction) of issuances, 4 attestations
        published concurrently; rounds alternate (with, without, without, with, ...).
  proof.{1000,10000,100000}.{p50_ms,p99_ms}
        `TransparencyLog.inclusion_proofs([i], size)` for random i: tiles read with
        one `$in` query + hashing; tiles written by the integrator's own code path
        (`_append`) from synthetic leaf hashes.
  monitor.entries_per_s
        `Monitor._replay` of a real chain's entries (signatures, rules, batched
        range proofs), in memory.
  bundle.verify_with_log_ms / bundle.verify_without_log_ms / bundle.ratio
        `verify_bundle` of one anchored bundle with and without its `log` member.
  machine.loadavg_1m_{start,end}, machine.cpus
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from nacl.signing import SigningKey  # noqa: E402

from api import store as store_module  # noqa: E402
from api import translog  # noqa: E402
from api.embedded import EmbeddedDatabase  # noqa: E402
from api.store import Store  # noqa: E402
from conftest import NETWORK, LedgerWorld, build_chain  # noqa: E402  (the tests' real-proof builder)
from ledger import anchoring, merkle, rules  # noqa: E402
from ledger import checkpoint as cp  # noqa: E402
from ledger.bundle import assemble, verify_bundle  # noqa: E402
from ledger.encoding import canonical_json  # noqa: E402
from ledger.envelope import parse_envelope  # noqa: E402
from ledger.models import RegisterLogKey  # noqa: E402
from ledger.proofs import VerifyNow  # noqa: E402
from ledger.rules import Policy  # noqa: E402
from ledger.view import MemoryView  # noqa: E402


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def log(message: str) -> None:
    print(f"[bench/log] {message}", file=sys.stderr, flush=True)


_FAKE_INDICES = itertools.count(10**9)  # "without the log": unique indices from this process, no database write


async def fake_assign(db, session, count: int = 1) -> translog.Position:
    """`translog.assign_position` without the write: the first of `count` fresh indices."""
    first = next(_FAKE_INDICES)
    for _ in range(count - 1):
        next(_FAKE_INDICES)
    return translog.Position(log_index=first, seq=first)


class _NoLock:
    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        return False


async def bench_ingest(store: Store, world: LedgerWorld, per_round: int, rounds: int, results: dict) -> None:
    policy = Policy(network=NETWORK, root_public_key=world.root_key.verify_key.encode().hex())
    real_assign, real_lock = translog.assign_position, store.log_sequencer

    async def one_round(with_log: bool, tag: str) -> float:
        effects = [
            rules.apply(world.register(f"{tag}-{i}", "trader"), MemoryView(), policy, VerifyNow())
            for i in range(per_round)
        ]
        store_module.translog.assign_position = real_assign if with_log else fake_assign
        store.log_sequencer = real_lock if with_log else _NoLock()
        sem = asyncio.Semaphore(8)

        async def apply(e):
            async with sem:
                await store.apply_effects(e)

        started = time.perf_counter()
        await asyncio.gather(*(apply(e) for e in effects))
        return per_round / (time.perf_counter() - started)

    # one publication first (a warm-up; the `head` document exists since ensure_indexes)
    await store.apply_effects(rules.apply(world.register("warm-up", "trader"), MemoryView(), policy, VerifyNow()))
    rates: dict[bool, list[float]] = {True: [], False: []}
    try:
        for r in range(rounds):
            for with_log in (True, False) if r % 2 == 0 else (False, True):
                rates[with_log].append(await one_round(with_log, f"ing{r}{int(with_log)}"))
    finally:
        store_module.translog.assign_position, store.log_sequencer = real_assign, real_lock
    with_log, without = statistics.median(rates[True]), statistics.median(rates[False])
    results["ingest.with_log.tx_per_s"] = round(with_log, 1)
    results["ingest.without_log.tx_per_s"] = round(without, 1)
    results["ingest.ratio"] = round(with_log / without, 3)
    results["ingest.rounds"] = rounds
    results["ingest.per_round"] = per_round


async def bench_verified_ingest(store: Store, world: LedgerWorld, streams: int, per_stream: int, rounds: int,
                                results: dict) -> None:
    """Full ingestion (`Ingestion.publish`: parse, prefetch, rules with proof verification in
    worker threads, transaction) of issuances, `streams` attestations published concurrently,
    each one's issuances in sequence; rounds alternate with and without the log."""
    from api.service import Ingestion
    from api.settings import Settings

    settings = Settings(database=store.database, network=NETWORK,
                        root_public_key=world.root_key.verify_key.encode().hex())  # fmt: skip
    ingestion = Ingestion(store, settings)
    await ingestion.start()
    for org, role in (("bench-auditor", "auditor"), ("bench-mine", "mine")):
        await ingestion.publish(world.register(org, role).to_json())
    queues = []
    for s in range(streams):
        envelope, att = world.attest("bench-auditor", "bench-mine", f"bench-site-{s}", capacity=10**12)
        await ingestion.publish(envelope.to_json())
        queues.append([world.issue(att, 1000 + i)[0] for i in range(per_stream * rounds * 2)])
    real_assign, real_lock = translog.assign_position, store.log_sequencer

    async def one_round(with_log: bool) -> float:
        store_module.translog.assign_position = real_assign if with_log else fake_assign
        store.log_sequencer = real_lock if with_log else _NoLock()
        batches = [[q.pop(0) for _ in range(per_stream)] for q in queues]

        async def stream(batch):
            for envelope in batch:
                await ingestion.publish(envelope.to_json())

        started = time.perf_counter()
        await asyncio.gather(*(stream(b) for b in batches))
        return streams * per_stream / (time.perf_counter() - started)

    rates: dict[bool, list[float]] = {True: [], False: []}
    try:
        for r in range(rounds * 2):
            with_log = (r % 4) in (0, 3)  # with, without, without, with, ...
            rates[with_log].append(await one_round(with_log))
    finally:
        store_module.translog.assign_position, store.log_sequencer = real_assign, real_lock
        ingestion.close()
    with_log, without = statistics.median(rates[True]), statistics.median(rates[False])
    results["ingest_verified.with_log.tx_per_s"] = round(with_log, 2)
    results["ingest_verified.without_log.tx_per_s"] = round(without, 2)
    results["ingest_verified.ratio"] = round(with_log / without, 3)
    results["ingest_verified.streams"] = streams
    results["ingest_verified.per_round"] = streams * per_stream


async def bench_proofs(client, db_name: str, sizes: list[int], samples: int, results: dict) -> None:
    db = client[db_name]
    await translog.ensure_log_collections(db)
    log_ = translog.TransparencyLog(db, "oretrace.log/bench", SigningKey.generate())
    log_._edge = merkle.TileEdge()
    done = 0
    for size in sizes:
        while done < size:
            step = min(4096, size - done)
            await log_._append([merkle.leaf_hash(str(i).encode()) for i in range(done, done + step)])
            done += step
        rng = random.Random(size)
        latencies = []
        for _ in range(samples):
            index = rng.randrange(size)
            started = time.perf_counter()
            [proof] = await log_.inclusion_proofs([index], size)
            latencies.append((time.perf_counter() - started) * 1000)
            merkle.verify_inclusion(merkle.leaf_hash(str(index).encode()), index, size, proof, log_._edge.root())
        results[f"proof.{size}.p50_ms"] = round(pct(latencies, 0.5), 3)
        results[f"proof.{size}.p99_ms"] = round(pct(latencies, 0.99), 3)
        log(f"inclusion proof at {size} leaves: p50 {results[f'proof.{size}.p50_ms']} ms")


async def bench_replay_and_bundle(world: LedgerWorld, reps: int, results: dict) -> None:
    from sdk.monitor import Monitor

    events = []

    async def publish(envelope):
        events.append(envelope)

    log_key = SigningKey.generate()
    origin = f"oretrace.log/{NETWORK}"
    events.append(world.sign(RegisterLogKey(origin=origin, public_key=bytes(log_key.verify_key).hex()), "operator"))
    chain = await build_chain(world, publish, suffix="-bench")
    entries = [canonical_json(e.to_json()) for e in events]

    with tempfile.TemporaryDirectory() as tmp:
        rates = []
        for _ in range(reps):
            monitor = Monitor("http://127.0.0.1:9/graphql", world.root_key.verify_key.encode().hex(), Path(tmp) / str(_))
            started = time.perf_counter()
            monitor._replay(entries, 0)
            rates.append(len(entries) / (time.perf_counter() - started))
            assert not monitor.state.violations, monitor.state.violations
    results["monitor.entries_per_s"] = round(statistics.median(rates), 1)
    results["monitor.entries"] = len(entries)

    tree = merkle.MemoryTree.from_entries(entries)
    bundle = assemble(events, chain.claim_id, NETWORK)
    by_id = {e.event_id: i for i, e in enumerate(events)}
    indices = [by_id[parse_envelope(e).event_id] for e in bundle["events"]]
    note = cp.sign_checkpoint(cp.Checkpoint(origin, tree.size, tree.root()), origin, log_key).encode()
    bundle["log"] = anchoring.log_member(note, indices, [tree.inclusion_proof(i) for i in indices])
    plain = {k: v for k, v in bundle.items() if k != "log"}
    root = world.root_key.verify_key.encode().hex()
    with_log, without = [], []
    for r in range(reps):
        for anchored in (True, False) if r % 2 == 0 else (False, True):
            started = time.perf_counter()
            report = verify_bundle(bundle if anchored else plain, root, require_log=anchored)
            (with_log if anchored else without).append((time.perf_counter() - started) * 1000)
            assert report.ok, report.summary
    results["bundle.events"] = len(bundle["events"])
    results["bundle.verify_with_log_ms"] = round(statistics.median(with_log), 2)
    results["bundle.verify_without_log_ms"] = round(statistics.median(without), 2)
    results["bundle.ratio"] = round(statistics.median(with_log) / statistics.median(without), 3)


async def run(args) -> dict[str, Any]:
    results: dict[str, Any] = {
        "machine.cpus": os.cpu_count(),
        "machine.loadavg_1m_start": round(os.getloadavg()[0], 2),
    }
    with tempfile.TemporaryDirectory() as tmp:
        db = EmbeddedDatabase(Path(tmp), host="127.0.0.1")
        db.start()
        try:
            store = await Store.connect(db.uri, "bench_log")
            await store.ensure_indexes()
            world = LedgerWorld(SigningKey.generate())
            log("ingestion with and without the log")
            await bench_ingest(store, world, 40 if args.quick else 100, 4 if args.quick else 6, results)
            log(f"ingestion ratio {results['ingest.ratio']}")
            log("verified ingestion (issuances with proofs) with and without the log")
            await bench_verified_ingest(store, world, 4, 3 if args.quick else 5, 2 if args.quick else 3, results)
            log(f"verified ingestion ratio {results['ingest_verified.ratio']}")
            sizes = [1000, 10_000] if args.quick else [1000, 10_000, 100_000]
            await bench_proofs(store.client, "bench_log_tiles", sizes, 50 if args.quick else 200, results)
            log("monitor replay and bundle verification")
            await bench_replay_and_bundle(world, 3 if args.quick else 5, results)
            await store.close()
        finally:
            db.stop()
    results["machine.loadavg_1m_end"] = round(os.getloadavg()[0], 2)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--quick", action="store_true", help="fewer samples, no 10^5 tree")
    args = parser.parse_args()
    results = asyncio.run(run(args))
    text = json.dumps(results, indent=2, sort_keys=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
