"""Cryptography benchmark: Bulletproofs range proofs, batching, backends.

    python bench/crypto.py --quick --json bench/results/crypto.json   # < 3 min
    python bench/crypto.py --json bench/results/crypto.json           # more repetitions

Writes flat dotted keys (medians in milliseconds unless the key says
otherwise), every ratio measured within this one run:

  range.m{1,16}.{prove_ms,verify_ms,bytes}   64-bit proofs over m values
  range.m1.decode_ms                         RangeProof.from_bytes (subgroup checks)
  batch.n64.{one_by_one_ms,batched_ms,speedup}  64 proofs (m = 1, n = 64)
  backend.py_ecc_over_arkworks.verify_m1     py_ecc verify / arkworks verify
  transform.{without_cap,with_cap}.verify_ms  a refine of 2 inputs into 1 output (both
                                             origin classes present): balance + range
                                             proofs, and the same plus the loss-cap proof,
                                             all proofs of the publication in ONE MSM, as
                                             the server does (ledger.proofs.BatchCollector)
  transform.loss_cap.verify_ratio            with_cap / without_cap (target <= 1.3)
  transform.{without_cap,with_cap}.one_by_one_ms  the same, one MSM per proof
                                             (ledger.proofs.VerifyNow; the server before)
  transform.loss_cap.one_by_one_ratio        with_cap / without_cap, one MSM per proof
  floor.m{1,16}.verify_over_msm              verify / one native arkworks MSM with
                                             the same number of points as the
                                             verifier's MSM (random full scalars);
                                             the two timed in turns (timed_in_turns),
                                             as is floor.batch_n64.batched_over_msm
  floor.*_cpu, transform.loss_cap.verify_ratio_cpu  the same ratios in process CPU
                                             time (same calls): on a loaded machine
                                             wall-clock ratios mostly measure the
                                             scheduler, CPU time still the work
  msm.native.{size}_ms                       those native MSMs
  group.arkworks.*                           a few primitive operations
  raw.<metric>                               every sample, ms
  machine.*                                  python, cpu, backend versions, load,
                                             other_cores_busy_during_run (noise indicator)

Run it on an otherwise idle machine: a second CPU-bound job slows everything
down 1.5-2x on 2 cores.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import importlib.metadata
import json
import os
import platform
import secrets
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# bench/ itself must not shadow the `crypto` package (this file), also when
# PYTHONPATH already holds the repository.
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]

from crypto.bulletproofs import (  # noqa: E402
    RangeProof,
    RangeStatement,
    batch_verify_range,
    prove_range,
    verify_range,
)
from crypto.generators import bulletproof_generators  # noqa: E402
from crypto.group import ORDER, Point, use_backend  # noqa: E402
from crypto.pedersen import Opening, commit_opening  # noqa: E402
from crypto.transcript import Transcript  # noqa: E402

STATEMENT = b"bench/range"


def transcript(i: int = 0) -> Transcript:
    return Transcript(STATEMENT, b"bench-context-%d" % i)


#: CPU-time samples (ms) of the last `samples` call, in the same order.
last_cpu: list[float] = []


def samples(fn, reps: int, warmup: int = 1) -> list[float]:
    """Wall-clock samples of fn() in ms (GC disabled while timing); the process CPU
    time of the same calls goes to `last_cpu` (the native MSM is single-threaded, so
    CPU time is its cost even when other processes compete for the cores)."""
    ((wall, cpu),) = timed_in_turns([fn], reps, warmup)
    last_cpu[:] = cpu
    return wall


def timed_in_turns(fns, reps: int, warmup: int = 1) -> list[tuple[list[float], list[float]]]:
    """(wall-clock ms, process CPU ms) samples of each of `fns`, called in turns (a, b, a,
    b, ...: `reps` calls of each after `warmup`), in call order; GC disabled while timing.
    The two sides of a ratio are timed this way: two separate series see the host at
    different moments, and on these shared machines its speed drifts between them (a
    batch ratio moved from 1.41 to 1.67 between two runs of the same tree, other cores
    busy <= 0.01)."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    out: list[tuple[list[float], list[float]]] = [([], []) for _ in fns]
    gc.collect()
    gc.disable()
    try:
        for _ in range(reps):
            for fn, (wall, cpu) in zip(fns, out, strict=True):
                c = time.process_time()
                t = time.perf_counter()
                fn()
                wall.append((time.perf_counter() - t) * 1e3)
                cpu.append((time.process_time() - c) * 1e3)
    finally:
        gc.enable()
    return out


