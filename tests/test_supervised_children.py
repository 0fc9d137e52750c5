"""supervision.children with real processes: every way a child can fail an exchange
(hang, die, write a broken or oversized frame) ends in ChildFailed naming the reason,
with the child killed or reaped and its pipes closed; large frames and pipes on
descriptors >= 1024 work; a SIGKILLed parent leaves no child behind, for the body
decoder, the bundle verification workers and the verifier process pool alike (the
children are stopped or busy, so only PR_SET_PDEATHSIG can end them).

No timed assertions: time limits are short where a child must miss them, and deaths
are waited for by polling up to a generous bound."""

from __future__ import annotations

import os
import pickle
import resource
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from supervision.children import Child, ChildFailed, environment

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
#: generous bound for a process to end once it should (a loaded machine)
BOUND_S = 60.0


def start(behaviour: str, *args: str, **kwargs) -> Child:
    env = environment(ROOT, inherit=False)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env["PYTHONPATH"]])
    return Child("supervised_child_behaviours", [behaviour, *args], env=env, name="test child", **kwargs)


def gone(pid: int) -> bool:
    """Exited: no such process, or a zombie (Linux /proc/<pid>/stat state Z or X)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def wait_gone(pids: list[int]) -> list[int]:
    """Poll until every pid is gone or BOUND_S passes; the pids still running."""
    deadline = time.monotonic() + BOUND_S
    while any(not gone(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return [p for p in pids if not gone(p)]


def assert_finished(child: Child, exc: ChildFailed, reason: str, *, killed: bool) -> None:
    assert exc.reason == reason, exc
    assert f"test child (pid {child.pid})" in str(exc)
    assert child.process.returncode is not None  # reaped
    assert (child.process.returncode == -signal.SIGKILL) == killed, child.process.returncode
    assert child._in is None and child._out is None  # both pipes closed
    with pytest.raises(ChildFailed) as again:  # and it stays failed
        child.send("x", timeout=1)
    assert again.value.reason == "died"


# --------------------------------------------------------------------------- exchanges


@pytest.mark.parametrize("message", [None, b"", "é\u2028", {"a": [1, 2.5, (3, None)]}, b"\x00" * 100_000, 2**4000])
def test_a_child_answers_each_message_in_order(message) -> None:
    child = start("echo")
    try:
        for i in range(3):
            child.send((i, message), timeout=BOUND_S)
            assert child.recv(timeout=BOUND_S) == (i, message)
    finally:
        child.close()
    assert child.process.returncode == 0  # it exited at end of file, not killed


@pytest.mark.parametrize("size", [1 << 16, (1 << 16) + 1, 48 << 20])
def test_frames_larger_than_a_pipe_travel_both_ways(size) -> None:
    child = start("echo")
    try:
        payload = os.urandom(1024) * (size // 1024) + b"x" * (size % 1024)
        child.send(payload, timeout=BOUND_S)
        assert child.recv(timeout=BOUND_S) == payload
    finally:
        child.close()


@pytest.mark.parametrize("over", [1, 1000])
def test_a_message_larger_than_a_frame_is_refused_before_anything_is_sent(monkeypatch, over) -> None:
    """ValueError (not struct.error from packing the length), and the child still
    answers the next message: no partial frame went down its pipe. The limit is
    lowered here; the real one (2 GiB) would need gigabytes of pickle."""
    from supervision import children

    child = start("echo")
    try:
        payload = b"x" * 4000
        monkeypatch.setattr(children, "MAX_MESSAGE_BYTES", len(pickle.dumps(payload, protocol=5)) - over)
        with pytest.raises(ValueError, match="larger than a frame holds"):
            child.send(payload, timeout=BOUND_S)
        assert child.alive()
        child.send("after", timeout=BOUND_S)
        assert child.recv(timeout=BOUND_S) == "after"
    finally:
        child.close()


def test_the_message_limit_is_the_largest_length_a_frame_holds() -> None:
    """Read outside any monkeypatch (the test above lowers the limit): the frame's
    signed 32-bit length holds MAX_MESSAGE_BYTES and nothing larger."""
    from supervision import children

    children._SIZE.pack(children.MAX_MESSAGE_BYTES)
    with pytest.raises(struct.error):
        children._SIZE.pack(children.MAX_MESSAGE_BYTES + 1)


def test_a_child_that_prints_to_stdout_does_not_corrupt_its_frames(capfd) -> None:
    child = start("print")
    try:
        for message in ("one", ["two"], {"three": 3}):
            child.send(message, timeout=BOUND_S)
            assert child.recv(timeout=BOUND_S) == message
    finally:
        child.close()
    assert "stray text one" in capfd.readouterr().err


@pytest.mark.parametrize("stop", [False, True], ids=["busy", "stopped"])
def test_a_child_that_gives_no_answer_is_killed_at_the_time_limit(stop) -> None:
    child = start("hang" if not stop else "echo")
    if stop:
        os.kill(child.pid, signal.SIGSTOP)
    child.send("work", timeout=BOUND_S)  # a small message: the pipe takes it
    with pytest.raises(ChildFailed, match=r"gave no answer within 0\.5 s: killed") as failed:
        child.recv(timeout=0.5)
    assert_finished(child, failed.value, "hung", killed=True)


@pytest.mark.parametrize("stop", [False, True], ids=["busy", "stopped"])
def test_a_child_that_stops_reading_is_killed_at_the_time_limit_of_a_send(stop) -> None:
    child = start("hang" if not stop else "echo")
    if stop:
        os.kill(child.pid, signal.SIGSTOP)
    child.send("work", timeout=BOUND_S)
    with pytest.raises(ChildFailed, match=r"did not read its messages within 0\.5 s: killed") as failed:
        for _ in range(1000):  # a pipe holds 64 KiB by default: full after a few
            child.send(b"x" * (1 << 16), timeout=0.5)
    assert_finished(child, failed.value, "hung", killed=True)


DEATHS = {
    "exit status 3": ("exit", 3),
    "SIGKILL": ("echo", -signal.SIGKILL),
    "SIGTERM": ("echo", -signal.SIGTERM),
    "half a frame, then exit": ("bytes and exit", 0),
}


@pytest.mark.parametrize("death", DEATHS)
def test_a_child_that_dies_mid_exchange_is_reported_dead_and_reaped(death) -> None:
    behaviour, status = DEATHS[death]
    args = [struct.pack("!i", 100).hex() + "78" * 10] if behaviour == "bytes and exit" else []
    child = start(behaviour, *args)
    child.send("work", timeout=BOUND_S)
    if status < 0:
        os.kill(child.pid, -status)
    with pytest.raises(ChildFailed) as failed:
        child.recv(timeout=BOUND_S)
    assert f"died (exit status {status})" in str(failed.value)
    assert_finished(child, failed.value, "died", killed=status == -signal.SIGKILL)


def test_a_send_to_a_dead_child_is_reported_dead() -> None:
    child = start("echo")
    os.kill(child.pid, signal.SIGKILL)
    child.process.wait()
    with pytest.raises(ChildFailed) as failed:
        child.send(b"x" * (1 << 20), timeout=BOUND_S)
    assert_finished(child, failed.value, "died", killed=True)


BROKEN = {
    "not a pickle": struct.pack("!i", 5) + b"nopic",
    "a truncated pickle": struct.pack("!i", 3) + pickle.dumps([1, 2, 3])[:3],
    "a negative length": struct.pack("!i", -7) + b"x" * 16,
    "a length over max_frame": struct.pack("!i", (1 << 20) + 1),
    "the largest 4-byte length": struct.pack("!i", 2**31 - 1),
    "the marker of a frame of 2 GiB or more": struct.pack("!i", -1) + struct.pack("!Q", 1 << 40),
}


@pytest.mark.parametrize("frame", BROKEN)
def test_a_child_that_writes_a_broken_or_huge_frame_is_killed(frame) -> None:
    child = start("bytes", BROKEN[frame].hex(), max_frame=1 << 20)
    with pytest.raises(ChildFailed) as failed:
        child.recv(timeout=BOUND_S)
    assert_finished(child, failed.value, "broken", killed=True)


def test_close_ends_a_child_that_does_not_exit_by_itself() -> None:
    child = start("hang")
    child.send("work", timeout=BOUND_S)
    child.close(grace=0.2)
    assert child.process.returncode == -signal.SIGKILL and not child.alive()


def test_a_child_ignores_sigint() -> None:
    child = start("echo")
    try:
        child.send("ready?", timeout=BOUND_S)
        assert child.recv(timeout=BOUND_S) == "ready?"  # serve() has installed its handlers
        os.kill(child.pid, signal.SIGINT)
        for i in range(2):  # the second exchange surely comes after the signal was delivered
            child.send(i, timeout=BOUND_S)
            assert child.recv(timeout=BOUND_S) == i
        assert child.alive()
    finally:
        child.close()


#: a parent in a session of its own, as `oretrace verify` in a terminal: starts a child
#: still "importing" (sleeping) when the terminal's Ctrl-C comes, handles the interrupt
INTERRUPTED_PARENT = """
import os, sys
sys.path.insert(0, sys.argv[1])
from supervision.children import Child, environment

