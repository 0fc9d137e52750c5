"""Large request bodies decoded in child processes (api.body_decoding): the
outcome is exactly `loads_strict`'s in the server's own process, for every kind
of body; a child that dies or hangs while it decodes is killed and replaced and
its request answers a typed, retryable 503; the next large body is served.
No timing: a child is made to hang with SIGSTOP, and killed while the server
waits for it (the busy list says when)."""

from __future__ import annotations

import asyncio
import errno
import gc
import json
import linecache
import os
import pickle
import signal
import subprocess
import sys
import warnings

import httpx
import pytest

from api import body_decoding
from api.app import INLINE_BODY_BYTES, create_app
from api.body_decoding import BodyDecoder
from api.settings import Limits, Settings, SettingsError

JSON = {"content-type": "application/json"}

BODIES = {
    "object": json.dumps({"query": "{ __typename }", "variables": {"a": [1, 2.5, None, True, "x"]}}).encode(),
    "many small values": json.dumps({f"v{i}": [i, "x" * 8] for i in range(20_000)}).encode(),
    "long string": json.dumps({"s": "é\u2028" * 100_000}).encode(),
    "40-digit integer": b'{"n": ' + b"9" * 40 + b"}",
    "surrogate pair": b'{"a": "\\ud83d\\ude00"}',
    "array": b"[" + b",".join([b'"x"'] * 30_000) + b"]",
    "null": b"null",
    "not UTF-8": b'{"a": "\xff"}',
    "duplicate member": b'{"a": 1, "a": 2}',
    "lone surrogate": b'{"a": ["x", {"b": "\\udc00"}]}',
    "NaN": b'{"a": NaN}',
    "41-digit integer": b'{"a": ' + b"7" * 41 + b"}",
    "nested too deep": b"[" * 100_000 + b"]" * 100_000,
    "truncated": b'{"query": "{ __typename }"',
    "empty": b"",
}


#: the largest `max_body_values` a server accepts (its setting's upper bound)
MOST_VALUES = 1_000_000


def in_process(body: bytes, max_values: int = Limits().max_body_values) -> tuple[str, object]:
    """What a decoder process computes for `body`, computed in this process."""
    return body_decoding._decode_in_child(body, max_values)


@pytest.fixture(scope="module")
async def decoder():
    decoder = BodyDecoder(processes=2, timeout=60, max_values=Limits().max_body_values)
    yield decoder
    await decoder.close()


@pytest.mark.parametrize("name", BODIES)
async def test_a_decoder_process_gives_the_outcome_of_the_servers_own_decoding(decoder, name) -> None:
    body = BODIES[name]
    assert await decoder.decode(body) == in_process(body)


async def test_decoder_processes_serve_bodies_at_once_and_stop_on_close() -> None:
    decoder = BodyDecoder(processes=2, timeout=60, max_values=Limits().max_body_values)
    bodies = list(BODIES.values()) * 2
    outcomes = await asyncio.gather(*(decoder.decode(b) for b in bodies))
    assert outcomes == [in_process(b) for b in bodies]
    pids = decoder.pids()
    assert 1 <= len(pids) <= 2 and decoder.pids("busy") == []
    await decoder.close()
    assert decoder.pids() == []
    for pid in pids:
        with pytest.raises(ProcessLookupError):  # exited and reaped
            os.kill(pid, 0)


# --------------------------------------------------------------------------- through the app


LARGE = json.dumps({"query": "{ __typename }", "variables": {"unused": "x" * (INLINE_BODY_BYTES + 10)}}).encode()


@pytest.fixture
async def served(api_settings, store):
    """(app, client) with a 2 s decode timeout (a SIGSTOPped child hangs until killed)."""
    settings = api_settings.model_copy(update={"limits": Limits(body_decode_timeout_seconds=2.0)})
    app = create_app(settings, store=store)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test", timeout=120) as client:
        yield app, client
    await app.state.runtime.stop()


