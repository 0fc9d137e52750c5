"""One supervised child process: a `python -m <module>` that serves framed messages over
two pipes, with a time limit on every exchange, and that dies with its parent.

Parent side, `Child(module, args, env=..., name=...)`:

* starts `sys.executable -P -m module *args` (-P: the working directory, perhaps one
  holding an untrusted bundle and whatever came with it, is not put on the child's import
  path; fork + exec, never a bare fork: the parent's
  threads, locks and `__main__` are not copied) in a session of its own (so a terminal's
  Ctrl-C, Ctrl-Z and hang-up, sent to its foreground process group, reach the parent
  only, also while the child is still importing its modules, before `serve` runs: the
  parent handles them and ends its children in order) with exactly the environment `env` the
  caller chose (`environment(root, inherit=False)`: only PATH and PYTHONPATH, so no
  server secret reaches the child; `inherit=True`: the parent's own), plus
  `SUPERVISION_PARENT_PID`;
* `send(msg, timeout)` / `recv(timeout)`: one message each way, each within `timeout`
  seconds. The parent's pipe ends are non-blocking and waited on with `select.poll`
  (no limit on descriptor numbers, unlike `select.select`, which fails at 1024);
* `ChildFailed(reason)` whenever the child is of no further use, `reason` being
  "hung" (missed a time limit: it was killed), "died" (its pipe reached end of file or
  broke because the process ended) or "broken" (it wrote something that is not a frame
  of a message within `max_frame` bytes: it was killed); the process is reaped and
  both pipes are closed in every case;
* `kill()` (SIGKILL, reap, close: stopped processes too), `close(grace)` (close the
  request pipe, which asks the child to exit; SIGKILL after `grace` seconds),
  `alive()`, `pid`, `process` (the `subprocess.Popen`).

Child side, `serve(handler)`: ignores SIGINT (a Ctrl-C is the parent's to handle), calls
`die_with_parent`, then answers each message with `handler(message)` (None: no
answer) until the request pipe reaches end of file; a reply to a parent that is gone
(broken pipe) ends it quietly, with exit status 0 and no traceback. The child's stdin
and stdout are the two pipes; `serve` moves them aside at once and points fd 0 at
/dev/null and fd 1 at stderr, so a stray print cannot corrupt a frame.

Frames, both ways (those of `multiprocessing.connection.Connection`, which the child
side uses, for payloads under 2 GiB): a 4-byte big-endian signed length n, then n
bytes of pickle (protocol 5). The pickles are written by the parent's and the child's
own code, never by a client.

`die_with_parent(parent_pid)`: on Linux `prctl(PR_SET_PDEATHSIG, SIGKILL)`, so that
a SIGKILLed parent leaves no child behind (a busy child does not read its end of
file); elsewhere a child learns of it only by reading end of file. PDEATHSIG fires
when the *thread* that started the child exits: `Child` therefore starts every process
from the main thread or from one spawner thread that lives as long as the interpreter.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from typing import Any, Literal

__all__ = ["Child", "ChildFailed", "die_with_parent", "environment", "serve", "MAX_MESSAGE_BYTES", "PARENT_PID_VARIABLE"]

#: the environment variable carrying the parent's pid to the child (`serve`)
PARENT_PID_VARIABLE = "SUPERVISION_PARENT_PID"
_PR_SET_PDEATHSIG = 1  # linux/prctl.h
_SIZE = struct.Struct("!i")
#: the largest pickle one frame holds (its length is a signed 32-bit integer: under 2 GiB)
MAX_MESSAGE_BYTES = 2**31 - 1
_READ_CHUNK = 1 << 16

Reason = Literal["hung", "died", "broken"]


class ChildFailed(RuntimeError):
    """The child is gone or of no further use; `reason`: "hung", "died" or "broken"
    (module docstring). The message names the child, its pid and what happened."""

    def __init__(self, reason: Reason, message: str):
        super().__init__(message)
        self.reason = reason


def environment(root: str | os.PathLike[str], *, inherit: bool = False) -> dict[str, str]:
    """An environment for a child that imports code from `root` (first on PYTHONPATH,
    before the parent's PYTHONPATH). `inherit=False`: PATH and PYTHONPATH only (none
    of the parent's secrets); True: a copy of the parent's environment."""
    env = dict(os.environ) if inherit else {"PATH": os.environ.get("PATH", os.defpath)}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(root), os.environ.get("PYTHONPATH")) if p)
    return env


def die_with_parent(parent_pid: int | None = None) -> None:
    """Be killed (SIGKILL) when the parent dies (Linux PR_SET_PDEATHSIG; a no-op
    elsewhere). With `parent_pid`, exit at once (status 1) if the parent already died
    before this call (this process was reparented). Safe between fork and exec."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if parent_pid is not None and os.getppid() != parent_pid:
        os._exit(1)


# --------------------------------------------------------------------------- starting


#: the thread that starts children outside the main thread: it lives until the interpreter
#: exits (a ThreadPoolExecutor's thread never ends idle), when it takes them down with it
_spawner: ThreadPoolExecutor


def _new_spawner() -> None:
    """A fresh `_spawner`; also in a forked child, where the inherited one's thread does not
    exist (a task submitted to it would wait forever)."""
    global _spawner
    _spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="supervision-spawner")