env = environment(os.getcwd())
env["PYTHONPATH"] = os.pathsep.join([sys.argv[1], env["PYTHONPATH"]])
child = Child("supervised_child_behaviours", ["slow start", "2"], env=env, name="test child")
try:  # the print too: the signal may come while it returns, once the pid was read
    print(child.pid, flush=True)
    child.send("work", timeout=60)
    child.recv(timeout=60)
except KeyboardInterrupt:
    child.close(grace=60)
    print("interrupted", child.process.returncode, flush=True)
"""


def test_a_terminal_ctrl_c_reaches_the_parent_only_even_while_a_child_starts(tmp_path) -> None:
    """A child has its own session (so its own process group): the SIGINT a terminal sends
    to its foreground process group reaches the parent, not a child that has not yet
    reached `serve` (which would die of KeyboardInterrupt with a traceback)."""
    process = subprocess.Popen(
        [sys.executable, "-c", INTERRUPTED_PARENT, str(TESTS)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, start_new_session=True,
    )  # fmt: skip
    try:
        child = int(process.stdout.readline())
        assert os.getpgid(child) != process.pid
        os.killpg(process.pid, signal.SIGINT)  # what the terminal does at Ctrl-C
        out, err = process.communicate(timeout=BOUND_S)
    finally:
        process.kill()
        process.wait()
    assert out.split() == ["interrupted", "0"], (out, err)  # the child exited at end of file
    assert "Traceback" not in err, err


#: starts a child from a thread, forks, and does it again in the forked process
FORKED = """
import os, threading
from supervision.children import Child, environment

