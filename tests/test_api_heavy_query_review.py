"""Heavy-query processes (api.heavy_queries, api.query_process), cases found in review:
an exception escaping graphql-core's `execute` answers as in-loop Strawberry does; a
cancellation signals only the child executing the cancelled request, and one cancelled
before its query was sent sends nothing; more request shapes (GET, several operations,
odd Unicode, malformed representations, errors deep in lists) answer as in the loop.
No assertion is timed."""

from __future__ import annotations

import asyncio

import graphql
import pytest
import strawberry.schema.schema as strawberry_schema

from api.query_process import QueryExecutor, Request
from test_api_heavy_query_processes import GR, both_ways, chain, heavy, in_loop, same_answer  # noqa: F401

QUERIES = [
    ("{ lots(first: 100) { edges { node { id parents { id owner { id } } } } } }", None),
    ("query($l: ID!) { provenance(lotId: $l) { nodes { id } truncated } }", "refined"),
]


@pytest.mark.parametrize("error", [RuntimeError("secret internals"), TypeError("'NoneType' object"), RecursionError()])
@pytest.mark.parametrize("index", range(len(QUERIES)))
@pytest.mark.parametrize("accept", [None, GR])
async def test_an_exception_escaping_execute_answers_as_in_the_loop(chain, heavy, in_loop, monkeypatch, error, index, accept):
    """graphql-core's `execute` itself raising (not a resolver): in-loop Strawberry makes
    it a PreExecutionError (masked; 400 without `data` under graphql-response+json). The
    child's code runs here (so `execute` can be made to fail), behind the server's HTTP
    handling, and the whole HTTP answer must be the in-loop one."""
    query, variable = QUERIES[index]
    variables = {"l": chain.refined[0]} if variable else None
    processes = heavy[1].state.runtime.query_worker
    executor = await asyncio.to_thread(QueryExecutor, processes.config)

    async def execute_here(query, variables, operation_name, extensions):
        processes.executions += 1
        return await asyncio.to_thread(executor.answer, Request(query, variables, operation_name, extensions))

    def broken_execute(*args, **kwargs):
        raise error

    try:
        monkeypatch.setattr(processes, "execute", execute_here)
        monkeypatch.setattr(graphql, "execute", broken_execute)  # the child's (imported at each query)
        monkeypatch.setattr(strawberry_schema, "execute", broken_execute)  # in-loop Strawberry's
        on_process, on_loop, executed = await both_ways(heavy, in_loop, query, variables, accept)
        assert executed == 1
        same_answer(on_process, on_loop)
        assert on_process.status_code == (400 if accept == GR else 200)
        assert b"secret" not in on_process.content and b"Traceback" not in on_process.content
    finally:
        await asyncio.to_thread(executor.loop.run_until_complete, executor.store.close())
        executor.loop.close()


# --------------------------------------------------------------------------- cancellation races

HEAVY = "{ lots(first: 50) { edges { node { id owner { id } } } } }"


@pytest.fixture
async def one_process(api_settings, store):
    """The heavy-query processes of a server with one heavy slot, its child started and idle."""
    from api.heavy_queries import HeavyQueryProcesses
    from test_api_heavy_queries import wait_for

    processes = HeavyQueryProcesses.for_store(store, _one_slot(api_settings))
    processes.start()
    await wait_for(lambda: len(processes.pids("idle")) == 1, "a heavy-query process")
    try:
        yield processes
    finally:
        await processes.close()


def _one_slot(settings):
    from api.settings import Limits

    return settings.model_copy(update={"limits": Limits(heavy_query_cost=50, max_heavy_operations=1)})


@pytest.mark.parametrize("queries_before", [0, 1, 2])
async def test_a_request_cancelled_once_its_answer_came_does_not_kill_the_reused_child(
    chain, one_process, monkeypatch, queries_before
):
    """The answer came and the child went back to the idle list, but the request is
    cancelled before its task resumes (the event loop was busy): the idle child, perhaps
    already executing the next request, must not be killed."""
    import time

    from api.heavy_queries import QueryProcess
    from test_api_heavy_queries import process_exists

    processes = one_process
    [pid] = processes.pids()
    for _ in range(queries_before):
        assert b'"errors"' not in (await processes.execute(HEAVY, None, None, None)).body
    answered = []
    exchange = QueryProcess.exchange
    monkeypatch.setattr(QueryProcess, "exchange", lambda self, *a: (exchange(self, *a), answered.append(self.pid))[0])
    task = asyncio.create_task(processes.execute(HEAVY, None, None, None))
    await asyncio.sleep(0)  # the exchange is under way on its thread
    deadline = time.monotonic() + 60
    # hold the event loop (as a busy server does) until the child answered and is idle again
    while not (answered == [pid] and processes.pids("idle") == [pid]):
        assert time.monotonic() < deadline, "the exchange did not finish"
        time.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.2)  # not a timing assertion: a SIGKILL, had it been sent, has landed
    assert process_exists(pid) and processes.pids() == [pid]
    answer = await processes.execute(HEAVY, None, None, None)
    assert b'"errors"' not in answer.body and processes.pids() == [pid]


