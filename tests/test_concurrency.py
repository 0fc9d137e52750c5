"""Process-wide lazily built state under concurrent use (issue 13).

The Bulletproof generator cache once grew from two verifier threads at once
without a lock: an index was appended twice and every later generator shifted
for the life of the process, so every multi-output proof failed afterwards.
These tests start from a cold (truncated) cache, make threads and worker
processes grow it past that size at the same moment, and check every point
against an independent hash_to_curve and every proof made meanwhile.
"""

from __future__ import annotations

import contextlib
import hashlib
import multiprocessing
import struct
import threading
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import pytest

from crypto import generators
from crypto.bulletproofs import prove_range, verify_range
from crypto.generators import DST, bulletproof_generators
from crypto.group import Point, backend, get_backend
from crypto.pedersen import Opening
from crypto.transcript import Transcript


THREADS = 8


@contextlib.contextmanager
def cold_generators(keep: int) -> Iterator[None]:
    """The active backend's cache as a server that precomputed only `keep` vector
    points has it; the full cache is put back afterwards."""
    saved = dict(generators._cache)
    with generators._lock:
        for key in list(generators._cache):
            if key[0] == backend().name and key[1].startswith("bulletproofs/"):
                generators._cache[key] = generators._cache[key][:keep]
    try:
        yield
    finally:
        with generators._lock:
            generators._cache.update(saved)


def reference_vectors(count: int) -> tuple[list[bytes], list[bytes]]:
    """G_i and H_i straight from RFC 9380 hash_to_curve, without the cache."""
    return tuple(  # type: ignore[return-value]
        [Point.hash_to_curve(tag + struct.pack(">I", i), DST).to_bytes() for i in range(count)]
        for tag in (b"bulletproofs/G/", b"bulletproofs/H/")
    )


def race(calls: list) -> list:
    """Run every callable at the same instant (a barrier), one thread each."""
    barrier = threading.Barrier(len(calls))

    def run(call):
        barrier.wait()
        return call()

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


def prove_and_verify(values: list[int], n: int) -> bool:
    openings = [Opening.fresh(v) for v in values]
    proof, commitments = prove_range(Transcript(b"test/concurrency", b"ctx"), openings, n)
    verify_range(Transcript(b"test/concurrency", b"ctx"), commitments, proof, n)
    return True


def grow_and_prove(keep: int, sizes: list[int], proofs: list[tuple[list[int], int]]) -> str:
    """In this process: a cache precomputed to `keep`, then threads growing it to
    `sizes` and proving `proofs` (values, n) all at once. Returns a digest of
    the largest vectors, for comparison with the parent's reference."""
    with cold_generators(keep):
        results = race(
            [lambda s=s: bulletproof_generators(s) for s in sizes]
            + [lambda v=v, n=n: prove_and_verify(v, n) for v, n in proofs]
        )
        Gs, Hs = bulletproof_generators(max(sizes))
    for gs_hs, size in zip(results, sizes):
        assert [p.to_bytes() for p in gs_hs[0]] == [p.to_bytes() for p in Gs[:size]]
        assert [p.to_bytes() for p in gs_hs[1]] == [p.to_bytes() for p in Hs[:size]]
    assert all(r is True for r in results[len(sizes):])
    return vectors_digest(max(sizes))


def vectors_digest(count: int) -> str:
    Gs, Hs = bulletproof_generators(count)
    return hashlib.sha256(b"".join(p.to_bytes() for p in Gs + Hs)).hexdigest()


def _worker(keep: int, sizes: list[int], proofs: list[tuple[list[int], int]]) -> str:
    return grow_and_prove(keep, sizes, proofs)


# --------------------------------------------------------------------------- threads