def start_from_a_thread():
    started = []
    thread = threading.Thread(target=lambda: started.append(Child("supervised_child_behaviours", ["echo"], env=env)))
    thread.start()
    thread.join(60)
    if not started:
        return "no child within 60 s"
    started[0].send("ping", timeout=60)
    answer = started[0].recv(timeout=60)
    started[0].close()
    return answer

env = environment(os.getcwd())
env["PYTHONPATH"] = os.pathsep.join([os.environ["TESTS"], env["PYTHONPATH"]])
print(start_from_a_thread(), flush=True)
pid = os.fork()
if pid == 0:
    print(start_from_a_thread(), flush=True)
    os._exit(0)
os.waitpid(pid, 0)
"""


def test_a_forked_process_starts_children_from_threads_too() -> None:
    """The spawner thread is not copied by fork: the forked process needs its own (else
    a child started from one of its threads waits forever)."""
    done = subprocess.run(
        [sys.executable, "-c", FORKED], env={**environment(ROOT), "TESTS": str(TESTS)},
        cwd=ROOT, capture_output=True, text=True, timeout=3 * BOUND_S,
    )  # fmt: skip
    assert done.stdout.split("\n")[:2] == ["ping", "ping"], (done.stdout, done.stderr)


SHADOW = "import pathlib; pathlib.Path(__file__).with_name('IMPORTED').write_text('shadowed')\n"


@pytest.mark.parametrize("inherit", [False, True])
def test_a_child_never_imports_from_the_current_directory(tmp_path, monkeypatch, inherit) -> None:
    """`python -m` would put the working directory first on the child's import path: run
    in a directory holding a bundle and a `crypto/` (an unpacked archive), `oretrace verify`
    ran its code in every worker. The children are started with -P."""
    (tmp_path / "crypto").mkdir()
    (tmp_path / "crypto" / "__init__.py").write_text(SHADOW)
    (tmp_path / "supervised_child_behaviours.py").write_text(SHADOW)
    monkeypatch.chdir(tmp_path)
    env = environment(ROOT, inherit=inherit)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env["PYTHONPATH"]])
    child = Child("supervised_child_behaviours", ["echo"], env=env)
    try:
        child.send("ping", timeout=BOUND_S)
        assert child.recv(timeout=BOUND_S) == "ping"
    finally:
        child.close()
    from crypto.batch import WorkerPool

    pool = WorkerPool(1, "arkworks")
    try:
        pool.workers[0].send(("collect",))
        assert pool.workers[0].recv() == ([], [])
    finally:
        pool.close()
    assert not (tmp_path / "IMPORTED").exists()
    assert not (tmp_path / "crypto" / "IMPORTED").exists()


def test_the_minimal_environment_holds_no_secret(monkeypatch) -> None:
    monkeypatch.setenv("MONGODB_URI", "mongodb://user:secret@db")
    assert set(environment(ROOT, inherit=False)) == {"PATH", "PYTHONPATH"}
    assert environment(ROOT, inherit=True)["MONGODB_URI"] == "mongodb://user:secret@db"
    assert environment(ROOT)["PYTHONPATH"].split(os.pathsep)[0] == str(ROOT)


# --------------------------------------------------------------------------- out of descriptors

#: run in a process of its own (it exhausts its descriptors): leaves `free` descriptors,
#: tries three times to start a child, then prints how many descriptors stayed open
OUT_OF_DESCRIPTORS = """
import os, sys
from supervision.children import Child, environment

