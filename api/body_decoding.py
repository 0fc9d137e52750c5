"""Large request bodies are decoded in child processes, so that the server's GIL
stays free for its event loop meanwhile.

Why: `ledger.encoding.loads_strict` of a 1 MiB body costs ~0.15 s of CPU, and
its longest steps are single C calls that hold Python's GIL from start to end
(the regular-expression passes of the depth scan: ~25 and ~55 ms on 1 MiB of
small values; `json`'s scanner where no Python hook runs). A thread doing that
stalls the event loop, /healthz included, for as long, whatever the switch
interval (sys.setswitchinterval only preempts between bytecodes): with 8 such
bodies in flight /healthz p99 was 125 ms (docs/performance.md, "The API under
abuse"). In a child the server pays only for unpickling the decoded value
(~28 ms per MiB of small values, ~45 ms per MiB of small containers with the
cyclic collector paused, on a decoder thread: `_rebuild`), not for the decoding.

`BodyDecoder(processes, timeout, max_values)` keeps up to `processes` children
(`python -m api.body_decoding`, started at first use, each serving one body at
a time), each a `supervision.children.Child` with a minimal environment (PATH and
PYTHONPATH: none of the server's secrets, MONGODB_URI, ORETRACE_LOG_KEY, ...).
Messages (that module's frames: 4-byte length || pickle), per body:

    request  = the body's bytes
    answer   = ("ok", value)             value = loads_strict(body, max_values=N)
             | ("invalid", message)      message = str(StrictJSONError)
             | ("too_many", message)     message = str(TooManyJSONValues)

N, the most JSON values a body may hold (`Limits.max_body_values`), is the child's
one argument: a body over it never reaches the server as objects, whose copy
(unpickling, one C call holding the GIL) would cost the server ~45 ms per MiB of
small containers.

The answer is a pickle written by this module's own code in the child (which
reads only JSON from the client), never by the client.

A child that dies while decoding (killed, out of memory), writes anything but an
answer, or takes longer than `timeout` seconds for the whole exchange (it is then
killed) is replaced by a fresh one at the next body, and the body it held gets
`BodyDecoderUnavailable`, which the server answers as SERVICE_UNAVAILABLE (503 +
Retry-After: retrying is safe, nothing was done), as does a child that cannot be
started (OSError). A child is a `python` with `ledger.encoding` loaded; it exits when
its request pipe closes, and dies with the server (`supervision.children.die_with_parent`)
even while it decodes.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import pickle
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from ledger.encoding import StrictJSONError, TooManyJSONValues, loads_strict
from supervision.children import Child, ChildFailed, environment, serve

log = logging.getLogger("oretrace.api")

#: the checkout the server runs from, first on the child's import path: the same code
_ROOT = Path(__file__).resolve().parent.parent

Outcome = tuple[Literal["ok"], Any] | tuple[Literal["invalid", "too_many"], str]


class BodyDecoderUnavailable(Exception):
    """The child decoding a body died or hung (and was killed): retry the request."""


class _Child(Child):
    """One decoder process (module docstring)."""

    def __init__(self, max_values: int) -> None:
        env = environment(_ROOT, inherit=False)  # not the server's secrets: a decoder has no use for them
        super().__init__(
            "api.body_decoding", [str(max_values)], env=env, name="body decoder process", cwd=_ROOT, loads=_rebuild
        )

    def exchange(self, body: bytes, timeout: float) -> Outcome:
        """Send `body`, return the child's outcome; BodyDecoderUnavailable if the child
        dies, or does not answer within `timeout` seconds (then it is killed)."""
        deadline = time.monotonic() + timeout
        try:
            self.send(body, timeout)
            return self.recv(max(0.0, deadline - time.monotonic()))
        except ChildFailed as exc:
            why = f"took longer than {timeout:g} s" if exc.reason == "hung" else "died"
            log.warning("body decoder process %s %s (%s): replacing it", self.pid, why, exc)
            raise BodyDecoderUnavailable(f"the body decoder process {why}") from None


_gc_lock = threading.Lock()
_gc_pausers = 0  # threads inside _cyclic_gc_paused
_gc_was_enabled = False  # gc.isenabled() when the first of them entered


@contextmanager
def _cyclic_gc_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off while the block runs (in any thread), back
    to its previous state when the last thread inside leaves."""
    global _gc_pausers, _gc_was_enabled
    with _gc_lock:
        if _gc_pausers == 0:
            _gc_was_enabled = gc.isenabled()
            gc.disable()
        _gc_pausers += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_pausers -= 1
            if _gc_pausers == 0 and _gc_was_enabled:
                gc.enable()