def verifier_msm_points(n: int, m: int) -> int:
    """Points in verify_range's single MSM: 2nm + 2 log2(nm) + m + 5 (A is added outside)."""
    nm = n * m
    return 2 * nm + 2 * (nm.bit_length() - 1) + m + 5


def native_msm(size: int):
    """A closure running one arkworks multiexp of `size` generator points with
    random full-size scalars, exactly as the backend calls it."""
    from py_arkworks_bls12381 import G1Point, Scalar

    Gs, Hs = bulletproof_generators((size + 1) // 2)
    points = [p._v for p in [*Gs, *Hs][:size]]
    scalars = [Scalar.from_be_bytes(secrets.randbelow(ORDER).to_bytes(32, "big")) for _ in range(size)]
    assert len(points) == len(scalars) == size
    return lambda: G1Point.multiexp_unchecked(points, scalars)


def _cpu_busy_seconds() -> float | None:
    """Busy CPU seconds of the whole machine so far (all cores), from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


class OtherLoad:
    """How many cores other processes keep busy, on average, while a benchmark runs: 0 on an
    idle machine; near 1 means a competing job (expect slower numbers). The machine's busy CPU
    seconds (/proc/stat) since construction, less the benchmark's own (`own_cpu_seconds`: this
    process's CPU time by default; pass a function that adds worker processes if it has any)."""

    def __init__(self, own_cpu_seconds: Callable[[], float] = time.process_time):
        self._own_cpu_seconds = own_cpu_seconds
        self._busy0, self._own0 = _cpu_busy_seconds(), own_cpu_seconds()

    def record(self, out: dict, wall: float) -> None:
        """Put the average over `wall` seconds into out["machine.other_cores_busy_during_run"]
        and print it; nothing when /proc/stat cannot be read."""
        busy1, own1 = _cpu_busy_seconds(), self._own_cpu_seconds()
        if self._busy0 is not None and busy1 is not None:
            out["machine.other_cores_busy_during_run"] = round(max(0.0, (busy1 - self._busy0) - (own1 - self._own0)) / wall, 2)
            print(f"other processes kept {out['machine.other_cores_busy_during_run']} cores busy on average")


def write_json(out: dict, path: str) -> None:
    """Write the results `out` to `path` as indented JSON with sorted keys (its folder created)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
    print(f"wrote {target}")


def machine_info() -> dict:
    info = {
        "machine.python": sys.version.split()[0],
        "machine.implementation": platform.python_implementation(),
        "machine.platform": platform.platform(),
        "machine.cpu_count": os.cpu_count(),
        "machine.py_arkworks_bls12381": importlib.metadata.version("py-arkworks-bls12381"),
        "machine.py_ecc": importlib.metadata.version("py-ecc"),
        "machine.date_utc": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["machine.cpu_model"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        info["machine.loadavg_1m_at_start"] = os.getloadavg()[0]
    except OSError:
        pass
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True)
        info["machine.git_commit"] = head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        pass
    return info


def transform_verifiers():
    """Callables verifying one honest refine (2 lots, industrial + artisanal, into 1 output)
    the way `ledger.rules` does: balance + range proofs, and the same plus the loss-cap proof;
    (with_cap, without_cap) in one MSM per publication, then the same one MSM per proof."""
    from nacl.public import PrivateKey

    from ledger import builders
    from ledger import statements as st
    from ledger.proofs import BatchCollector, VerifyNow, decode_range_proof, decode_zero_proof

    grams = {"industrial": 800_000_000, "artisanal": 200_000_000}
    inputs = {f"lot_{k}": {k: Opening.fresh(v)} for k, v in grams.items()}
    outputs = [builders.PlannedOutput("sulfate", {k: Opening.fresh(v * 96 // 100) for k, v in grams.items()})]
    sealing = bytes(PrivateKey.generate().public_key).hex()
    nonce = "ab" * 16
    payload = builders.build_transform("bench", "refiner", nonce, process="refine", inputs=inputs, outputs=outputs,
                                       owner_sealing_key=sealing)  # fmt: skip
    out_ids = st.output_lot_ids("bench", "refiner", nonce, 1)
    facts = ("bench", "refiner", nonce, "refine", list(inputs), out_ids)
    in_points = [{k: commit_opening(x) for k, x in o.items()} for o in inputs.values()]
    out_points = [{k: Point.from_hex(c) for k, c in o.commitments.items()} for o in payload.outputs]
    loss_points = {k: Point.from_hex(c) for k, c in payload.loss.items()}
    identity = Point.identity()

    def without_cap(sink=None) -> None:
        sink = sink or VerifyNow()
        sink.check_zero("balance", st.transform_balance_transcript(*facts),
                        st.class_balances(in_points, out_points, loss_points, identity),
                        decode_zero_proof("balance_proof", payload.balance_proof))  # fmt: skip
        values = st.transform_range_values(out_points, loss_points, identity)
        sink.check_range("range", RangeStatement(st.transform_range_transcript(*facts), tuple(values),
                                                 decode_range_proof("range_proof", payload.range_proof), 64))  # fmt: skip

    def with_cap(sink=None) -> None:
        sink = sink or VerifyNow()
        without_cap(sink)
        caps = st.loss_cap_values(in_points, loss_points, "refine", identity, lambda x, n: x * n)
        sink.check_range("loss cap", RangeStatement(st.loss_cap_transcript(*facts), tuple(caps),
                                                           decode_range_proof("loss_cap_proof", payload.loss_cap_proof), 64))  # fmt: skip

    def one_msm(verifier):  # the server's path: api.service.verify_publication
        def run() -> None:
            sink = BatchCollector()
            verifier(sink)
            sink.verify()

        return run

    return one_msm(with_cap), one_msm(without_cap), with_cap, without_cap


def run(quick: bool) -> dict:
    scale = 1 if quick else 3
    out: dict = machine_info()
    out["config.quick"] = quick
    raw: dict[str, list[float]] = {}

    def record(key: str, values: list[float]) -> float:
        raw[key] = [round(v, 4) for v in values]
        med = statistics.median(values)
        out[key] = round(med, 4)
        print(f"  {key:<44} {med:10.3f}   (n={len(values)})", flush=True)
        return med

    use_backend("arkworks")
    print("warming up generators ...", flush=True)
    bulletproof_generators(64 * 16)

    # --- primitives ------------------------------------------------------
    print("group primitives (arkworks)", flush=True)
    k = secrets.randbelow(ORDER)
    P = Point.hash_to_curve(b"bench", b"BENCH-DST")
    enc = P.to_bytes()
    record("group.arkworks.mul_ms", samples(lambda: P * k, 200 * scale))
    record("group.arkworks.decode_ms", samples(lambda: Point.from_bytes(enc), 200 * scale))

    # --- single proofs ---------------------------------------------------
    results = {}
    for m, prove_reps, verify_reps in ((1, 15, 60), (16, 4, 15)):
        print(f"range proofs, n = 64, m = {m}", flush=True)
        openings = [Opening.fresh(secrets.randbelow(2**64)) for _ in range(m)]
        proof, commitments = prove_range(transcript(), openings)
        data = proof.to_bytes()
        out[f"range.m{m}.bytes"] = len(data)
        assert len(data) == RangeProof.size(64, m)
        record(f"range.m{m}.prove_ms", samples(lambda: prove_range(transcript(), openings), prove_reps * scale))
        verify_range(transcript(), commitments, proof)  # must pass before timing
        size = verifier_msm_points(64, m)
        out[f"floor.m{m}.msm_points"] = size
        (v_wall, v_cpu), (msm_wall, msm_cpu) = timed_in_turns(
            [lambda: verify_range(transcript(), commitments, proof), native_msm(size)], verify_reps * scale
        )
        v = record(f"range.m{m}.verify_ms", v_wall)
        msm_med = record(f"msm.native.{size}_ms", msm_wall)
        out[f"floor.m{m}.verify_over_msm"] = round(v / msm_med, 4)
        out[f"floor.m{m}.verify_over_msm_cpu"] = round(statistics.median(v_cpu) / statistics.median(msm_cpu), 4)
        if m == 1:
            record("range.m1.decode_ms", samples(lambda: RangeProof.from_bytes(data), 100 * scale))
        results[m] = (proof, commitments, v)

    # --- batch -----------------------------------------------------------
    print("batch of 64 proofs (n = 64, m = 1)", flush=True)
    statements = []
    for i in range(64):
        p, cs = prove_range(transcript(i), [Opening.fresh(secrets.randbelow(2**64))])
        statements.append(RangeStatement(transcript(i), tuple(cs), p, 64))

    def one_by_one():
        for s in statements:
            verify_range(s.transcript.clone(), s.commitments, s.proof, s.n)

    batch_verify_range(statements)
    a = record("batch.n64.one_by_one_ms", samples(one_by_one, 3 * scale))
    batch_points = 2 * 64 + 2 + 64 * (4 + 12 + 1)
    out["batch.n64.msm_points"] = batch_points
    (b_wall, b_cpu), (bm_wall, bm_cpu) = timed_in_turns(
        [lambda: batch_verify_range(statements), native_msm(batch_points)], 7 * scale
    )
    b = record("batch.n64.batched_ms", b_wall)
    out["batch.n64.speedup"] = round(a / b, 3)
    bm = record(f"msm.native.{batch_points}_ms", bm_wall)
    out["floor.batch_n64.batched_over_msm"] = round(b / bm, 4)
    out["floor.batch_n64.batched_over_msm_cpu"] = round(statistics.median(b_cpu) / statistics.median(bm_cpu), 4)

    # --- transformation with and without the loss cap ---------------------
    print("transformation verify, with and without the loss-cap proof", flush=True)
    with_cap, without_cap, with_cap_each, without_cap_each = transform_verifiers()
    with_cap()
    with_cap_each()
    timings: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {}
    for _ in range(10 * scale):  # interleaved, so that load changes hit all alike
        for key, fn in (("without_cap.verify_ms", without_cap), ("with_cap.verify_ms", with_cap),
                        ("without_cap.one_by_one_ms", without_cap_each), ("with_cap.one_by_one_ms", with_cap_each)):  # fmt: skip
            timings.setdefault(key, []).extend(samples(fn, 1, warmup=0))
            cpu.setdefault(key, []).extend(last_cpu)
    med = {key: record(f"transform.{key}", values) for key, values in timings.items()}
    out["transform.loss_cap.verify_ratio"] = round(med["with_cap.verify_ms"] / med["without_cap.verify_ms"], 3)
    out["transform.loss_cap.verify_ratio_cpu"] = round(
        statistics.median(cpu["with_cap.verify_ms"]) / statistics.median(cpu["without_cap.verify_ms"]), 3
    )
    out["transform.loss_cap.one_by_one_ratio"] = round(
        med["with_cap.one_by_one_ms"] / med["without_cap.one_by_one_ms"], 3
    )

    # --- py_ecc reference ------------------------------------------------
    print("py_ecc reference backend, m = 1", flush=True)
    proof, commitments, ark_verify = results[1]
    data = proof.to_bytes()
    encoded = [c.to_bytes() for c in commitments]
    use_backend("py_ecc")
    try:
        py_proof = RangeProof.from_bytes(data)
        py_commitments = [Point.from_bytes(c) for c in encoded]
        assert py_proof.to_bytes() == data
        py_verify = record(
            "backend.py_ecc.verify_m1_ms",
            samples(lambda: verify_range(transcript(), py_commitments, py_proof), 3 * scale),
        )
    finally:
        use_backend("arkworks")
    out["backend.py_ecc_over_arkworks.verify_m1"] = round(py_verify / ark_verify, 2)

    try:
        out["machine.loadavg_1m_at_end"] = os.getloadavg()[0]
    except OSError:
        pass
    for key, values in raw.items():
        out[f"raw.{key}"] = values
    # ratios last so that they are easy to spot
    print("ratios", flush=True)
    for key in (
        "floor.m1.verify_over_msm",
        "floor.m16.verify_over_msm",
        "floor.batch_n64.batched_over_msm",
        "batch.n64.speedup",
        "backend.py_ecc_over_arkworks.verify_m1",
        "transform.loss_cap.verify_ratio",
        "transform.loss_cap.one_by_one_ratio",
        "floor.m1.verify_over_msm_cpu",
        "floor.m16.verify_over_msm_cpu",
        "floor.batch_n64.batched_over_msm_cpu",
        "transform.loss_cap.verify_ratio_cpu",
    ):
        print(f"  {key:<44} {out[key]:10.3f}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions (under 3 minutes on 2 cores)")
    ap.add_argument("--json", metavar="PATH", help="write the results as JSON here")
    args = ap.parse_args()
    started = time.perf_counter()
    other_load = OtherLoad()
    out = run(args.quick)
    wall = time.perf_counter() - started
    out["config.wall_s"] = round(wall, 1)
    other_load.record(out, wall)
    print(f"done in {out['config.wall_s']} s")
    if args.json:
        write_json(out, args.json)


if __name__ == "__main__":
    main()