async def started_child(app, client) -> int:
    """The pid of the app's (one, idle) decoder process, started by one large body."""
    response = await client.post("/graphql", content=LARGE, headers=JSON)
    assert response.json() == {"data": {"__typename": "Query"}}
    (pid,) = app.state.runtime.body_decoder.pids("idle")
    return pid


async def until_busy(app, pid: int, request: asyncio.Task) -> None:
    """Until the child `pid` holds the request's body (the request cannot end before: the child is stopped)."""
    while pid not in app.state.runtime.body_decoder.pids("busy"):
        assert not request.done(), (await request).text
        await asyncio.sleep(0.01)


def assert_retryable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    error = response.json()["errors"][0]
    assert error["extensions"]["code"] == "SERVICE_UNAVAILABLE" and "body decoder process" in error["message"]
    assert int(response.headers["retry-after"]) > 0


def dead(pid: int) -> bool:
    """Exited: gone, or a zombie not yet reaped (Linux /proc/<pid>/stat state Z or X)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


@pytest.mark.parametrize(
    "death",
    [
        [signal.SIGKILL],  # killed (the kernel's OOM killer sends this)
        [signal.SIGTERM, signal.SIGCONT],  # terminated
        [signal.SIGSEGV, signal.SIGCONT],  # a crash in native code
    ],
    ids=["SIGKILL", "SIGTERM", "SIGSEGV"],
)
async def test_a_decoder_process_dying_mid_body_gives_a_retryable_503_and_is_replaced(served, death) -> None:
    app, client = served
    pid = await started_child(app, client)
    os.kill(pid, signal.SIGSTOP)  # it takes the next body and sits on it
    request = asyncio.create_task(client.post("/graphql", content=LARGE, headers=JSON))
    await until_busy(app, pid, request)
    for sig in death:
        os.kill(pid, sig)
    assert_retryable(await request)
    assert dead(pid) and app.state.runtime.body_decoder.pids() == []
    retried = await client.post("/graphql", content=LARGE, headers=JSON)
    assert retried.json() == {"data": {"__typename": "Query"}}
    assert app.state.runtime.body_decoder.pids() not in ([], [pid])


def padded(body: bytes) -> bytes:
    """The same JSON text with trailing whitespace, past the inline threshold."""
    return body + b" " * (INLINE_BODY_BYTES + 10)


@pytest.mark.parametrize(
    "body",
    [
        b'{"query": "{ __typename }"}',
        b'{"query": "{ __typename }", "variables": {"a": NaN}}',
        b'{"query": "{ __typename }", "query": "{ x }"}',
    ],
    ids=["valid", "NaN", "duplicate member"],
)
async def test_a_hung_decoder_process_is_killed_at_the_timeout_and_replaced(served, body) -> None:
    app, client = served
    pid = await started_child(app, client)
    os.kill(pid, signal.SIGSTOP)  # never continued: only the watchdog ends it
    assert_retryable(await client.post("/graphql", content=padded(body), headers=JSON))
    assert dead(pid)
    expected = await client.post("/graphql", content=body, headers=JSON)  # small: decoded inline
    retried = await client.post("/graphql", content=padded(body), headers=JSON)
    assert (retried.status_code, retried.json()) == (expected.status_code, expected.json())
    assert app.state.runtime.body_decoder.pids() not in ([], [pid])


async def test_a_decoder_process_that_died_while_idle_is_replaced_without_an_error(served) -> None:
    app, client = served
    pid = await started_child(app, client)
    os.kill(pid, signal.SIGKILL)
    while not dead(pid):
        await asyncio.sleep(0.01)
    response = await client.post("/graphql", content=LARGE, headers=JSON)
    assert response.json() == {"data": {"__typename": "Query"}}
    assert app.state.runtime.body_decoder.pids() not in ([], [pid])


@pytest.mark.parametrize("error", [errno.EAGAIN, errno.ENOMEM, errno.EMFILE], ids=errno.errorcode.get)
async def test_a_decoder_process_that_cannot_start_gives_a_retryable_503(served, monkeypatch, error) -> None:
    app, client = served

    def cannot_start(*_args):
        raise OSError(error, os.strerror(error))  # what Popen raises at a process, memory or file limit

    with monkeypatch.context() as patched:
        patched.setattr(body_decoding, "_Child", cannot_start)
        response = await client.post("/graphql", content=LARGE, headers=JSON)
    assert response.status_code == 503 and response.json()["errors"][0]["extensions"]["code"] == "SERVICE_UNAVAILABLE"
    assert "could be started" in response.json()["errors"][0]["message"] and int(response.headers["retry-after"]) > 0
    assert app.state.runtime.body_decoder.pids() == []
    assert (await client.post("/graphql", content=LARGE, headers=JSON)).json() == {"data": {"__typename": "Query"}}


# --------------------------------------------------------------------------- leftovers of a lost child


def stopped_then(ending: str, decoder: BodyDecoder) -> None:
    """Stop `decoder`'s idle child (it takes the next body and sits on it); `ending`: who ends it."""
    (pid,) = decoder.pids("idle")
    os.kill(pid, signal.SIGSTOP)
    if ending == "killed":
        async def kill_when_busy() -> None:
            while pid not in decoder.pids("busy"):
                await asyncio.sleep(0.01)
            os.kill(pid, signal.SIGKILL)

        return asyncio.ensure_future(kill_when_busy())
    return None  # "timeout": the watchdog kills it


