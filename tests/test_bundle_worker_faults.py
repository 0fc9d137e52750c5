"""A verification worker process that dies mid-bundle is not the bundle's fault.

`ledger.bundle.verify_bundle` decodes and multiplies proof points in worker
processes (`ledger.proofs.batch_scope`, `crypto.batch.DeferredPoints`). Here
the workers are SIGKILLed after the replay, just as the folded MSM starts (the
most work lost): the verdict must be the one the bundle deserves - a valid
bundle verifies, a bundle with a bad proof fails naming that proof - never
"verification aborted" on a valid bundle (the CLI's exit 1, "the bundle does
not verify"), never an acceptance of a bad one.
"""

from __future__ import annotations

import os
import signal

import pytest

from test_ledger_bundle import chain, clean_bundle, failed, flip_byte, index_of, resigned, root_hex  # noqa: F401

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture
def workers_die_at_the_msm(monkeypatch):
    """Bundles use 2 workers even when small, and every worker of the pool is
    killed when a verification first asks them to multiply. Yields the kill count."""
    from crypto import batch

    monkeypatch.setattr("ledger.proofs.WORKERS_MIN_POINTS", 0)
    monkeypatch.setenv("ORETRACE_BUNDLE_WORKERS", "2")
    killed: list[int] = []
    real = batch.DeferredPoints.start_msm

    def start_msm(self, coefficients):
        if self._pool is not None and not killed:
            for worker in self._pool.workers:
                os.kill(worker.process.pid, signal.SIGKILL)
                worker.process.wait()
                killed.append(worker.process.pid)
        return real(self, coefficients)

    monkeypatch.setattr(batch.DeferredPoints, "start_msm", start_msm)
    return killed


def test_a_valid_bundle_verifies_when_its_workers_die(chain, clean_bundle, root_hex, workers_die_at_the_msm):
    from ledger.bundle import verify_bundle

    report = verify_bundle(clean_bundle, root_hex)
    assert workers_die_at_the_msm, "the workers were not used: the test checks nothing"
    assert report.ok, report.summary
    assert [c.name for c in report.checks].count("proofs") == 1  # one report, not two glued together


def test_a_bad_proof_is_still_named_when_the_workers_die(chain, clean_bundle, root_hex, workers_die_at_the_msm):
    i = index_of(clean_bundle, "transform")
    last = len(clean_bundle["events"][i]["payload"]["balance_proof"]) // 2 - 1  # a scalar's last byte
    bad = resigned(chain, clean_bundle, i, lambda p: p.update(balance_proof=flip_byte(p["balance_proof"], last)))
    failed(bad, root_hex, "proofs", f"event {i} (transform", "balance proof")
    assert workers_die_at_the_msm


def test_the_next_verification_gets_fresh_workers(chain, clean_bundle, root_hex, workers_die_at_the_msm):
    from crypto import batch
    from ledger.bundle import verify_bundle

    assert verify_bundle(clean_bundle, root_hex).ok  # the workers are killed once, in this one
    pool = batch.shared_pool(2)
    assert all(w.process.pid not in workers_die_at_the_msm and w.process.poll() is None for w in pool.workers)
    assert verify_bundle(clean_bundle, root_hex).ok
