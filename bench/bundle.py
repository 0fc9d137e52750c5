"""Disclosure-bundle verification benchmark: one MSM per bundle, every core.

    python bench/bundle.py --json bench/results/bundle.json            # n = 1000
    python bench/bundle.py --large --json bench/results/bundle.json    # and n = 10000

The bundles (bench/bundle_fixture.py) are a chain of refining transformations
under one issued lot, ending with a share claim: n events, about n range
proofs (m = 2, 64-bit) and n balance proofs (3 classes). They are generated
through the real rules on first use and cached in bench/.cache/ (ignored).

Keys (`N` = 1000, and 10000 with --large), medians of alternating runs in one
process, so every ratio compares runs made on the same machine state:

  bundle.nN.verify_s          `ledger.bundle.verify_bundle`, wall seconds, with
                              the default worker processes (one per core)
  bundle.nN.single_core_s     the same bundle, no worker process (one core)
  bundle.nN.floor_s           decoding the bundle's distinct points once
                              (subgroup-checked) plus ONE native MSM as large as
                              the verifier's folded MSM, on one core
  bundle.nN.verify_over_floor verify_s / floor_s (target <= 1.0)
  bundle.nN.peak_rss_mb       peak RSS of a fresh process that loads and verifies
                              the bundle (the verifier itself)
  bundle.nN.worker_peak_rss_mb  the largest worker process's peak RSS
  bundle.nN.cpu_s             CPU seconds of the verifier and its workers per
                              verify_s run (cpu_s / verify_s = cores used)
  bundle.nN.verifier_cpu_s    the part of cpu_s spent in the verifying process itself
                              (the rest is the workers'): which side bounds the wall time
  bundle.nN.worker_fallbacks  verifications of this size (timed, warm-up, RSS probe) whose
                              workers died or missed their time limit, so that the bundle
                              was verified again in-process (should be 0)
  bundle.nN.{single_core,floor,baseline}_cpu_s  CPU seconds of those runs: on a loaded
                              machine the wall-clock ratios mostly measure the scheduler,
                              CPU seconds still compare the work done
  bundle.nN.baseline_verify_s  with --baseline DIR: the same bundle verified by the code in
                              DIR (e.g. `git archive <commit> | tar -x -C DIR`), in a child
                              process, timed inside it, alternating with the runs above
  bundle.nN.distinct_points, .msm_points, .events, .range_proofs, .balance_proofs
  machine.*                   as in bench/crypto.py, with other_cores_busy_during_run
                              (CPU used by other processes / wall: the noise indicator)
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import resource
import secrets
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# bench/ itself must not shadow the `crypto` package (bench/crypto.py).
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]

import crypto.batch as batch  # noqa: E402
import crypto.group as group  # noqa: E402
from crypto.group import ORDER  # noqa: E402
from ledger.bundle import verify_bundle  # noqa: E402


def _bench_module(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


fixture = _bench_module("bundle_fixture")
_machine = _bench_module("crypto")  # machine_info, OtherLoad, write_json


def _set_workers(count: int | None) -> None:
    if count is None:
        os.environ.pop("ORETRACE_BUNDLE_WORKERS", None)
    else:
        os.environ["ORETRACE_BUNDLE_WORKERS"] = str(count)


def _worker_pids() -> list[int]:
    return [w.process.pid for pool in batch._shared.values() for w in pool.workers]


def _proc_cpu_seconds(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def _own_cpu_seconds() -> float:
    return time.process_time() + sum(_proc_cpu_seconds(pid) for pid in _worker_pids())


#: CPU seconds of the verifying process alone in the last `timed_verify`.
_last_verifier_cpu = [0.0]
#: Verifications whose workers failed (died or hung): verified again in-process.
_fallbacks = [0]


def _fell_back(report) -> bool:
    return any(c.name == "proofs" and "in this process alone" in c.detail for c in report.checks)


def timed_verify(bundle: dict, root: str) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the verifier and its workers) of one verification."""
    gc.collect()
    cpu0, own0 = _own_cpu_seconds(), time.process_time()
    t = time.perf_counter()
    report = verify_bundle(bundle, root)
    wall = time.perf_counter() - t
    _last_verifier_cpu[0] = time.process_time() - own0
    if not report.ok:
        raise SystemExit(f"the benchmark bundle does not verify: {report.summary}")
    _fallbacks[0] += _fell_back(report)
    return wall, _own_cpu_seconds() - cpu0