class _Interrupt(BaseException):
    """An interrupt-like exception (not KeyboardInterrupt, which asyncio re-raises out of the loop)."""


def _fail_send_over_a_frame(monkeypatch):
    from supervision import children

    monkeypatch.setattr(children, "MAX_MESSAGE_BYTES", 64)  # the request is refused before a byte is written


def _fail_after_sending(error: BaseException):
    def install(monkeypatch):
        from api.heavy_queries import QueryProcess

        def recv(self, timeout):  # the query was sent: the child is executing it
            raise error

        monkeypatch.setattr(QueryProcess, "recv", recv)

    return install


@pytest.mark.parametrize(
    "fail, raised",
    [
        (_fail_send_over_a_frame, None),
        (_fail_after_sending(RuntimeError("a bug")), None),
        (_fail_after_sending(OSError("a pipe error")), None),
        (_fail_after_sending(_Interrupt()), _Interrupt),
    ],
    ids=["over-a-frame", "bug-after-send", "oserror-after-send", "interrupt-after-send"],
)
async def test_an_unexpected_exception_in_an_exchange_never_leaves_its_child_busy(chain, one_process, monkeypatch, fail, raised):
    """Any exception inside an exchange, not only a failed child: the child (whose state is
    unknown) is killed and replaced, the request gets a retryable SERVICE_UNAVAILABLE (an
    interrupt propagates), and the heavy slot keeps its process: the next query works."""
    import json

    from test_api_heavy_queries import process_exists, wait_for

    processes = one_process
    [pid] = processes.pids()
    with monkeypatch.context() as patch:
        fail(patch)
        if raised is None:
            answer = await processes.execute(HEAVY, None, None, None)
            [error] = json.loads(answer.body)["errors"]
            assert error["extensions"]["code"] == "SERVICE_UNAVAILABLE" and "a bug" not in answer.body.decode()
            assert answer.codes == ("SERVICE_UNAVAILABLE",), answer.codes
        else:
            with pytest.raises(raised):
                await processes.execute(HEAVY, None, None, None)
    assert processes.pids("busy") == []
    assert not process_exists(pid)
    # the replacement started in the background (or, had its start met the patched frame
    # limit, one started now): never a wait for a start that failed
    answer = await processes.execute(HEAVY, None, None, None)
    assert b'"errors"' not in answer.body and len(processes.pids()) == 1 and pid not in processes.pids()


async def test_a_background_start_that_fails_unexpectedly_does_not_hold_up_the_next_query(chain, one_process, monkeypatch):
    """A replacement whose start raises something other than OSError (a bug) must not stay
    counted as starting: the next query would wait for it for good."""
    from api.heavy_queries import QueryProcess

    processes = one_process
    [pid] = processes.pids()
    starts = []

    def broken_start(self, config):
        starts.append(config)
        raise RuntimeError("a bug in starting")

    with monkeypatch.context() as patch:
        patch.setattr(QueryProcess, "__init__", broken_start)
        processes._drop(processes._take())  # the child is dropped and its replacement fails to start
        await asyncio.to_thread(processes._threads.submit(lambda: None).result)  # the start has run
    assert starts and processes.pids() == []
    answer = await asyncio.wait_for(processes.execute(HEAVY, None, None, None), 120)
    assert b'"errors"' not in answer.body and len(processes.pids()) == 1 and pid not in processes.pids()


async def test_sending_and_receiving_share_one_time_limit(chain, one_process, monkeypatch):
    """The exchange's limit (deadline + margin) covers the send and the answer together:
    time spent sending is taken off the wait for the answer (before, each had the
    whole limit, so a slow reader could hold a heavy slot twice as long)."""
    import time

    from api.heavy_queries import QueryProcess

    processes = one_process
    spent, waits = 0.5, []
    send, recv = QueryProcess.send, QueryProcess.recv

    def slow_send(self, message, timeout):
        time.sleep(spent)  # a child slow to read its request
        return send(self, message, timeout)

    def recorded_recv(self, timeout):
        waits.append(timeout)
        return recv(self, timeout)

    monkeypatch.setattr(QueryProcess, "send", slow_send)
    monkeypatch.setattr(QueryProcess, "recv", recorded_recv)
    answer = await processes.execute(HEAVY, None, None, None)
    assert b'"errors"' not in answer.body
    assert waits[-1] <= processes.timeout - spent, (waits, processes.timeout)  # (a first wait: the child's "ready")


