"""Verifying a bundle does the same work for every event, whatever the bundle's size.

Chain bundles of 12, 16 and 20 events (bench/bundle_fixture.py: 3, 7 and 11
transformations, equally spaced) are verified with a call-counting profiler:
every Python function must be called an affine number of times in the number
of events, count(20) - count(16) == count(16) - count(12). A Python function
called once per event per earlier event (a scan or sort of earlier events that
compares, hashes or keys them with Python code, a view rebuilt through its
methods), or once per event per proof, breaks the equality; so does a size-
dependent worker exchange. Counts, not times: they do not depend on the
machine's load (docs/performance.md, "Linearity: 1,000 to 10,000 events").
What counts cannot see: work growing inside ONE call of a builtin (a list or
dict of the earlier events copied or sorted by C code, `in` over a list of
strings, once per event) is one call however long it runs; a variant with
`sorted(list(range(len(envelopes))) * 50)` per event passes. Only the CPU per
event of bench/bundle_profile.py (n = 1,000 against 10,000) shows that.
"""

from __future__ import annotations

import cProfile
import gc
import pstats
from collections import Counter
from pathlib import Path

import pytest

from test_bundle_workers import _fixture_module

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

#: Equally spaced sizes (events): the second differences of the call counts must vanish.
SIZES = (12, 16, 20)


@pytest.fixture(scope="module")
def chains() -> dict[int, tuple[dict, str]]:
    """size -> (bundle, root key hex), proved on 2 processes."""
    fixture = _fixture_module()
    out = {}
    for n in SIZES:
        bundle, root = fixture.build(n, processes=2)
        out[n] = (bundle, root)
    return out


def _verified(bundle: dict, root: str):
    from ledger.bundle import verify_bundle

    report = verify_bundle(bundle, root)
    assert report.ok, report.summary
    assert "in this process alone" not in next(c for c in report.checks if c.name == "proofs").detail
    return report


def _calls(bundle: dict, root: str) -> Counter[str]:
    """Calls of each Python function (and builtin) during one verification. The cyclic
    collector is paused meanwhile: when it runs depends on the whole process's heap, and
    the `gc.callbacks` other code installs (hypothesis does) would be counted with it."""
    collecting = gc.isenabled()
    gc.collect()
    gc.disable()
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        _verified(bundle, root)
    finally:
        profiler.disable()
        if collecting:
            gc.enable()
    return Counter(
        {f"{Path(file).name}:{line}({name})": calls for (file, line, name), (_, calls, *_) in pstats.Stats(profiler).stats.items()}
    )


def _uneven(counts: list[Counter[str]]) -> dict[str, tuple[int, ...]]:
    """The keys whose counts over SIZES are not affine in the size (non-zero second difference)."""
    names = set().union(*counts)
    return {
        name: tuple(c[name] for c in counts)
        for name in sorted(names)
        if counts[2][name] - counts[1][name] != counts[1][name] - counts[0][name]
    }


def test_the_sizes_are_equally_spaced():
    assert SIZES[2] - SIZES[1] == SIZES[1] - SIZES[0] > 0


def test_every_function_is_called_an_affine_number_of_times_in_the_events(chains, monkeypatch):
    """In one process (no worker: their pipe waits depend on timing), all the verifier's Python work."""
    monkeypatch.setenv("ORETRACE_BUNDLE_WORKERS", "0")
    _verified(*chains[SIZES[0]])  # warm-up: generator, header and schema caches filled once per process
    counts = [_calls(*chains[n]) for n in SIZES]
    events = [sum(v for k, v in c.items() if k.endswith("(parse_envelope)")) for c in counts]
    assert events == list(SIZES)  # the profile saw every event
    assert _uneven(counts) == {}


def test_the_messages_to_the_workers_are_affine_in_the_events(chains, monkeypatch):
    """With 2 worker processes from the first point on: the work sent to them (points to
    decode, coefficient jobs, points to multiply) grows by the same amount per event, and
    the number of multiplication requests does not grow at all (one per worker)."""
    from crypto import batch

    monkeypatch.setattr("ledger.proofs.WORKERS_MIN_POINTS", 0)
    monkeypatch.setenv("ORETRACE_BUNDLE_WORKERS", "2")
    sent: Counter[str] = Counter()
    real_send = batch._Worker.send

    def send(self, msg):
        sent[f"{msg[0]} units"] += batch._work_units(msg)
        if msg[0] not in ("load", "vectors"):  # cut every _CHUNK points / _JOBS_PER_MESSAGE jobs: units only
            sent[f"{msg[0]} messages"] += 1
        return real_send(self, msg)

    monkeypatch.setattr(batch._Worker, "send", send)
    _verified(*chains[SIZES[0]])  # warm-up: the pool started
    counts = []
    for n in SIZES:
        sent.clear()
        _verified(*chains[n])
        counts.append(Counter(sent))
    assert _uneven(counts) == {}
    assert counts[0]["msm messages"] == counts[2]["msm messages"] == 2
    assert counts[2]["load units"] > counts[1]["load units"] > counts[0]["load units"]
    assert counts[2]["vectors units"] > counts[0]["vectors units"]