def census(bundle: dict, root: str) -> dict:
    """Distinct points the verifier decodes and the size of its folded MSM (one
    in-process verification, instrumented)."""
    encodings: set[bytes] = set()
    sizes: list[int] = []
    real_decode, real_fold = group.decode_checked, batch._fold

    def recording_decode(b, data):
        encodings.add(bytes(data))
        return real_decode(b, data)

    def recording_fold(relations, weights, offset=0, remote=None):
        f = real_fold(relations, weights, offset, remote)
        sizes.append(2 * len(f.g_vec) + 2 + len(f.decoded) + len(f.deferred))
        return f

    _set_workers(0)
    group.decode_checked = batch.decode_checked = recording_decode
    batch._fold = recording_fold
    try:
        report = verify_bundle(bundle, root)
    finally:
        group.decode_checked = batch.decode_checked = real_decode
        batch._fold = real_fold
        _set_workers(None)
    if not report.ok:  # typically a fixture cached by an older protocol or bundle format
        raise SystemExit(
            f"the benchmark bundle does not verify: {report.summary}\n"
            f"if it was cached by an older version, delete it from {fixture.CACHE} to rebuild it"
        )
    return {
        "encodings": sorted(encodings),
        "msm_points": sizes[0],
        "events": report.events,
        "range_proofs": report.range_proofs,
        "balance_proofs": report.sigma_proofs,
    }


def floor_runner(encodings: list[bytes], msm_points: int):
    """Decode every distinct point once (checked) + one native MSM of msm_points points, one core."""
    b = group.get_backend("arkworks")
    from py_arkworks_bls12381 import Scalar

    scalars = [Scalar.from_be_bytes(secrets.randbelow(ORDER).to_bytes(32, "big")) for _ in range(msm_points)]

    def run() -> None:
        points = [b.decode(e) for e in encodings]
        filled = (points * (msm_points // len(points) + 1))[:msm_points]
        b._P.multiexp_unchecked(filled, scalars)

    return run


_BASELINE = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
from ledger.bundle import verify_bundle
data = json.loads(open(sys.argv[2]).read())
verify_bundle(data["bundle"], data["root"])  # warm-up: generator caches, as in the runs above
t, c = time.perf_counter(), time.process_time()
report = verify_bundle(data["bundle"], data["root"])
print(json.dumps({"wall": time.perf_counter() - t, "cpu": time.process_time() - c, "ok": report.ok}))
"""


def baseline_verify(directory: Path, n: int) -> tuple[float, float]:
    """Wall and CPU seconds the code in `directory` takes to verify the cached bundle of n events
    (child process; that code uses one process)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, "-c", _BASELINE, str(directory), str(fixture.CACHE / f"bundle-n{n}.json")],
        capture_output=True, text=True, check=True, cwd=directory, env=env,
    )  # fmt: skip
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if not result["ok"]:
        raise SystemExit(f"the baseline in {directory} does not verify the bundle")
    return result["wall"], result["cpu"]


def rss_probe(n: int) -> None:
    """Child process: load the cached bundle, verify it, print peak RSS (MB) of itself and its workers."""
    bundle, root = fixture.load(n)
    report = verify_bundle(bundle, root)
    assert report.ok, report.summary
    workers = []
    for pid in _worker_pids():
        try:
            with open(f"/proc/{pid}/status") as f:
                hwm = next(line for line in f if line.startswith("VmHWM:"))
            workers.append(int(hwm.split()[1]) / 1024)
        except (OSError, StopIteration):
            pass
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"self": own, "worker": max(workers, default=0.0), "fell_back": _fell_back(report)}))