@pytest.mark.parametrize("cancelled_requests", [1, 2])
async def test_a_request_cancelled_while_waiting_for_a_child_sends_nothing(chain, one_process, monkeypatch, cancelled_requests):
    """Cancelled while its exchange thread waits for a child (one starting): the query is
    never sent (its heavy slot is already free, so executing it would exceed the slots)."""
    from api.heavy_queries import QueryProcess
    from test_api_heavy_queries import wait_for

    processes = one_process
    [pid] = processes.pids()
    sent = []
    exchange = QueryProcess.exchange
    monkeypatch.setattr(QueryProcess, "exchange", lambda self, *a: (sent.append(self.pid), exchange(self, *a))[1])
    with processes._changed:  # the child is taken by no one while "another one starts"
        processes._starting += 1
        idle, processes._idle = processes._idle, []
    tasks = [asyncio.create_task(processes.execute(HEAVY, None, None, None)) for _ in range(cancelled_requests)]
    await asyncio.sleep(0.2)  # the threads wait in _take (nothing asserted on time)
    for task in tasks:
        task.cancel()
    for task in tasks:
        with pytest.raises(asyncio.CancelledError):
            await task
    with processes._changed:
        processes._starting -= 1
        processes._idle.extend(idle)
        processes._changed.notify_all()
    await wait_for(lambda: processes.pids("idle") == [pid], "the child to be idle")
    await asyncio.sleep(0.2)
    assert sent == [] and processes.pids() == [pid]
    answer = await processes.execute(HEAVY, None, None, None)
    assert b'"errors"' not in answer.body and sent == [pid]


# --------------------------------------------------------------------------- more request shapes

def _more_shapes(chain) -> list[tuple[str, str, dict | None, str | None]]:
    """(method, query, variables, operationName) of heavy operations the builder's tests
    did not send: GET, several operations, odd Unicode variables, malformed
    representations, errors deep in a list."""
    refined, issued = chain.refined, chain.issued
    lots = "lots(first: 100) { edges { node { id parents { id owner { id } } } } }"
    two = f"query Cheap {{ __typename }} query Heavy {{ {lots} }} query Other {{ organization(id: \"x\") {{ id }} }}"
    odd = ["\U0001f600", "\u2028", "\x00", "\u202e" + refined[0], "a" * 300, "\ufeff", "\uffff"]
    reps = [{"__typename": "Lot", "id": refined[0]}, {"__typename": "Lot", "id": {"$ne": 1}}, {"__typename": "Lot", "id": 5},
            {"__typename": "Lot", "id": None}, {"__typename": None}, {}, [], "Lot", {"__typename": "Lot", "id": "x" * 5000},
            {"__typename": "Lot", "id": issued[0], "extra": [1, {"a": None}]}, {"__typename": "Attestation", "id": "\U0001f600"},
            *({"__typename": "Lot", "id": o} for o in odd)]
    return [
        ("GET", "{ %s }" % lots, None, None),
        ("POST", two, None, "Heavy"),
        ("GET", two, None, "Heavy"),
        ("POST", "query($o: ID) { lots(first: 100, owner: $o) { edges { node { id parents { id } } } } }", {"o": odd[0]}, None),
        ("POST", "query($o: ID, $p: ID, $q: ID, $r: ID) { a: lots(first: 30, owner: $o) { edges { node { id parents { id } } } } "
                 "b: lots(first: 30, owner: $p) { edges { node { id } } } c: lots(first: 30, owner: $q) { edges { node { id } } } "
                 "d: lots(first: 30, owner: $r) { edges { node { id } } } }",
         {"o": odd[1], "p": odd[2], "q": odd[3], "r": odd[6]}, None),
        ("POST", "query($r: [_Any!]!) { _entities(representations: $r) { ... on Lot { id parents { id } } } }",
         {"r": reps * 5}, None),  # 90 representations (the cap: 100)
        ("POST", "{ lots(first: 100) { edges { node { id claims(first: 10, after: \"nope\") { id } "
                 "parents { id claims(first: 0) { id } } } } } }", None, None),
        ("POST", "query($s: ID!, $a: ID) { site(id: $s) { attestations(first: 100, after: $a) { id site { attestations(first: 10, after: $a) { id } } } } }",
         {"s": chain.site_id, "a": "\U0001f600"}, None),
    ]  # fmt: skip


#: shapes whose odd identifiers are BAD_USER_INPUT before execution (resolvers.identifiers)
REFUSED_BEFORE_EXECUTION = {3, 4, 7}


@pytest.mark.parametrize("index", range(8))
@pytest.mark.parametrize("accept", [None, GR])
async def test_more_heavy_shapes_answer_as_in_the_loop(chain, heavy, in_loop, index, accept):
    import json

    method, query, variables, operation = _more_shapes(chain)[index]
    (h_client, h_app), (l_client, _) = heavy, in_loop
    processes = h_app.state.runtime.query_worker
    executed = processes.executions
    headers = {"accept": accept} if accept else {}
    params = {"query": query, **({"variables": json.dumps(variables)} if variables else {}),
              **({"operationName": operation} if operation else {})}  # fmt: skip
    if method == "GET":
        answers = [await c.get("/graphql", params=params, headers=headers) for c in (h_client, l_client)]
    else:
        body = json.dumps({**params, **({"variables": variables} if variables else {})})
        headers["content-type"] = "application/json"
        answers = [await c.post("/graphql", content=body, headers=headers) for c in (h_client, l_client)]
    same_answer(*answers)
    assert answers[0].status_code < 500 and b"Traceback" not in answers[0].content
    # heavy and executed in a process, but for odd identifiers refused before execution
    assert processes.executions - executed == (index not in REFUSED_BEFORE_EXECUTION), answers[0].text