@pytest.mark.parametrize("ending", ["killed", "timeout"])
async def test_a_lost_decoder_process_leaves_no_pipe_open(ending) -> None:
    decoder = BodyDecoder(processes=1, timeout=1.0, max_values=Limits().max_body_values)
    try:
        assert await decoder.decode(b"{}") == ("ok", {})
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for body in (b"[" + b"1," * 100_000 + b"1]", b'{"a": 1}'):
                killer = stopped_then(ending, decoder)
                with pytest.raises(body_decoding.BodyDecoderUnavailable):
                    await decoder.decode(body)
                if killer is not None:
                    await killer
                assert await decoder.decode(body) == in_process(body)  # replaced
            gc.collect()
        unclosed = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
        assert unclosed == []
    finally:
        await decoder.close()


@pytest.mark.parametrize("body", [b'{"a": [1, 2]}', b'{"a": 1, "a": 2}', b"[" * 100 + b"]" * 100])
def test_a_decoder_process_whose_server_is_gone_exits_without_a_traceback(body) -> None:
    """The server died while the child decoded (its answer meets a closed pipe): it exits quietly."""
    child = subprocess.Popen(
        [sys.executable, "-m", "api.body_decoding", str(Limits().max_body_values)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    child.stdout.close()  # the server's end of the answers, gone
    request = pickle.dumps(body)  # one frame (supervision.children): 4-byte length || pickle
    child.stdin.write(len(request).to_bytes(4, "big") + request)
    child.stdin.close()
    assert child.wait(60) == 0
    assert child.stderr.read() == b""
    child.stderr.close()


@pytest.mark.parametrize("value", ["inf", "601", "1e9", "0", "nan"])
def test_an_unbounded_decode_timeout_is_refused_at_startup(value) -> None:
    with pytest.raises(SettingsError, match="body_decode_timeout_seconds"):
        Settings.from_env({"ORETRACE_BODY_DECODE_TIMEOUT_SECONDS": value, "ORETRACE_ROOT_PUBLIC_KEY": "ab" * 32})


@pytest.mark.parametrize("value", [str(2**31), str((1 << 30) + 1), "9" * 30])
def test_a_body_limit_beyond_what_a_decoder_frame_holds_is_refused_at_startup(value) -> None:
    """A body of 2 GiB or more cannot go to its decoder process (Child.send: ValueError),
    and a decoded value over 1 GiB cannot come back: ORETRACE_MAX_BODY_BYTES stops at 1 GiB."""
    assert Settings.from_env({"ORETRACE_MAX_BODY_BYTES": str(1 << 30)}).limits.max_body_bytes == 1 << 30
    with pytest.raises(SettingsError, match="max_body_bytes"):
        Settings.from_env({"ORETRACE_MAX_BODY_BYTES": value, "ORETRACE_ROOT_PUBLIC_KEY": "ab" * 32})


@pytest.mark.parametrize("error", ["ValueError", "KeyboardInterrupt"])
async def test_a_decoder_process_is_not_left_busy_by_an_unforeseen_error(monkeypatch, error) -> None:
    """Any exception out of an exchange other than a lost child (a body over a frame:
    ValueError from Child.send; an interrupt) ends that child: before, it stayed in the
    busy set for good, alive, never reused nor stopped by close()."""
    from supervision import children

    decoder = BodyDecoder(processes=1, timeout=60, max_values=Limits().max_body_values)
    try:
        assert await decoder.decode(b"{}") == ("ok", {})
        [pid] = decoder.pids()
        if error == "ValueError":
            monkeypatch.setattr(children, "MAX_MESSAGE_BYTES", 100)
            body = b'{"a": "' + b"x" * 200 + b'"}'
        else:
            def interrupted(self, *args):
                raise KeyboardInterrupt

            monkeypatch.setattr(body_decoding._Child, "recv", interrupted)
            body = b'{"a": 1}'
        with pytest.raises(ValueError if error == "ValueError" else KeyboardInterrupt):
            decoder._decode(body)  # in this thread: an interrupt must not reach the event loop
        assert decoder.pids("busy") == []
        monkeypatch.undo()
        assert await decoder.decode(body) == in_process(body)  # a fresh child
        assert pid not in decoder.pids()
    finally:
        await decoder.close()


# --------------------------------------------------------------------------- rebuilding the value in the server

CONTAINER_BODIES = {
    "nested empty lists": b"[" + b",".join([b"[[[[]]]]"] * 40_000) + b"]",
    "empty objects": b"[" + b",".join([b"{}"] * 100_000) + b"]",
    "objects of lists": b"{" + b",".join(b'"k%d": [[1], {"a": []}]' % i for i in range(20_000)) + b"}",
}


@pytest.fixture(scope="module")
async def decoder_at_most_values():
    """A decoder at the largest value count a server may be set to accept: its rebuilds are the longest."""
    decoder = BodyDecoder(processes=1, timeout=60, max_values=MOST_VALUES)
    yield decoder
    await decoder.close()


@pytest.mark.parametrize("name", CONTAINER_BODIES)
async def test_no_cyclic_collection_runs_while_the_server_rebuilds_a_decoded_body(decoder_at_most_values, name) -> None:
    """Each collection the unpickling's allocations would trigger holds the GIL (and so the
    event loop) inside that one C call; none runs there, and the collector is on afterwards."""
    during_rebuild: list[int] = []

    def seen(phase: str, info: dict) -> None:
        caller = sys._getframe(1)  # the Python frame whose C call allocated
        if phase == "start" and caller.f_code.co_filename == body_decoding.__file__:
            if "pickle.loads(" in linecache.getline(caller.f_code.co_filename, caller.f_lineno):
                during_rebuild.append(info["generation"])

    gc.callbacks.append(seen)
    try:
        body = CONTAINER_BODIES[name]
        assert await decoder_at_most_values.decode(body) == in_process(body, MOST_VALUES)
    finally:
        gc.callbacks.remove(seen)
    assert during_rebuild == [] and gc.isenabled()


def test_the_collector_pause_ends_with_the_last_thread_and_keeps_a_disabled_collector_off() -> None:
    paused = body_decoding._cyclic_gc_paused
    first, second = paused(), paused()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)
    assert not gc.isenabled()  # the second is still rebuilding
    second.__exit__(None, None, None)
    assert gc.isenabled()
    gc.disable()
    try:
        with paused():
            pass
        assert not gc.isenabled()  # an application that turned it off keeps it off
    finally:
        gc.enable()
