"""A verification worker process that hangs is killed after its time limit, and the
bundle gets the verdict it deserves.

The workers are stopped with SIGSTOP (a process that neither dies nor reads nor
answers: what a deadlock, a swapped-out or a debugger-held process looks like
from the verifier) at two moments: right after the pool is taken, before any
point is decoded ("decode"), and when the folded MSM is asked for ("msm").
With ORETRACE_BUNDLE_WORKER_TIMEOUT=2 the verifier must then kill them,
verify the bundle again in its own process and return the right verdict - a
valid bundle verifies (and the report says the workers failed), a bad proof or
an off-subgroup point is named - never block forever, never abort. At the
crypto.batch level: a stopped worker fails both a send (its pipe full) and a
wait for an answer with WorkerFailed, and is dead afterwards.
"""

from __future__ import annotations

import os
import signal

import pytest

from test_ledger_bundle import chain, clean_bundle, failed, flip_byte, index_of, resigned, root_hex  # noqa: F401

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _stop(workers, stopped: list[int]) -> None:
    for worker in workers:
        os.kill(worker.process.pid, signal.SIGSTOP)
        stopped.append(worker.process.pid)


@pytest.fixture(params=["decode", "msm"])
def workers_hang(request, monkeypatch):
    """Bundles use 2 workers even when small; both are stopped (SIGSTOP) at the
    moment `request.param` names, once. Yields the stopped pids."""
    from crypto import batch

    monkeypatch.setattr("ledger.proofs.WORKERS_MIN_POINTS", 0)
    monkeypatch.setenv("ORETRACE_BUNDLE_WORKERS", "2")
    monkeypatch.setenv("ORETRACE_BUNDLE_WORKER_TIMEOUT", "2")
    stopped: list[int] = []
    if request.param == "decode":
        real_attach = batch.DeferredPoints._attach

        def attach(self, pool):
            real_attach(self, pool)
            if not stopped:
                _stop(pool.workers, stopped)

        monkeypatch.setattr(batch.DeferredPoints, "_attach", attach)
    else:
        real_start = batch.DeferredPoints.start_msm

        def start_msm(self, coefficients):
            if self._pool is not None and not stopped:
                _stop(self._pool.workers, stopped)
            return real_start(self, coefficients)

        monkeypatch.setattr(batch.DeferredPoints, "start_msm", start_msm)
    yield stopped
    for pid in stopped:  # never leave a stopped process behind, whatever the test did
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    with open(f"/proc/{pid}/stat") as f:  # a zombie not yet reaped by its parent is gone too
        return f.read().rsplit(")", 1)[1].split()[0] == "Z"


def test_a_valid_bundle_verifies_when_its_workers_hang(chain, clean_bundle, root_hex, workers_hang):
    from ledger.bundle import verify_bundle

    report = verify_bundle(clean_bundle, root_hex)
    assert workers_hang, "the workers were not used: the test checks nothing"
    assert report.ok, report.summary
    proofs = [c for c in report.checks if c.name == "proofs"]
    assert len(proofs) == 1 and "in this process alone" in proofs[0].detail and "within 2 s" in proofs[0].detail
    assert all(_gone(pid) for pid in workers_hang), "a hung worker was left running"