free = int(sys.argv[1])
before = len(os.listdir("/proc/self/fd"))
held = []
while True:
    try:
        held.append(os.open(os.devnull, os.O_RDONLY))
    except OSError:
        break
for _ in range(free):
    os.close(held.pop())
errors = []
for _ in range(3):
    try:
        Child("supervision.children", env=environment(".")).kill()
    except OSError as exc:
        errors.append(exc.errno)
for fd in held:
    os.close(fd)
print(errors, len(os.listdir("/proc/self/fd")) - before)
"""


@pytest.mark.parametrize("free", [0, 1, 2, 3, 4])
def test_a_child_that_cannot_start_for_want_of_descriptors_leaks_none(free) -> None:
    """EMFILE at the first pipe, the second, or in Popen: OSError, and every descriptor
    taken so far is closed again (a server out of descriptors must not lose more)."""
    env = environment(ROOT, inherit=False)
    limit = "import resource; resource.setrlimit(resource.RLIMIT_NOFILE, (64, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))\n"
    done = subprocess.run(
        [sys.executable, "-c", limit + OUT_OF_DESCRIPTORS, str(free)],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=BOUND_S,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["[24,", "24,", "24]", "0"], done.stdout


#: a pool of 50 workers with descriptors for a few only: what it raises, and what is left
POOL_OUT_OF_DESCRIPTORS = """
import os, resource
from crypto.batch import WorkerFailed, WorkerPool

resource.setrlimit(resource.RLIMIT_NOFILE, (32, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
before = len(os.listdir("/proc/self/fd"))
try:
    WorkerPool(50, "arkworks")
except WorkerFailed as exc:
    print("WorkerFailed", "Too many open files" in str(exc))
children = [p for p in os.listdir("/proc") if p.isdigit() and os.path.exists(f"/proc/{p}/stat")
            and open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()[1] == str(os.getpid())]
print(len(os.listdir("/proc/self/fd")) - before, len(children))
"""


def test_a_worker_pool_that_cannot_start_every_worker_leaves_none_behind() -> None:
    """Out of descriptors (or processes) part-way: WorkerFailed, which `verify_bundle` answers
    by verifying in-process (not an "internal" failure), with the workers already started
    killed and their pipes closed."""
    done = subprocess.run(
        [sys.executable, "-c", POOL_OUT_OF_DESCRIPTORS], env=environment(ROOT), cwd=ROOT,
        capture_output=True, text=True, timeout=3 * BOUND_S,
    )  # fmt: skip
    assert done.stdout.split() == ["WorkerFailed", "True", "0", "0"], (done.stdout, done.stderr)


# --------------------------------------------------------------------------- descriptors >= 1024


@pytest.fixture
def many_descriptors():
    """Over 1024 descriptors held open: every new pipe gets a number >= 1024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2048:
        pytest.skip(f"the descriptor limit ({hard}) is too low")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 2048) if soft != resource.RLIM_INFINITY else soft, hard))
    held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        yield
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_child_whose_pipes_are_numbered_above_1024_works(many_descriptors) -> None:
    child = start("echo")
    try:
        assert min(child._in, child._out) >= 1024
        child.send(b"y" * (1 << 20), timeout=BOUND_S)
        assert child.recv(timeout=BOUND_S) == b"y" * (1 << 20)
    finally:
        child.close()
    child = start("hang")
    child.send("work", timeout=BOUND_S)
    with pytest.raises(ChildFailed) as failed:  # the time limit works there too
        child.recv(timeout=0.3)
    assert failed.value.reason == "hung"