def _rebuild(answer: bytes) -> Outcome:
    """The child's outcome from its pickle, with the cyclic collector paused: unpickling is
    one C call that holds the GIL throughout, and the collections its allocations trigger
    (each traversing the server's live objects) made up about 2/3 of it for bodies of
    small containers (1 MiB of `[[[[[]]]]]`: ~115 ms, ~45 ms paused, measured in one
    process on a loaded machine). A decoded JSON value holds no reference cycle, so the
    pause leaves no garbage behind."""
    with _cyclic_gc_paused():
        return pickle.loads(answer)


class BodyDecoder:
    """`await decode(body)`: `loads_strict(body, max_values=max_values)`'s outcome,
    computed in a child process (module docstring), at most `processes` at a time (more
    callers wait for a free one). `pids()`: the live children's process ids; `close()`: stop them."""

    def __init__(self, processes: int, timeout: float, max_values: int) -> None:
        self.processes = processes
        self.timeout = timeout
        self.max_values = max_values
        self._threads = ThreadPoolExecutor(max_workers=processes, thread_name_prefix="oretrace-body-decoder")
        self._lock = threading.Lock()
        self._idle: list[_Child] = []
        self._busy: set[_Child] = set()

    def pids(self, state: Literal["idle", "busy", "all"] = "all") -> list[int]:
        with self._lock:
            children = {"idle": self._idle, "busy": self._busy, "all": [*self._idle, *self._busy]}[state]
            return [c.pid for c in children]

    async def decode(self, body: bytes) -> Outcome:
        return await asyncio.get_running_loop().run_in_executor(self._threads, self._decode, body)

    def _decode(self, body: bytes) -> Outcome:
        try:
            child = self._take()
        except OSError as exc:  # no process could be started (process or memory limits)
            log.warning("could not start a body decoder process: %s", exc)
            raise BodyDecoderUnavailable("no body decoder process could be started") from None
        try:
            outcome = child.exchange(body, self.timeout)
        except BaseException as exc:
            if not isinstance(exc, BodyDecoderUnavailable):  # (that one already ended the child)
                child.kill()  # a ValueError from send (a body over a frame), an interrupt: never left busy
            with self._lock:
                self._busy.discard(child)
            raise
        with self._lock:
            self._busy.discard(child)
            self._idle.append(child)
        return outcome

    def _take(self) -> _Child:
        """An idle live child (one found dead while idle is replaced silently: no body was lost) or a new one."""
        with self._lock:
            while self._idle:
                child = self._idle.pop()
                if child.alive():
                    self._busy.add(child)
                    return child
                child.close()
        child = _Child(self.max_values)  # at most `processes` threads get here at once: at most that many children
        with self._lock:
            self._busy.add(child)
        return child

    async def close(self) -> None:
        await asyncio.to_thread(self._close)

    def _close(self) -> None:
        threads = self._threads
        self._threads = ThreadPoolExecutor(max_workers=self.processes, thread_name_prefix="oretrace-body-decoder")
        threads.shutdown(wait=True)  # a body being decoded finishes (or meets its timeout)
        with self._lock:
            children, self._idle = self._idle, []
        for child in children:
            child.close()


def _decode_in_child(body: bytes, max_values: int) -> Outcome:
    try:
        return "ok", loads_strict(body, max_values=max_values)
    except TooManyJSONValues as exc:
        return "too_many", str(exc)
    except StrictJSONError as exc:
        return "invalid", str(exc)


if __name__ == "__main__":  # a decoder process (module docstring)
    _max_values = int(sys.argv[1])
    serve(lambda body: _decode_in_child(body, _max_values))
