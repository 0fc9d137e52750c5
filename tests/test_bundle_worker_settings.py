"""The bundle workers' settings and the pool's lifecycle, as a verifier's user meets them.

* A malformed ORETRACE_BUNDLE_WORKERS / ORETRACE_BUNDLE_WORKER_TIMEOUT is refused by
  `oretrace verify` with exit 2 and a message naming it - whatever the bundle's size
  (the workers start only for large bundles, so before, a small bundle verified and a
  large one "failed verification" with exit 1), and an infinite or astronomically large
  time limit is refused instead of ending in an OverflowError from `select`.
* Any exception while the parent sends to or waits on a worker (not only WorkerFailed:
  a KeyboardInterrupt, an OverflowError) discards the pool, so that no reply left in a
  pipe is taken by the next verification for the answer to its own request.
* A worker neither dies of Ctrl-C (SIGINT reaches the whole process group) nor prints a
  traceback when the parent stops reading its replies.
"""

from __future__ import annotations

import json
import os
import signal

import pytest
from typer.testing import CliRunner

from test_ledger_bundle import chain, clean_bundle, root_hex  # noqa: F401

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

BAD_SETTINGS = [
    ("ORETRACE_BUNDLE_WORKER_TIMEOUT", "soon"),
    ("ORETRACE_BUNDLE_WORKER_TIMEOUT", "0"),
    ("ORETRACE_BUNDLE_WORKER_TIMEOUT", "-3"),
    ("ORETRACE_BUNDLE_WORKER_TIMEOUT", "nan"),
    ("ORETRACE_BUNDLE_WORKER_TIMEOUT", "inf"),
    ("ORETRACE_BUNDLE_WORKER_TIMEOUT", "1e300"),
    ("ORETRACE_BUNDLE_WORKERS", "two"),
    ("ORETRACE_BUNDLE_WORKERS", "-1"),
    ("ORETRACE_BUNDLE_WORKERS", "1.5"),
    ("ORETRACE_BUNDLE_WORKERS", "100000"),  # more processes than any machine needs
    ("ORETRACE_BUNDLE_WORKERS", str(max(64, len(os.sched_getaffinity(0))) + 1)),  # one over the bound
    ("ORETRACE_BUNDLE_WORKERS", "9" * 5000),  # no int() of thousands of digits, no echo of them
    ("ORETRACE_BUNDLE_WORKERS", "0" * 5000 + "65"),  # leading zeros hide no value over the bound
    ("ORETRACE_BUNDLE_WORKERS", "+2"),
    ("ORETRACE_BUNDLE_WORKERS", "0x2"),
    ("ORETRACE_BUNDLE_WORKERS", "\u0663"),  # ARABIC-INDIC DIGIT THREE: isdigit(), not a setting
    ("ORETRACE_BUNDLE_WORKER_TIMEOUT", "9" * 5000),  # float() takes it (inf): refused, not echoed
    ("ORETRACE_BUNDLE_WORKER_TIMEOUT", "x" * 5000),
    ("ORETRACE_BUNDLE_WORKER_TIMEOUT", "1_0"),  # float() reads 10: not a plain number of seconds
    ("ORETRACE_BUNDLE_WORKER_TIMEOUT", "1e3"),
    ("ORETRACE_BUNDLE_WORKER_TIMEOUT", "\u0663"),  # ARABIC-INDIC DIGIT THREE: float() reads 3
    ("ORETRACE_BUNDLE_WORKER_TIMEOUT", "+5"),
    # white space around a value: ASCII only (str.strip() would also take these away)
    ("ORETRACE_BUNDLE_WORKER_TIMEOUT", "5\u00a0"),  # NO-BREAK SPACE
    ("ORETRACE_BUNDLE_WORKER_TIMEOUT", "\u30005"),  # IDEOGRAPHIC SPACE
    ("ORETRACE_BUNDLE_WORKER_TIMEOUT", "5\x1f"),  # UNIT SEPARATOR
    ("ORETRACE_BUNDLE_WORKERS", "2\u00a0"),
    ("ORETRACE_BUNDLE_WORKERS", "\x1c2"),  # FILE SEPARATOR
]


@pytest.fixture
def bundle_file(clean_bundle, tmp_path):
    path = tmp_path / "bundle.json"
    path.write_text(json.dumps(clean_bundle))
    return path


@pytest.mark.parametrize(("text", "seconds"), [("2", 2.0), ("7.5", 7.5), (".5", 0.5), ("10.", 10.0), (" 3 ", 3.0), ("\t4\n", 4.0), ("0086400", 86400.0)])
def test_a_plain_decimal_time_limit_is_read(monkeypatch, text, seconds):
    from crypto import batch

    monkeypatch.setenv("ORETRACE_BUNDLE_WORKER_TIMEOUT", text)
    assert batch._time_limit_setting() == seconds