def test_a_bundle_worker_whose_pipes_are_numbered_above_1024_works(many_descriptors) -> None:
    from crypto.batch import WorkerPool
    from crypto.generators import G

    pool = WorkerPool(1, "arkworks")
    try:
        worker = pool.workers[0]
        assert min(worker._in, worker._out) >= 1024
        worker.send(("load", [G().to_bytes()] * 3))
        worker.send(("msm", [0, 1, 2], [1, 2, 3]))
        status, encoded = worker.recv()
        assert status == "ok" and encoded == (G() * 6).to_bytes()
    finally:
        pool.close()


async def test_the_body_decoder_whose_pipes_are_numbered_above_1024_works(many_descriptors) -> None:
    from api.body_decoding import BodyDecoder

    decoder = BodyDecoder(processes=1, timeout=BOUND_S, max_values=100)
    try:
        assert await decoder.decode(b'{"a": [1, 2]}') == ("ok", {"a": [1, 2]})
        assert await decoder.decode(b'{"a": NaN}') == await decoder.decode(b'{"a": NaN} ')
    finally:
        await decoder.close()


# --------------------------------------------------------------------------- a SIGKILLed parent

PARENTS = {
    "body decoder": """
import asyncio
from api.body_decoding import BodyDecoder

async def main():
    decoder = BodyDecoder(processes=2, timeout=60, max_values=100)
    await asyncio.gather(*(decoder.decode(b"[%d]" % i) for i in range(8)))
    print(*decoder.pids(), flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
""",
    # the pool is started from a thread that ends after the workers called die_with_parent
    # (they answered): PDEATHSIG must not fire with that thread
    "bundle workers": """
import os, threading, time
from crypto.batch import WorkerPool

def exchange(pool):
    for worker in pool.workers:
        worker.send(("collect",))
        assert worker.recv() == ([], [])

def start():
    pools.append(WorkerPool(2, "arkworks"))
    exchange(pools[0])

pools = []
thread = threading.Thread(target=start)
thread.start()
thread.join()
while os.path.exists(f"/proc/self/task/{thread.native_id}"):  # until the kernel's thread is gone too
    time.sleep(0.01)
exchange(pools[0])
print(*(w.pid for w in pools[0].workers), flush=True)
time.sleep(3600)
""",
    "verifier process pool": """
import multiprocessing, os, time
from concurrent.futures import ProcessPoolExecutor
from api.service import _init_verifier_process

if __name__ == "__main__":
    pool = ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn"), initializer=_init_verifier_process, initargs=(1,))
    pids = {pool.submit(os.getpid).result() for _ in range(4)} | {p.pid for p in pool._processes.values()}
    print(*pids, flush=True)
    time.sleep(3600)
""",
}


@pytest.mark.parametrize("how", ["stopped", "running"])
@pytest.mark.parametrize("parent", PARENTS)
def test_a_sigkilled_parent_leaves_no_child_behind(parent, how, tmp_path) -> None:
    script = tmp_path / "parent.py"
    script.write_text(PARENTS[parent])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    process = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, env=env, cwd=tmp_path)
    children: list[int] = []
    try:
        line = process.stdout.readline()
        children = [int(p) for p in line.split()]
        assert children, f"the parent started no child (exit {process.poll()})"
        assert all(not gone(p) for p in children)
        if how == "stopped":  # a stopped child reads no end of file: only PDEATHSIG ends it
            for pid in children:
                os.kill(pid, signal.SIGSTOP)
        process.kill()
        process.wait()
        assert wait_gone(children) == [], f"children left behind by the {parent}'s SIGKILLed parent"
    finally:
        process.kill()
        process.wait()
        process.stdout.close()
        for pid in children:
            if not gone(pid):
                os.kill(pid, signal.SIGKILL)


def test_supervision_imports_the_standard_library_only() -> None:
    """So that crypto/, ledger/ and api/ may all import it (docs/architecture.md)."""
    import ast

    for path in (ROOT / "supervision").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] in sys.stdlib_module_names or name == "__future__", (path, name)