_new_spawner()
os.register_at_fork(after_in_child=_new_spawner)


def _popen(*args: Any, **kwargs: Any) -> subprocess.Popen:
    """`subprocess.Popen` from a thread that lives as long as this process (see
    `die_with_parent`): the main thread itself, else `_spawner`."""
    if threading.current_thread() is threading.main_thread():
        return subprocess.Popen(*args, **kwargs)
    return _spawner.submit(subprocess.Popen, *args, **kwargs).result()


# --------------------------------------------------------------------------- parent side


class Child:
    """A supervised `python -m module *args` (module docstring). `loads` turns a reply's
    bytes into the message (pickle.loads; a caller may wrap it); `max_frame` bounds a
    reply's size in bytes (a larger announced frame is "broken")."""

    def __init__(
        self,
        module: str,
        args: Sequence[str] = (),
        *,
        env: Mapping[str, str],
        name: str = "child process",
        cwd: str | os.PathLike[str] | None = None,
        loads: Callable[[bytes], Any] = pickle.loads,
        max_frame: int = 1 << 30,
    ) -> None:
        self.name = name
        self.loads = loads
        self.max_frame = max_frame
        self._received = bytearray()
        self._out = self._in = None
        child_ends: list[int] = []  # closed here once the child has them (or could not start)
        try:
            to_child_r, self._out = os.pipe()
            child_ends.append(to_child_r)
            self._in, from_child_w = os.pipe()  # EMFILE here must not leak the first pipe
            child_ends.append(from_child_w)
            self.process = _popen(
                [sys.executable, "-P", "-m", module, *args],  # -P: nothing imported from the working directory
                stdin=to_child_r, stdout=from_child_w, env={**env, PARENT_PID_VARIABLE: str(os.getpid())}, cwd=cwd,
                start_new_session=True,
            )  # fmt: skip
        except BaseException:
            self._close_pipes()
            raise
        finally:
            for fd in child_ends:
                os.close(fd)
        os.set_blocking(self._out, False)
        os.set_blocking(self._in, False)

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def _failed(self, reason: Reason, what: str) -> ChildFailed:
        """Kill (hung, broken) or reap (died) the child, close the pipes: the error to raise."""
        if reason == "died":  # its pipe closes as it exits: a moment to become a zombie, for its status
            with contextlib.suppress(subprocess.TimeoutExpired):
                what = f"died (exit status {self.process.wait(timeout=1.0)})"
        self.kill()
        return ChildFailed(reason, f"{self.name} (pid {self.pid}) {what}")

    def _wait(self, fd: int, event: int, deadline: float) -> bool:
        """Until `fd` is ready for `event` (True) or `deadline` passes (False)."""
        poller = select.poll()
        poller.register(fd, event)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if poller.poll(max(1, int(remaining * 1000 + 0.999))):  # ms, rounded up
                return True

    def send(self, message: Any, timeout: float) -> None:
        """Send `message` (pickled); ChildFailed if the child is gone or has not taken it
        within `timeout` seconds; ValueError, with nothing sent, if its pickle is larger
        than `MAX_MESSAGE_BYTES`."""
        if self._out is None:
            raise ChildFailed("died", f"{self.name} (pid {self.pid}) was closed")
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        if len(data) > MAX_MESSAGE_BYTES:  # nothing written: the child stays usable
            raise ValueError(f"a message of {len(data)} bytes is larger than a frame holds ({MAX_MESSAGE_BYTES})")
        view = memoryview(_SIZE.pack(len(data)) + data)
        deadline = time.monotonic() + timeout
        while view:
            try:
                view = view[os.write(self._out, view) :]
                continue
            except BlockingIOError:
                pass
            except BrokenPipeError:
                raise self._failed("died", "closed its pipe") from None
            except OSError as exc:
                raise self._failed("broken", f"pipe error: {exc}") from None
            if not self._wait(self._out, select.POLLOUT, deadline):
                raise self._failed("hung", f"did not read its messages within {timeout:g} s: killed")

    def recv(self, timeout: float) -> Any:
        """The child's next message; ChildFailed if it dies, writes something that is
        not a frame, or gives none within `timeout` seconds."""
        if self._in is None:
            raise ChildFailed("died", f"{self.name} (pid {self.pid}) was closed")
        deadline = time.monotonic() + timeout
        buf = self._received
        while True:
            frame = self._frame(buf)
            if frame is not None:
                try:
                    return self.loads(frame)
                except Exception as exc:  # noqa: BLE001 - whatever the bytes make pickle raise
                    raise self._failed("broken", f"wrote a frame that is no message ({type(exc).__name__}): killed") from None
            try:
                chunk = os.read(self._in, _READ_CHUNK)
            except BlockingIOError:
                if not self._wait(self._in, select.POLLIN, deadline):
                    raise self._failed("hung", f"gave no answer within {timeout:g} s: killed") from None
                continue
            except OSError as exc:
                raise self._failed("broken", f"pipe error: {exc}") from None
            if not chunk:
                raise self._failed("died", "closed its pipe")
            buf += chunk

    def _frame(self, buf: bytearray) -> bytes | None:
        """The first whole frame's payload, taken off `buf`; None if incomplete; ChildFailed if malformed."""
        if len(buf) < _SIZE.size:
            return None
        (size,) = _SIZE.unpack_from(buf)
        if not 0 <= size <= self.max_frame:
            raise self._failed("broken", f"announced a frame of {size} bytes (at most {self.max_frame}): killed")
        if len(buf) < _SIZE.size + size:
            return None
        frame = bytes(buf[_SIZE.size : _SIZE.size + size])
        del buf[: _SIZE.size + size]
        return frame

    _out: int | None  # this side's end of the request pipe, non-blocking; None once closed
    _in: int | None  # this side's end of the reply pipe, non-blocking; None once closed

    def _close_pipes(self) -> None:
        for fd in (self._out, self._in):
            if fd is not None:
                os.close(fd)
        self._out = self._in = None
        self._received.clear()

    def kill(self) -> None:
        """End the process now, whatever it is doing (a stopped one too), reap it, close the pipes."""
        self.process.kill()
        self.process.wait()
        self._close_pipes()

    def close(self, grace: float = 5.0) -> None:
        """Ask the child to exit (end of file on its request pipe); SIGKILL after `grace` seconds."""
        self._close_pipes()
        try:
            self.process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.kill()


# --------------------------------------------------------------------------- child side


def serve(handler: Callable[[Any], Any]) -> None:
    """Run this process as a supervised child (module docstring): answer each message
    from the parent with `handler(message)` (None: no answer) until end of file."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = os.environ.get(PARENT_PID_VARIABLE, "")
    die_with_parent(int(parent) if parent.isdigit() else None)
    inbox = Connection(os.dup(0), writable=False)
    outbox = Connection(os.dup(1), readable=False)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(2, 1)  # print() now writes to stderr, never into a frame
    while True:
        try:
            message = inbox.recv()
        except EOFError:
            return
        reply = handler(message)
        del message
        if reply is not None:
            data = pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)
            del reply
            try:
                outbox.send_bytes(data)
            except BrokenPipeError:  # the parent is gone, or gave up on this child
                return
