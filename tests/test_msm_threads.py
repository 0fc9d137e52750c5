"""One native MSM in several parts at once (`crypto.group.set_msm_threads`).

The server's single verification lane splits each batch MSM over the cores
(api.service.Verifier). A split must give exactly the sum of the whole, for
every size around the split threshold, for scalars the verifier passes
unreduced (negative, multiples of r, above 2^256) and with the identity among
the points; the parts must really run on other threads; bad counts are
refused; py_ecc (pure Python) is never split.
"""

from __future__ import annotations

import random
import threading

import pytest

from conftest import curve_backend
from crypto import group
from crypto.group import ORDER, Point, msm, msm_threads, set_msm_threads

PART = group._MsmThreads.MIN_POINTS_PER_PART


def random_points(n: int, seed: int) -> list[Point]:
    rng = random.Random(seed)
    base = [Point.generator() * rng.randrange(1, ORDER) for _ in range(min(n, 64))]
    # a few hundred distinct points cheaply: sums of the random ones
    return [base[i % len(base)] + base[(i * 7 + 3) % len(base)] * (i + 1) for i in range(n)]


def hostile_scalars(n: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    specials = [0, 1, ORDER - 1, ORDER, ORDER + 1, -1, -ORDER, 2 * ORDER**3 + 5, 2**256 - 1]
    return [specials[i] if i < len(specials) else rng.randrange(-ORDER, 2 * ORDER**3) for i in range(n)]


@pytest.mark.parametrize("n", [1, PART, 2 * PART - 1, 2 * PART, 2 * PART + 1, 3 * PART + 7, 1026])
@pytest.mark.parametrize("threads", [2, 3, 4])
def test_a_split_msm_equals_the_whole(n, threads):
    points, scalars = random_points(n, n), hostile_scalars(n, n + 1)
    set_msm_threads(1)
    whole = msm(points, scalars)
    set_msm_threads(threads)
    assert msm(points, scalars) == whole


def test_the_identity_and_repeated_points_in_a_split_msm():
    points = random_points(2 * PART + 10, 5)
    points[0] = points[PART] = Point.identity()
    points[PART + 1] = points[1]  # the same point in both parts
    scalars = hostile_scalars(len(points), 6)
    set_msm_threads(1)
    whole = msm(points, scalars)
    set_msm_threads(2)
    assert msm(points, scalars) == whole
    # a sum that is the identity stays the identity when split: P*k + P*(r-k) across the parts
    k = 123456789
    cancel = [points[1], *points[2 : 2 * PART], points[1]]
    ks = [k, *([0] * (len(cancel) - 2)), ORDER - k]
    assert msm(cancel, ks).is_identity()


def test_the_parts_run_on_helper_threads(monkeypatch):
    """Count the threads that run multiexp parts: the caller's and the helpers'."""
    b = group.backend()
    if b.name != "arkworks":
        pytest.skip("only the native backend splits")
    real = b._P
    callers: list[tuple[int, int]] = []

    class Recording:
        @staticmethod
        def multiexp_unchecked(points, scalars):
            callers.append((threading.get_ident(), len(points)))
            return real.multiexp_unchecked(points, scalars)

    points, scalars = random_points(3 * PART, 9), hostile_scalars(3 * PART, 10)
    monkeypatch.setattr(b, "_P", Recording)
    set_msm_threads(3)
    msm(points, scalars)
    assert sorted(size for _, size in callers) == [PART] * 3
    me = threading.get_ident()
    assert [t == me for t, _ in callers].count(True) == 1  # one part in the caller's thread, two on helpers
    callers.clear()
    msm(points[: 2 * PART - 1], scalars[: 2 * PART - 1])  # too small to split
    assert callers == [(threading.get_ident(), 2 * PART - 1)]
    callers.clear()
    set_msm_threads(1)
    msm(points, scalars)
    assert callers == [(threading.get_ident(), 3 * PART)]


@pytest.mark.parametrize("bad", [0, -1, True, 2.0, "2", None])
def test_a_bad_thread_count_is_refused_and_changes_nothing(bad):
    set_msm_threads(2)
    with pytest.raises(ValueError, match="positive integer"):
        set_msm_threads(bad)
    assert msm_threads() == 2


def test_py_ecc_is_never_split():
    """Pure Python holds the GIL: parts in threads would only add overhead. The
    setting changes nothing there (a small MSM keeps the test quick)."""
    with curve_backend("py_ecc"):
        points = [Point.generator() * k for k in (3, 5, 7)]
        set_msm_threads(4)
        assert msm(points, [2, ORDER - 1, 10]) == Point.generator() * (6 - 5 + 70)


def test_concurrent_split_msms_from_several_threads():
    """Two verification lanes (or a bundle check beside the server) may split at the
    same time on the one helper pool: each gets its own sum."""
    set_msm_threads(2)
    jobs = [(random_points(2 * PART + i, 20 + i), hostile_scalars(2 * PART + i, 40 + i)) for i in range(4)]
    set_msm_threads(1)
    expected = [msm(p, k) for p, k in jobs]
    set_msm_threads(2)
    results: list = [None] * len(jobs)

    def run(i):
        results[i] = msm(*jobs[i])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == expected
