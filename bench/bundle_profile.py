"""Where a disclosure bundle's verification cost goes, per event, at two sizes.

    python bench/bundle_profile.py --json bench/results/bundle_profile.json            # n = 1000 and 10000
    python bench/bundle_profile.py --sizes 30 1000 --json PATH

For each size n (the cached bundles of bench/bundle.py, bench/.cache/), two
fresh child processes, one after the other, so that the heaps of two sizes
never share a process:

* `profile`: one verification with no worker process (ORETRACE_BUNDLE_WORKERS=0)
  under cProfile with a CPU clock (`time.process_time`). Per function: calls
  and CPU seconds (own time), both also per event. Call counts do not depend
  on the machine's load; times do (and cProfile inflates Python code).
* `workers`: one verification with the default worker processes, not profiled:
  CPU seconds of the verifying process and of each worker at the phase
  boundaries (replay done = `BatchCollector.verify` called; coefficients and
  folding done = the folded MSM started; end), the messages sent to the
  workers (count, work units, pickled bytes, by kind) and peak RSS.

Both record Python's cyclic garbage collector through `gc.callbacks`:
collections per generation, objects collected, and the CPU seconds between
each collection's start and stop. A warm-up verification of the 30-event
bundle first fills the generator caches, as bench/bundle.py's warm-up does.

Keys: `profile.nN.*`, `workers.nN.*`, `ratio.*` (n_large / n_small of the
per-event figures), `machine.*` (bench/crypto.py, with
`machine.other_cores_busy_during_run`).
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import importlib.util
import json
import os
import pstats
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]

import crypto.batch as batch  # noqa: E402
import ledger.proofs as proofs  # noqa: E402
import supervision.children as children  # noqa: E402
from ledger.bundle import verify_bundle  # noqa: E402


_spec = importlib.util.spec_from_file_location("bench_bundle", ROOT / "bench" / "bundle.py")
_bundle_bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_bundle_bench)
fixture = _bundle_bench.fixture  # bench/bundle_fixture.py
_machine = _bundle_bench._machine  # bench/crypto.py: machine_info, OtherLoad, write_json

#: Functions listed per size: the largest by own CPU time, plus any whose calls per event
#: differ between the sizes (`compare`).
TOP = 60


class GCRecorder:
    """Collections per generation and the CPU seconds they take (`gc.callbacks`)."""

    def __init__(self) -> None:
        self.collections = [0, 0, 0]
        self.collected = [0, 0, 0]
        self.cpu_s = [0.0, 0.0, 0.0]
        self._started = 0.0

    def __call__(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._started = time.process_time()
        else:
            g = info["generation"]
            self.collections[g] += 1
            self.collected[g] += info["collected"]
            self.cpu_s[g] += time.process_time() - self._started

    def __enter__(self) -> GCRecorder:
        gc.callbacks.append(self)
        return self

    def __exit__(self, *exc) -> None:
        gc.callbacks.remove(self)

    def to_json(self) -> dict:
        return {
            "collections": self.collections,
            "collected": self.collected,
            "cpu_s": [round(s, 4) for s in self.cpu_s],
            "cpu_s_total": round(sum(self.cpu_s), 4),
        }


def _proc_cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _proc_peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return int(next(line for line in f if line.startswith("VmHWM:")).split()[1]) / 1024


def _worker_pids() -> list[int]:
    return [w.process.pid for pool in batch._shared.values() for w in pool.workers]


def _warm_up() -> None:
    bundle, root = fixture.load(30)
    report = verify_bundle(bundle, root)
    assert report.ok, report.summary


def _load(n: int) -> tuple[dict, str]:
    bundle, root = fixture.load(n)
    gc.collect()
    return bundle, root


def child_profile(n: int) -> dict:
    """One in-process verification under cProfile (CPU clock) and the GC recorder."""
    os.environ["ORETRACE_BUNDLE_WORKERS"] = "0"
    _warm_up()
    bundle, root = _load(n)
    profiler = cProfile.Profile(time.process_time)
    with GCRecorder() as collector:
        cpu0 = time.process_time()
        profiler.enable()
        report = verify_bundle(bundle, root)
        profiler.disable()
        cpu = time.process_time() - cpu0
    assert report.ok, report.summary
    stats = pstats.Stats(profiler)
    functions = {}
    for (filename, line, name), (_cc, calls, own, cumulative, _callers) in stats.stats.items():
        where = f"{Path(filename).name}:{line}({name})" if line else name
        functions[where] = {"calls": calls, "own_s": round(own, 5), "cumulative_s": round(cumulative, 5)}
    return {
        "events": report.events,
        "cpu_s": round(cpu, 4),
        "gc": collector.to_json(),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "functions": functions,
    }


class MessageRecorder:
    """Messages to the workers by kind: count, work units (`crypto.batch._work_units`), pickled bytes."""

    def __init__(self) -> None:
        self.kinds: dict[str, dict[str, int]] = {}
        self._real = children.pickle

    def dumps(self, message, protocol=None) -> bytes:
        data = self._real.dumps(message, protocol=protocol)
        kind = message[0] if isinstance(message, tuple) and message and isinstance(message[0], str) else "reply"
        entry = self.kinds.setdefault(kind, {"messages": 0, "units": 0, "bytes": 0})
        entry["messages"] += 1
        entry["units"] += batch._work_units(message)
        entry["bytes"] += len(data)
        return data

    def __getattr__(self, name):  # loads, HIGHEST_PROTOCOL
        return getattr(self._real, name)


def child_workers(n: int) -> dict:
    """One verification with the default worker processes: CPU of each process at the phase boundaries."""
    os.environ.pop("ORETRACE_BUNDLE_WORKERS", None)
    _warm_up()
    bundle, root = _load(n)
    marks: list[tuple[str, float, list[float]]] = []

    def mark(name: str) -> None:
        marks.append((name, time.process_time(), [_proc_cpu_seconds(pid) for pid in _worker_pids()]))

    real_verify, real_holds = proofs.BatchCollector.verify, batch._holds

    def verify(self):
        mark("replayed")
        return real_verify(self)

    def holds(f, deferred):
        if len([m for m in marks if m[0] == "folded"]) == 0:
            mark("folded")
        return real_holds(f, deferred)

    recorder = MessageRecorder()
    proofs.BatchCollector.verify, batch._holds, children.pickle = verify, holds, recorder
    try:
        # the pool starts during the run (once 4,096 distinct proof points are seen): count from here
        pool = batch.shared_pool(batch.default_workers())
        if pool is None:
            raise SystemExit("one core: no worker process to measure")
        with GCRecorder() as collector:
            mark("start")
            wall = time.perf_counter()
            report = verify_bundle(bundle, root)
            wall = time.perf_counter() - wall
            mark("end")
    finally:
        proofs.BatchCollector.verify, batch._holds, children.pickle = real_verify, real_holds, recorder._real
    assert report.ok, report.summary
    assert not any("in this process alone" in c.detail for c in report.checks), "the workers failed"
    phases = {}
    for (name0, own0, workers0), (name1, own1, workers1) in zip(marks, marks[1:]):
        phases[f"{name0}->{name1}"] = {
            "verifier_cpu_s": round(own1 - own0, 3),
            "worker_cpu_s": [round(b - a, 3) for a, b in zip(workers0, workers1, strict=True)],
        }
    (_, own_start, workers_start), (_, own_end, workers_end) = marks[0], marks[-1]
    return {
        "events": report.events,
        "wall_s": round(wall, 3),
        "verifier_cpu_s": round(own_end - own_start, 3),
        "worker_cpu_s": round(sum(workers_end) - sum(workers_start), 3),
        "phases": phases,
        "messages": recorder.kinds,
        "gc": collector.to_json(),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "worker_peak_rss_mb": [round(_proc_peak_rss_mb(pid), 1) for pid in _worker_pids()],
    }


def _own_and_children_cpu_seconds() -> float:
    """This process's CPU seconds and its reaped descendants' (the children and their workers)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _run_child(mode: str, n: int) -> dict:
    done = subprocess.run(
        [sys.executable, __file__, "--child", mode, str(n)], capture_output=True, text=True, cwd=ROOT
    )
    if done.returncode != 0:
        raise SystemExit(f"{mode} n={n} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def compare(small: dict, large: dict, n_small: int, n_large: int) -> list[dict]:
    """Functions of both profiles: per-event calls and own CPU at each size, and their ratios
    (1.0 = exactly linear). Listed: the TOP by own time at the large size, plus every function
    whose calls per event differ by more than 1 % (or that is called at one size only)."""
    rows = []
    names = set(small["functions"]) | set(large["functions"])
    for name in names:
        a = small["functions"].get(name, {"calls": 0, "own_s": 0.0})
        b = large["functions"].get(name, {"calls": 0, "own_s": 0.0})
        calls_a, calls_b = a["calls"] / n_small, b["calls"] / n_large
        row = {
            "function": name,
            "calls_per_event": [round(calls_a, 4), round(calls_b, 4)],
            "own_ms_per_event": [round(1000 * a["own_s"] / n_small, 4), round(1000 * b["own_s"] / n_large, 4)],
            "calls_ratio": round(calls_b / calls_a, 4) if calls_a else None,
            "own_ratio": round(b["own_s"] / a["own_s"], 3) if a["own_s"] else None,
            "own_s_large": b["own_s"],
        }
        rows.append(row)
    rows.sort(key=lambda r: -r["own_s_large"])
    chosen = rows[:TOP] + [
        r for r in rows[TOP:] if r["calls_ratio"] is None or abs(r["calls_ratio"] - 1) > 0.01
    ]
    return chosen


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", metavar="PATH", help="write the results as JSON here")
    ap.add_argument("--sizes", type=int, nargs=2, default=[1000, 10_000], metavar="N")
    ap.add_argument("--modes", nargs="+", default=["profile", "workers"], choices=["profile", "workers"])
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        mode, n = args.child[0], int(args.child[1])
        print(json.dumps(child_profile(n) if mode == "profile" else child_workers(n)))
        return
    started = time.perf_counter()
    other_load = _machine.OtherLoad(_own_and_children_cpu_seconds)
    out: dict = _machine.machine_info()
    small, large = args.sizes
    results: dict = {}
    for mode in args.modes:
        for n in (small, large):
            t = time.perf_counter()
            results[(mode, n)] = _run_child(mode, n)
            print(f"{mode} n={n}: {time.perf_counter() - t:.1f} s", flush=True)
            out[f"{mode}.n{n}"] = {k: v for k, v in results[(mode, n)].items() if k != "functions"}
    if "profile" in args.modes:
        a, b = results[("profile", small)], results[("profile", large)]
        out["ratio.profile.cpu_per_event"] = round((b["cpu_s"] / large) / (a["cpu_s"] / small), 3)
        out["ratio.profile.gc_cpu_per_event"] = round(
            (b["gc"]["cpu_s_total"] / large) / (a["gc"]["cpu_s_total"] / small), 3
        )
        out["profile.functions"] = compare(a, b, small, large)
    if "workers" in args.modes:
        a, b = results[("workers", small)], results[("workers", large)]
        for key in ("verifier_cpu_s", "worker_cpu_s", "wall_s"):
            out[f"ratio.workers.{key}_per_event"] = round((b[key] / large) / (a[key] / small), 3)
    wall = time.perf_counter() - started
    out["config.wall_s"] = round(wall, 1)
    other_load.record(out, wall)
    if args.json:
        _machine.write_json(out, args.json)


if __name__ == "__main__":
    main()