@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_a_bad_balance_proof_is_named_when_the_workers_hang(chain, clean_bundle, root_hex, workers_hang, where):
    transforms = [i for i, e in enumerate(clean_bundle["events"]) if e["payload"]["type"] == "transform"]
    i = {"first": transforms[0], "middle": transforms[len(transforms) // 2], "last": transforms[-1]}[where]
    last = len(clean_bundle["events"][i]["payload"]["balance_proof"]) // 2 - 1  # a scalar's last byte
    bad = resigned(chain, clean_bundle, i, lambda p: p.update(balance_proof=flip_byte(p["balance_proof"], last)))
    failed(bad, root_hex, "proofs", f"event {i} (transform", "balance proof")
    assert workers_hang


def test_an_off_subgroup_point_is_named_when_the_workers_hang(chain, clean_bundle, root_hex, workers_hang):
    from test_batch_verify import _replace_point
    from test_bulletproofs import _off_subgroup_encoding

    i = index_of(clean_bundle, "transform")
    bad = resigned(chain, clean_bundle, i, lambda p: p.update(
        range_proof=_replace_point(p["range_proof"], 48, _off_subgroup_encoding())))  # fmt: skip
    detail = failed(bad, root_hex, "proofs", f"event {i} (transform", "range proof").failed().detail
    assert "subgroup" in detail, detail
    assert workers_hang


def test_the_next_verification_gets_fresh_workers_after_a_hang(chain, clean_bundle, root_hex, workers_hang):
    from crypto import batch
    from ledger.bundle import verify_bundle

    assert verify_bundle(clean_bundle, root_hex).ok  # the workers are stopped once, in this one
    pool = batch.shared_pool(2)
    assert all(w.process.pid not in workers_hang and w.process.poll() is None for w in pool.workers)
    report = verify_bundle(clean_bundle, root_hex)
    assert report.ok and "in this process alone" not in next(c for c in report.checks if c.name == "proofs").detail


# --------------------------------------------------------------------------- crypto.batch


@pytest.fixture
def stopped_worker(monkeypatch):
    from crypto.batch import WorkerPool

    monkeypatch.setenv("ORETRACE_BUNDLE_WORKER_TIMEOUT", "1")
    pool = WorkerPool(1, "arkworks")
    worker = pool.workers[0]
    os.kill(worker.process.pid, signal.SIGSTOP)
    yield worker
    worker.kill()
    pool.close()


def test_a_stopped_worker_fails_a_wait_for_its_answer(stopped_worker):
    from crypto.batch import WorkerFailed

    stopped_worker.send(("collect",))  # a small message: the pipe takes it
    with pytest.raises(WorkerFailed, match="gave no answer within 1 s: killed"):
        stopped_worker.recv()
    assert stopped_worker.process.poll() is not None


def test_a_stopped_worker_fails_a_send_once_its_pipe_is_full(stopped_worker):
    from crypto.batch import WorkerFailed
    from crypto.generators import G

    chunk = [G().to_bytes()] * 256  # 12 KiB: a pipe (64 KiB by default) is full after a few
    with pytest.raises(WorkerFailed, match="did not read its messages within 1 s: killed"):
        for _ in range(10_000):
            stopped_worker.send(("load", chunk))
    assert stopped_worker.process.poll() is not None


def test_the_time_limit_grows_with_the_work_sent_and_resets_on_an_answer(monkeypatch):
    from crypto import batch
    from crypto.generators import G

    monkeypatch.delenv("ORETRACE_BUNDLE_WORKER_TIMEOUT", raising=False)
    pool = batch.WorkerPool(1, "arkworks")
    try:
        worker = pool.workers[0]
        assert worker.time_limit() == batch.WORKER_WAIT_BASE_S
        worker.send(("load", [G().to_bytes()] * 500))
        worker.send(("msm", list(range(500)), [1] * 500))
        assert worker.time_limit() == pytest.approx(batch.WORKER_WAIT_BASE_S + 1000 * batch.WORKER_WAIT_PER_UNIT_S)
        status, _ = worker.recv()
        assert status == "ok" and worker.time_limit() == batch.WORKER_WAIT_BASE_S
        monkeypatch.setenv("ORETRACE_BUNDLE_WORKER_TIMEOUT", "7.5")
        assert worker.time_limit() == 7.5
    finally:
        pool.close()


@pytest.mark.parametrize("setting", ["soon", "0", "-3", "nan"])
def test_a_bad_time_limit_setting_is_a_clear_error(monkeypatch, setting):
    from crypto import batch

    monkeypatch.setenv("ORETRACE_BUNDLE_WORKER_TIMEOUT", setting)
    with pytest.raises(ValueError, match="ORETRACE_BUNDLE_WORKER_TIMEOUT"):
        batch._time_limit_setting()
