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


def test_a_failing_bundle_still_says_it_was_verified_again_in_this_process(
    chain, clean_bundle, root_hex, workers_die_at_the_msm
):
    """The note about the workers survives a failed verdict, on the "proofs" check
    whether that check failed (a bad proof) or passed before a later check failed
    (no log although one is required, a claim naming other lots)."""
    from ledger.bundle import verify_bundle

    i = index_of(clean_bundle, "transform")
    last = len(clean_bundle["events"][i]["payload"]["balance_proof"]) // 2 - 1
    bad_proof = resigned(chain, clean_bundle, i, lambda p: p.update(balance_proof=flip_byte(p["balance_proof"], last)))
    other_lots = {**clean_bundle, "lot_ids": ["lot-" + "0" * 32]}
    cases = [(bad_proof, {}, "proofs", False), (clean_bundle, {"require_log": True}, "log", True)]
    cases.append((other_lots, {}, "claim", True))
    for bundle, options, failing, proofs_ok in cases:
        workers_die_at_the_msm.clear()
        report = verify_bundle(bundle, root_hex, **options)
        assert workers_die_at_the_msm, "the workers were not used: the test checks nothing"
        assert not report.ok and report.failed().name == failing, report.summary
        proofs = [c for c in report.checks if c.name == "proofs"]
        assert len(proofs) == 1 and proofs[0].ok is proofs_ok, report.checks
        assert "in this process alone" in proofs[0].detail, proofs[0].detail
        assert sum("in this process alone" in c.detail for c in report.checks) == 1


@pytest.mark.parametrize("where", ["before the proofs", "after the proofs"])
def test_an_internal_error_in_the_second_verification_keeps_the_note(
    chain, clean_bundle, root_hex, workers_die_at_the_msm, monkeypatch, where
):
    """The fail-closed path ("internal") after the workers died: the note is on the
    "proofs" check if the second verification got that far, else on the "internal" one;
    the JSON and text reports carry it (every check's detail)."""
    import io
    import json
    from pathlib import Path

    from rich.console import Console

    import ledger.bundle as lb
    from sdk.report import json_report, print_report
    from sdk.trust_store import Anchor

    real, calls = lb._check_revocations, []

    def second_run_fails(*args):  # the first run is the one whose workers die, later
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("unforeseen")
        return real(*args)

    def always_fails(*args):
        raise RuntimeError("unforeseen")

    if where == "before the proofs":
        monkeypatch.setattr(lb, "_check_revocations", second_run_fails)
    else:
        monkeypatch.setattr(lb, "claim_meaning", always_fails)
    report = lb.verify_bundle(clean_bundle, root_hex)
    assert workers_die_at_the_msm, "the workers were not used: the test checks nothing"
    assert not report.ok and report.failed().name == "internal", report.summary
    noted = [c.name for c in report.checks if "in this process alone" in c.detail]
    assert noted == (["internal"] if where == "before the proofs" else ["proofs"]), report.checks
    assert "in this process alone" in json.dumps(json_report(report, Path("b.json"), Anchor(root_hex, "test"), 1.0))
    text = io.StringIO()
    print_report(Console(file=text, width=400), report, Path("b.json"), Anchor(root_hex, "test"), 1.0)
    assert "in this process alone" in text.getvalue()


def test_the_next_verification_gets_fresh_workers(chain, clean_bundle, root_hex, workers_die_at_the_msm):
    from crypto import batch
    from ledger.bundle import verify_bundle

    assert verify_bundle(clean_bundle, root_hex).ok  # the workers are killed once, in this one
    pool = batch.shared_pool(2)
    assert all(w.process.pid not in workers_die_at_the_msm and w.process.poll() is None for w in pool.workers)
    assert verify_bundle(clean_bundle, root_hex).ok


def range_point_offsets(hex_proof: str) -> list[tuple[str, int]]:
    """(field, byte offset) of every point of a serialized range proof (docs/bulletproofs.md, "Encoding")."""
    rounds = (len(hex_proof) // 2 - 4 * 48 - 5 * 32) // 96
    head = [(name, 48 * i) for i, name in enumerate(("A", "S", "T1", "T2"))]
    base = 4 * 48 + 3 * 32
    return head + [(f"{side}[{r}]", base + 96 * r + 48 * j) for r in range(rounds) for j, side in enumerate("LR")]


def zero_point_offsets(hex_proof: str) -> list[tuple[str, int]]:
    count = int(hex_proof[:8], 16)
    return [(f"R[{i}]", 4 + 48 * i) for i in range(count)]


def test_an_off_subgroup_point_in_any_proof_field_is_named_by_the_workers(chain, clean_bundle, root_hex, monkeypatch):
    """Every point field of a transformation's three proofs, replaced by a point on the curve
    but outside the prime-order subgroup, decoded in a worker: the bundle fails naming that
    event and that proof, never another (the same bad point in two proofs names the first)."""
    from test_batch_verify import _replace_point
    from test_bulletproofs import _off_subgroup_encoding

    monkeypatch.setattr("ledger.proofs.WORKERS_MIN_POINTS", 0)
    monkeypatch.setenv("ORETRACE_BUNDLE_WORKERS", "2")
    bad = _off_subgroup_encoding()
    i = index_of(clean_bundle, "transform")
    payload = clean_bundle["events"][i]["payload"]
    fields = [("range_proof", "range proof", range_point_offsets), ("loss_cap_proof", "loss-cap proof", range_point_offsets),
              ("balance_proof", "balance proof", zero_point_offsets)]  # fmt: skip
    for field, name, offsets in fields:
        for where, offset in offsets(payload[field]):

            def edit(p, field=field, offset=offset):
                p[field] = _replace_point(p[field], offset, bad)

            report = failed(resigned(chain, clean_bundle, i, edit), root_hex, "proofs", f"event {i} (transform")
            detail = report.failed().detail
            assert f"): {name}: " in detail and "subgroup" in detail, (where, detail)
    # the same bad point in the balance proof (collected first) and the range proof: the first is named
    both = resigned(chain, clean_bundle, i, lambda p: p.update(
        balance_proof=_replace_point(p["balance_proof"], 4, bad), range_proof=_replace_point(p["range_proof"], 0, bad)))  # fmt: skip
    first = failed(both, root_hex, "proofs", f"event {i} (transform").failed().detail
    assert "): balance proof: " in first, first
