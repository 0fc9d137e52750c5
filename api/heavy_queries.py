"""Costly queries execute in child processes of their own, so that building and
encoding their answers never competes with the server's event loop for Python's GIL.

Why: graphql-core completes a result synchronously between two awaits. An
operation the cost budget allows can build thousands of objects (4,096 lots of
`lots(first: 4) { … parents { parents { … } } }`, 100 `_entities` with their
parents, 1,000 provenance nodes). On the event loop that stalled /healthz (p99
0.4-0.8 s with 8 in flight); on a worker thread with its own loop (the previous
design) the completion still held the GIL, up to a switch interval at a time,
and /healthz p99 stayed at 85-116 ms (docs/performance.md, "Abuse"). In a
process, the server only waits on a pipe and copies the answer's bytes.

An operation whose cost (resolvers.query_budget) reaches `Limits.heavy_query_cost`
therefore goes, once the main loop has parsed, validated, coerced and priced it
and it holds one of the `max_heavy_operations` heavy slots
(resolvers.schema.PreExecutionChecks.on_execute), to `HeavyQueryProcesses`:

* one child per heavy slot, `python -m api.query_process` (that module: the
  messages, and what the child does), each a `supervision.children.Child` with
  the minimal environment (PATH, PYTHONPATH). Its first message is its
  configuration: the server client's URI (with the embedded database's
  credentials) and options (`api.store.ClientConnection`, less the in-process
  `event_listeners`), the database, the ancestry caps, the Settings without
  `mongodb_uri` and `log_key`. So no secret is in its argv or environment;
* the children are started in the background when the server starts
  (`start()`, from the lifespan), so that the first heavy query does not wait
  for a child's start (imports, schema, client: ~0.65 s of CPU, ~2 s of wall
  time on the loaded 2-core machine, 64 MB RSS); an app without a lifespan
  (tests) starts them at first use. A child that failed is replaced in the
  background at once;
* `execute(query, variables, operation_name, extensions)` sends the operation
  and receives an `api.query_process.Answer`: the response
  body already encoded, its error codes, whether data is null. The exchange
  runs on a thread of this class (`Child.send/recv` block), under one time
  limit for sending and answering together: the request deadline
  (`ORETRACE_REQUEST_DEADLINE_SECONDS`, which also bounds the child's database
  work, as pymongo's timeout) plus `MARGIN_SECONDS`, and `START_SECONDS` more
  for a child still starting;
* a child that dies, hangs past that limit (SIGSTOP included) or writes
  anything but a message is killed (`ChildFailed`) and replaced; its request
  gets a typed, retryable SERVICE_UNAVAILABLE (503 + Retry-After under
  graphql-response+json, 200 + Retry-After under application/json, as a
  database fault): never a 500, never a traceback. Nothing was written (queries
  only), so a retry is safe. Any other exception inside an exchange (a request
  over a frame, a bug) is handled alike (and logged): the child, whose state is
  then unknown, is killed and replaced, never left counted busy; an interrupt
  propagates after the same clean-up;
* a request cancelled while its query runs (server shutdown) has its child
  SIGKILLed: the exchange thread then reads end of file and drops the child.
  Killing, not draining, because the answer is of no use, the child's CPU and
  database work stop at once (a drained child would run up to the deadline,
  with the heavy slot already released to the next query), and no reply can be
  left in a pipe for the next request: a child goes back to the idle list only
  after a complete exchange. The cost is a new child (started in the background).
  A request cancelled while its thread still waits for a child sends nothing (its
  heavy slot is already free: executing it would exceed the slots), and only the
  child executing the cancelled request is ever signalled, never one that went back
  to the idle list (`taken` holds the child during its exchange only);
* `close()` (the lifespan's shutdown) closes the children (end of file on their
  request pipe; SIGKILL after a grace); a SIGKILLed server leaves none
  (`supervision.children.die_with_parent`).

Mutations never come here (the ingestion service and its verification pool
live on the main loop), nor do operations selecting the transparency log's
fields (`resolvers.schema.MAIN_LOOP_ROOT_FIELDS`: the log keeps its state on the
main loop); their cost is bounded by the budget anyway. A server whose Store was
made from a client handed in as is (no `connection`: how to connect again is
unknown) has no heavy-query processes: its heavy queries execute on its loop,
under the same limits and slots.
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

from supervision.children import Child, ChildFailed, environment

from .query_process import Answer, Config, Request
from .settings import Settings
from .store import Store

log = logging.getLogger("oretrace.api")

#: the checkout the server runs from, first on the child's import path: the same code
_ROOT = Path(__file__).resolve().parent.parent
#: seconds an exchange may take beyond the request deadline (the deadline bounds the
#: child's database work; this, its result completion and encoding, and the pipe)
MARGIN_SECONDS = 5.0
#: seconds a child may take to start (imports, schema) before its first answer
START_SECONDS = 60.0


class QueryProcess(Child):
    """One heavy-query process (module docstring); its configuration is sent at once."""

    def __init__(self, config: Config) -> None:
        env = environment(_ROOT, inherit=False)  # no server secret in its environment
        super().__init__("api.query_process", env=env, name="heavy-query process", cwd=_ROOT)
        self.ready = False
        try:
            self.send(config, START_SECONDS)  # a few hundred bytes: the pipe takes them at once
        except ChildFailed:
            raise OSError("the heavy-query process died at once") from None

    def exchange(self, request: Request, timeout: float) -> Answer:
        """The child's Answer to `request` within `timeout` seconds in all, sending and
        receiving together (plus START_SECONDS if it has not said ready yet);
        ChildFailed otherwise (it was then killed)."""
        if not self.ready:
            self.recv(START_SECONDS)  # ("ready", pid)
            self.ready = True
        deadline = time.monotonic() + timeout
        self.send(request, timeout)
        answer = self.recv(max(0.0, deadline - time.monotonic()))
        if not isinstance(answer, Answer):
            self.kill()
            raise ChildFailed("broken", f"{self.name} (pid {self.pid}) answered {type(answer).__name__}: killed")
        return answer


def unavailable_answer(why: str) -> Answer:
    """The answer of a query whose process failed: a retryable SERVICE_UNAVAILABLE."""
    from .app import unavailable_error  # api.app imports this module

    return Answer.of({"data": None, "errors": [unavailable_error(f"the heavy-query process {why}; retry later")]})


class HeavyQueryProcesses:
    """`await execute(query, variables, operation_name, extensions)`: the Answer of a
    heavy query, executed in one of `processes` children (module docstring).
    `start()`: start them in the background; `pids()`: the live children;
    `executions`: queries sent; `close()`: stop them."""

    def __init__(self, config: Config, processes: int, deadline_seconds: float) -> None:
        self.config = config
        self.processes = processes
        self.timeout = deadline_seconds + MARGIN_SECONDS
        self.executions = 0
        # one thread per slot, plus those of exchanges whose request was cancelled (ending)
        self._threads = ThreadPoolExecutor(max_workers=2 * processes, thread_name_prefix="oretrace-heavy-queries")
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # a child started (or failed to)
        self._idle: list[QueryProcess] = []
        self._busy: set[QueryProcess] = set()
        self._starting = 0  # children being started in the background
        self._closed = False

    @classmethod
    def for_store(cls, store: Store, settings: Settings) -> HeavyQueryProcesses | None:
        """The processes for the server of `store`, or None when its heavy queries must
        execute on the event loop: a Store made from a client handed in as is, or one
        whose client options cannot be sent to another process (a warning says so)."""
        connection = store.connection
        if connection is None:
            return None
        options = {k: v for k, v in connection.options.items() if k != "event_listeners"}
        secrets = {"mongodb_uri": None, "log_key": None}
        config = Config(
            connection.uri, options, store.database, store.ancestry_limit,
            settings.model_copy(update=secrets), logging.getLogger().getEffectiveLevel(),
        )  # fmt: skip
        try:
            pickle.dumps(config, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # noqa: BLE001 - whatever pickle raises for an option's value
            log.warning("heavy queries execute on the event loop: the database client's options cannot be sent (%s)", exc)
            return None
        return cls(config, settings.limits.max_heavy_operations, settings.request_deadline_seconds)

    def pids(self, state: Literal["idle", "busy", "all"] = "all") -> list[int]:
        """The process ids of the idle children, of those executing a query, or of both."""
        with self._lock:
            children = {"idle": self._idle, "busy": self._busy, "all": [*self._idle, *self._busy]}[state]
            return [c.pid for c in children]

    def start(self) -> None:
        """Start the children in the background (their imports take a while)."""
        for _ in range(self.processes):
            self._replace()

    def _replace(self) -> None:
        """Start a child in the background, if fewer than `processes` are alive or starting
        (not after close)."""
        try:
            if not self._closed:
                self._threads.submit(self._add_idle)
        except RuntimeError:  # closed meanwhile: its executor takes no more tasks
            pass

    def _add_idle(self) -> None:
        with self._lock:
            if self._closed or len(self._idle) + len(self._busy) + self._starting >= self.processes:
                return
            self._starting += 1
        child = None
        try:
            child = QueryProcess(self.config)
        except OSError as exc:
            log.warning("could not start a heavy-query process: %s", exc)
        except Exception:  # a bug: never leave `_starting` counted, or `_take` would wait for it for good
            log.exception("could not start a heavy-query process")
        with self._changed:
            self._starting -= 1
            if child is not None and not self._closed and len(self._idle) + len(self._busy) < self.processes:
                self._idle.append(child)
                child = None
            self._changed.notify_all()
        if child is not None:  # closed, or no longer needed, meanwhile
            child.close()

    def _take(self) -> QueryProcess:
        """An idle live child (one found dead while idle is dropped: no query was lost),
        the one starting in the background, or a new one."""
        with self._changed:
            while True:
                while self._idle:
                    child = self._idle.pop()
                    if child.alive():
                        self._busy.add(child)
                        return child
                    child.kill()
                if not self._starting:
                    break
                self._changed.wait()
        child = QueryProcess(self.config)  # the heavy slots bound how many threads get here
        with self._lock:
            self._busy.add(child)
        return child

    def _give_back(self, child: QueryProcess) -> None:
        with self._lock:
            self._busy.discard(child)
            extra = self._closed or len(self._idle) + len(self._busy) >= self.processes
            if not extra:
                self._idle.append(child)
        if extra:
            child.close()

    async def execute(
        self, query: str, variables: dict | None, operation_name: str | None, extensions: dict | None
    ) -> Answer:
        """The Answer of the operation (document text, variables, operation name, the
        request's `extensions`), or a SERVICE_UNAVAILABLE one when its child failed.
        Cancelling the caller kills the child executing it (module docstring)."""
        request = Request(query, variables, operation_name, extensions)
        self.executions += 1
        taken: list[QueryProcess] = []
        cancelled = threading.Event()
        future = asyncio.get_running_loop().run_in_executor(self._threads, self._exchange, request, taken, cancelled)
        try:
            return await future
        except asyncio.CancelledError:
            cancelled.set()
            with self._lock:  # `taken` holds the child only while it executes this request
                if taken:
                    taken[0].process.kill()  # a signal only: the exchange thread reads end of file and drops it
            raise

    def _exchange(self, request: Request, taken: list[QueryProcess], cancelled: threading.Event) -> Answer:
        try:
            child = self._take()
        except OSError as exc:  # no process could be started (process or memory limits)
            log.warning("could not start a heavy-query process: %s", exc)
            return unavailable_answer("could not be started")
        with self._lock:
            if not cancelled.is_set():
                taken.append(child)
        if not taken:  # cancelled while waiting for a child: nothing sent, the child is as good as new
            self._give_back(child)
            return unavailable_answer("was not used: the request was cancelled")
        try:
            answer = child.exchange(request, self.timeout)
        except ChildFailed as exc:
            self._drop(child)
            if cancelled.is_set():
                log.info("heavy-query process %s killed: its request was cancelled", child.pid)
            else:
                log.warning("heavy-query process %s failed (%s): replacing it", child.pid, exc)
            why = f"took longer than {self.timeout:g} s" if exc.reason == "hung" else "failed"
            return unavailable_answer(why)
        except Exception:  # a request over a frame (ValueError from send), a bug: what the child holds is unknown
            self._drop(child)
            log.exception("heavy-query process %s: unexpected error in the exchange; replacing it", child.pid)
            return unavailable_answer("failed")
        except BaseException:  # an interrupt: never leave the child counted busy
            self._drop(child)
            raise
        with self._lock:
            taken.clear()
            signalled = cancelled.is_set()  # cancelled as the answer came: perhaps sent SIGKILL
        if signalled:
            self._drop(child)
        else:
            self._give_back(child)
        return answer

    def _drop(self, child: QueryProcess) -> None:
        """Kill a child whose state is unknown (failed, interrupted, or perhaps signalled
        by a cancelled request), forget it and start its replacement."""
        child.kill()
        with self._lock:
            self._busy.discard(child)
        self._replace()

    async def close(self) -> None:
        await asyncio.to_thread(self._close)

    def _close(self) -> None:
        with self._lock:
            self._closed = True
        self._threads.shutdown(wait=True)  # a query being executed finishes (or meets its time limit)
        with self._lock:
            children, self._idle = self._idle, []
        for child in children:
            child.close()