@pytest.mark.parametrize(
    "keep, sizes",
    [
        (0, [64, 64, 128, 128, 256, 512, 512, 1]),  # a cold client
        (64, [128] * THREADS),  # all to the same size at once
        (128, [129, 130, 256, 200, 512, 300, 400, 511]),  # uneven sizes past the warm size
    ],
)
def test_threads_growing_the_cache_get_the_true_generators(keep, sizes):
    with cold_generators(keep):
        results = race([lambda s=s: bulletproof_generators(s) for s in sizes])
    ref_g, ref_h = reference_vectors(max(sizes))
    for (gs, hs), size in zip(results, sizes):
        assert [p.to_bytes() for p in gs] == ref_g[:size]
        assert [p.to_bytes() for p in hs] == ref_h[:size]
    # and the cache left behind is the true one
    gs, hs = bulletproof_generators(max(sizes))
    assert [p.to_bytes() for p in gs] == ref_g and [p.to_bytes() for p in hs] == ref_h


@pytest.mark.parametrize(
    "keep, proofs",
    [
        (0, [([1, 2], 64), ([3, 2**64 - 1], 64)]),  # the reported race: two 2-output proofs, cold
        (64, [([5] * 2, 64), ([7] * 4, 64), ([9] * 8, 64), ([0, 1], 32)]),  # m = 2, 4, 8 past 64
    ],
)
def test_proofs_made_while_threads_grow_the_cache_verify(keep, proofs):
    with cold_generators(keep):
        assert race([lambda v=v, n=n: prove_and_verify(v, n) for v, n in proofs]) == [True] * len(proofs)
    # a later multi-output proof (the server's next publication) still verifies
    assert prove_and_verify([11, 12, 13], 64)


def test_threads_on_the_reference_backend(py_ecc):
    """py_ecc: slow hash_to_curve, so the race window is wide."""
    with cold_generators(0):
        results = race([lambda s=s: bulletproof_generators(s) for s in (8, 16, 16, 12)]
                       + [lambda: prove_and_verify([1, 2], 8), lambda: prove_and_verify([250, 3], 8)])
    ref_g, ref_h = reference_vectors(16)
    for (gs, hs), size in zip(results[:4], (8, 16, 16, 12)):
        assert [p.to_bytes() for p in gs] == ref_g[:size] and [p.to_bytes() for p in hs] == ref_h[:size]
    assert results[4:] == [True, True]


def test_one_backend_instance_per_process_under_a_race():
    """Points of two instances of one backend cannot be mixed: get_backend builds it once."""
    from crypto import group

    saved = dict(group._instances)
    try:
        group._instances.pop("py_ecc", None)
        instances = race([lambda: get_backend("py_ecc")] * THREADS)
        assert all(i is instances[0] for i in instances)
    finally:
        group._instances.clear()
        group._instances.update(saved)


# --------------------------------------------------------------------------- processes


def test_process_pool_growing_past_the_precomputed_size():
    """Spawned workers (as the "process" verifier mode uses), each with threads
    growing its cache from 64 past 512 while proving; all agree with the parent."""
    keep, sizes = 64, [128, 256, 512, 512]
    proofs = [([1, 2], 64), ([2**64 - 1] * 4, 64), ([4] * 8, 64)]
    expected = hashlib.sha256(b"".join(sum(reference_vectors(512), []))).hexdigest()
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(2, mp_context=ctx) as pool:
        digests = list(pool.map(_worker, [keep] * 3, [sizes] * 3, [proofs] * 3))
    assert digests == [expected] * 3


def test_forked_child_can_grow_while_a_parent_thread_holds_the_lock():
    """A fork taken while another thread holds the cache lock gives the child a
    fresh lock (os.register_at_fork), not one that nobody will ever release."""
    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("no fork on this platform")
    ctx = multiprocessing.get_context("fork")
    with generators._lock, ProcessPoolExecutor(1, mp_context=ctx) as pool:
        future = pool.submit(_worker, 32, [64, 96], [([1, 2], 32)])
        # the parent holds the lock until the child answers; a deadlock would
        # leave the future pending forever, so wait boundedly (not a timing assertion)
        digest = future.result(timeout=300)
    assert digest == hashlib.sha256(b"".join(sum(reference_vectors(96), []))).hexdigest()