@pytest.mark.parametrize(("name", "value"), BAD_SETTINGS)
def test_verify_refuses_a_malformed_worker_setting_with_exit_2(bundle_file, root_hex, monkeypatch, name, value):
    from sdk.cli import app

    monkeypatch.setenv(name, value)
    args = ["verify", str(bundle_file), "--root-key", root_hex, "--allow-unanchored"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 2, r.output
    assert name in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(app, [*args, "--json"])
    assert r.exit_code == 2
    assert name in json.loads(r.stdout)["error"]


@pytest.mark.parametrize("value", ["0", "2", " 1 ", "0000000002", "0000000064"])
def test_verify_accepts_well_formed_worker_counts(bundle_file, root_hex, monkeypatch, value):
    from sdk.cli import app

    monkeypatch.setenv("ORETRACE_BUNDLE_WORKERS", value)
    monkeypatch.setenv("ORETRACE_BUNDLE_WORKER_TIMEOUT", "86400")
    r = CliRunner().invoke(app, ["verify", str(bundle_file), "--root-key", root_hex, "--allow-unanchored"])
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize(("name", "value"), BAD_SETTINGS)
def test_check_settings_names_the_malformed_setting(monkeypatch, name, value):
    from crypto.batch import WorkerSettingError, check_settings

    monkeypatch.setenv(name, value)
    with pytest.raises(WorkerSettingError, match=name) as refused:
        check_settings()
    assert len(str(refused.value)) < 200, "a long value is quoted in part, not echoed whole"


class _Interrupted(BaseException):
    """Stands for a KeyboardInterrupt (a BaseException that verify_bundle does not catch)."""


@pytest.mark.parametrize("error", [_Interrupted, OverflowError])
@pytest.mark.parametrize("where", ["send", "recv"])
def test_any_exception_in_a_pipe_exchange_discards_the_pool(clean_bundle, root_hex, monkeypatch, error, where):
    from crypto import batch
    from ledger.bundle import verify_bundle

    monkeypatch.setattr("ledger.proofs.WORKERS_MIN_POINTS", 0)
    monkeypatch.setenv("ORETRACE_BUNDLE_WORKERS", "2")
    real = getattr(batch._Worker, where)
    calls = []

    def once(self, *args):
        calls.append(self)
        if len(calls) == 3:  # after the pool is taken and reset: in the middle of the verification
            raise error("interrupted")
        return real(self, *args)

    monkeypatch.setattr(batch._Worker, where, once)
    pool = batch.shared_pool(2)
    if error is _Interrupted:
        with pytest.raises(_Interrupted):
            verify_bundle(clean_bundle, root_hex)
    else:
        report = verify_bundle(clean_bundle, root_hex)
        assert not report.ok and report.failed().name == "internal" and "OverflowError" in report.failed().detail
    assert len(calls) >= 3, "the workers were not used: the test checks nothing"
    assert pool.broken and all(w.process.poll() is not None for w in pool.workers)
    monkeypatch.setattr(batch._Worker, where, real)
    report = verify_bundle(clean_bundle, root_hex)  # a fresh pool, answers in step
    assert report.ok, report.summary
    assert batch.shared_pool(2) is not pool


def test_a_worker_survives_ctrl_c(monkeypatch):
    from crypto.batch import WorkerFailed, WorkerPool

    monkeypatch.setenv("ORETRACE_BUNDLE_WORKER_TIMEOUT", "60")
    pool = WorkerPool(1, "arkworks")
    try:
        worker = pool.workers[0]
        worker.send(("collect",))
        assert worker.recv() == ([], [])  # started: its signal handling is in place
        os.kill(worker.process.pid, signal.SIGINT)
        for _ in range(2):  # the second exchange surely comes after the signal was handled
            worker.send(("collect",))
            try:
                assert worker.recv() == ([], [])
            except WorkerFailed:
                pytest.fail(f"the worker died of SIGINT (exit {worker.process.poll()})")
        assert worker.process.poll() is None
    finally:
        pool.close()


def test_a_worker_whose_parent_stops_reading_exits_without_a_traceback(capfd):
    from crypto.batch import WorkerPool
    from crypto.generators import G

    pool = WorkerPool(1, "arkworks")
    worker = pool.workers[0]
    worker.send(("load", [G().to_bytes()] * 100))
    worker.send(("msm", list(range(100)), [1] * 100))
    worker._close_pipes()  # its reply now goes to a pipe nobody reads
    assert worker.process.wait(timeout=120) == 0
    pool.close()
    err = capfd.readouterr().err
    assert "Traceback" not in err and "BrokenPipeError" not in err, err


@pytest.mark.parametrize("where", ["vectors", "local_sum"])
def test_an_interrupt_while_workers_owe_replies_is_not_turned_into_a_worker_failure(
    clean_bundle, root_hex, monkeypatch, where
):
    """Ctrl-C while workers owe replies (coefficient jobs sent, or their MSM shares asked
    for) reaches the caller as it is: the pool is discarded, the replies are not awaited,
    and the bundle is not verified a second time in-process as for a dead worker."""
    from crypto import batch
    from ledger.bundle import verify_bundle

    monkeypatch.setattr("ledger.proofs.WORKERS_MIN_POINTS", 0)
    monkeypatch.setenv("ORETRACE_BUNDLE_WORKERS", "2")
    monkeypatch.setattr(batch, "_JOBS_PER_MESSAGE", 1)  # one message per range proof: several sent
    fired = []
    if where == "vectors":
        real_send = batch._Worker.send
        sent = []

        def send(self, msg):
            if msg[0] == "vectors":
                sent.append(msg)
                if len(sent) == 2 and not fired:  # the first one is owed a reply
                    fired.append(True)
                    raise _Interrupted("ctrl-c")
            return real_send(self, msg)

        monkeypatch.setattr(batch._Worker, "send", send)
    else:
        real_local = batch._local_sum

        def local_sum(f):
            if f.deferred and not fired:  # the workers were just asked for their shares
                fired.append(True)
                raise _Interrupted("ctrl-c")
            return real_local(f)

        monkeypatch.setattr(batch, "_local_sum", local_sum)
    pool = batch.shared_pool(2)
    with pytest.raises(_Interrupted):
        verify_bundle(clean_bundle, root_hex)
    assert fired, "the interruption did not happen: the test checks nothing"
    assert pool.broken and all(w.process.poll() is not None for w in pool.workers)
    assert verify_bundle(clean_bundle, root_hex).ok  # fresh workers, in step


def test_workers_that_hang_at_their_coefficient_jobs_are_killed_and_the_verdicts_stand(
    chain, clean_bundle, root_hex, monkeypatch
):
    """The third stage a worker can hang at (after decoding, before the MSM): the range
    proofs' coefficient jobs, sent while this process folds. A valid bundle still
    verifies, a bad balance proof is still named, and no stopped worker is left."""
    from crypto import batch
    from ledger.bundle import verify_bundle
    from test_ledger_bundle import failed, flip_byte, index_of, resigned

    monkeypatch.setattr("ledger.proofs.WORKERS_MIN_POINTS", 0)
    monkeypatch.setenv("ORETRACE_BUNDLE_WORKERS", "2")
    monkeypatch.setenv("ORETRACE_BUNDLE_WORKER_TIMEOUT", "2")
    stopped: list = []
    real = batch.DeferredPoints.send_vector_jobs

    def send_vector_jobs(self, jobs):
        if not any(w.process.pid in stopped for w in self._pool.workers):
            for w in self._pool.workers:
                os.kill(w.process.pid, signal.SIGSTOP)
                stopped.append(w.process.pid)
        return real(self, jobs)

    monkeypatch.setattr(batch.DeferredPoints, "send_vector_jobs", send_vector_jobs)
    i = index_of(clean_bundle, "transform")
    last = len(clean_bundle["events"][i]["payload"]["balance_proof"]) // 2 - 1
    bad = resigned(chain, clean_bundle, i, lambda p: p.update(balance_proof=flip_byte(p["balance_proof"], last)))
    try:
        report = verify_bundle(clean_bundle, root_hex)
        assert stopped, "the workers were not used: the test checks nothing"
        assert report.ok, report.summary
        assert "in this process alone" in next(c for c in report.checks if c.name == "proofs").detail
        before = len(stopped)
        failed(bad, root_hex, "proofs", f"event {i} (transform", "balance proof")
        assert len(stopped) > before  # the fresh pool was stopped too
        assert all(_state(pid) in (None, "Z") for pid in stopped)  # killed: never left stopped ("T")
    finally:
        for pid in stopped:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _state(pid: int) -> str | None:
    """The process's state letter in /proc (None once it is reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return None


@pytest.mark.parametrize(
    ("name", "value"),
    [("ORETRACE_BUNDLE_WORKERS", "100000"), ("ORETRACE_BUNDLE_WORKERS", "two"), ("ORETRACE_BUNDLE_WORKER_TIMEOUT", "inf")],
)
def test_the_demo_refuses_a_malformed_worker_setting_before_it_starts(monkeypatch, tmp_path, name, value):
    """`oretrace demo` and `oretrace serve --demo` verify the demo's bundles with
    `verify_bundle`, which reads the settings: a malformed one is exit 2 naming it,
    before the demo starts, not every bundle "INVALID: internal" after the whole run."""
    from sdk import cli

    async def started(*args):
        raise AssertionError("the demo started")

    monkeypatch.setattr(cli, "_demo", started)
    monkeypatch.setattr(cli, "_serve_demo", started)
    monkeypatch.setenv(name, value)
    for args in (["demo", "--out", str(tmp_path)], ["serve", "--demo", "--port", "9401", "--data-dir", str(tmp_path)]):
        r = CliRunner().invoke(cli.app, [*args, "--size", "small"])
        assert r.exit_code == 2, (args, r.output)
        assert name in r.output and "Traceback" not in r.output