def run_size(n: int, reps: int, out: dict, baseline: Path | None = None) -> None:
    prefix = f"bundle.n{n}"
    _fallbacks[0] = 0
    t = time.perf_counter()
    bundle, root = fixture.load(n, progress=lambda s: print(f"  building n={n}: {s} transformations", flush=True))
    print(f"n = {n}: fixture ready in {time.perf_counter() - t:.1f} s", flush=True)
    info = census(bundle, root)
    out[f"{prefix}.distinct_points"] = len(info["encodings"])
    for key in ("msm_points", "events", "range_proofs", "balance_proofs"):
        out[f"{prefix}.{key}"] = info[key]
    floor = floor_runner(info["encodings"], info["msm_points"])

    timed_verify(bundle, root)  # warm up: starts the worker processes, fills generator caches
    walls, cpus, singles, floors, baselines = [], [], [], [], []
    single_cpus, floor_cpus, baseline_cpus, verifier_cpus = [], [], [], []
    for i in range(reps):
        _set_workers(None)
        wall, cpu = timed_verify(bundle, root)
        walls.append(wall)
        cpus.append(cpu)
        verifier_cpus.append(_last_verifier_cpu[0])
        _set_workers(0)
        wall_1, cpu_1 = timed_verify(bundle, root)
        singles.append(wall_1)
        single_cpus.append(cpu_1)
        _set_workers(None)
        gc.collect()
        t, c = time.perf_counter(), time.process_time()
        floor()
        floors.append(time.perf_counter() - t)
        floor_cpus.append(time.process_time() - c)
        if baseline is not None:
            wall_b, cpu_b = baseline_verify(baseline, n)
            baselines.append(wall_b)
            baseline_cpus.append(cpu_b)
            print(f"  rep {i + 1}/{reps}: baseline {baselines[-1]:.3f} s", flush=True)
        print(f"  rep {i + 1}/{reps}: verify {wall:.3f} s (cpu {cpu:.2f} s), single core {singles[-1]:.3f} s,"
              f" floor {floors[-1]:.3f} s", flush=True)
    out[f"{prefix}.verify_s"] = round(statistics.median(walls), 4)
    out[f"{prefix}.cpu_s"] = round(statistics.median(cpus), 4)
    out[f"{prefix}.verifier_cpu_s"] = round(statistics.median(verifier_cpus), 4)
    out[f"{prefix}.single_core_s"] = round(statistics.median(singles), 4)
    out[f"{prefix}.single_core_cpu_s"] = round(statistics.median(single_cpus), 4)
    out[f"{prefix}.floor_cpu_s"] = round(statistics.median(floor_cpus), 4)
    out[f"{prefix}.floor_s"] = round(statistics.median(floors), 4)
    out[f"{prefix}.verify_over_floor"] = round(out[f"{prefix}.verify_s"] / out[f"{prefix}.floor_s"], 3)
    out[f"{prefix}.single_core_over_verify"] = round(out[f"{prefix}.single_core_s"] / out[f"{prefix}.verify_s"], 3)
    if baselines:
        out[f"{prefix}.baseline_verify_s"] = round(statistics.median(baselines), 4)
        out[f"{prefix}.baseline_over_verify"] = round(out[f"{prefix}.baseline_verify_s"] / out[f"{prefix}.verify_s"], 3)
        out[f"raw.{prefix}.baseline_verify_s"] = [round(v, 4) for v in baselines]
        out[f"{prefix}.baseline_cpu_s"] = round(statistics.median(baseline_cpus), 4)
    for key, values in (("verify_s", walls), ("single_core_s", singles), ("floor_s", floors), ("cpu_s", cpus)):
        out[f"raw.{prefix}.{key}"] = [round(v, 4) for v in values]
    probe = subprocess.run(
        [sys.executable, __file__, "--rss-probe", str(n)], capture_output=True, text=True, check=True, cwd=ROOT
    )
    rss = json.loads(probe.stdout.strip().splitlines()[-1])
    out[f"{prefix}.peak_rss_mb"] = round(rss["self"], 1)
    out[f"{prefix}.worker_peak_rss_mb"] = round(rss["worker"], 1)
    out[f"{prefix}.worker_fallbacks"] = _fallbacks[0] + rss["fell_back"]
    shown = ("verify_s", "single_core_s", "floor_s", "verify_over_floor", "cpu_s", "verifier_cpu_s", "floor_cpu_s",
             "peak_rss_mb", "worker_peak_rss_mb", "worker_fallbacks")  # fmt: skip
    for key in shown:
        print(f"  {prefix}.{key:<24} {out[f'{prefix}.{key}']}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", metavar="PATH", help="write the results as JSON here")
    ap.add_argument("--large", action="store_true", help="also n = 10000 (its first run generates it: ~20 min)")
    ap.add_argument("--reps", type=int, default=3, help="alternating repetitions per size (default 3)")
    ap.add_argument("--events", type=int, default=1000, help=argparse.SUPPRESS)  # smaller runs while developing
    ap.add_argument("--rss-probe", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--baseline", type=Path, help="also time the verifier of the code in this directory")
    args = ap.parse_args()
    if args.rss_probe:
        rss_probe(args.rss_probe)
        return
    started = time.perf_counter()
    other_load = _machine.OtherLoad(_own_cpu_seconds)
    out: dict = _machine.machine_info()
    out["config.reps"] = args.reps
    out["config.default_workers"] = batch.default_workers()
    for n in [args.events] + ([10_000] if args.large else []):
        run_size(n, args.reps if n <= 1000 else max(1, args.reps // 2), out, args.baseline)
    wall = time.perf_counter() - started
    out["config.wall_s"] = round(wall, 1)
    other_load.record(out, wall)
    try:
        out["machine.loadavg_1m_at_end"] = os.getloadavg()[0]
    except OSError:
        pass
    if args.json:
        _machine.write_json(out, args.json)


if __name__ == "__main__":
    main()
