"""Heavy-query processes, found in review: an exception escaping graphql-core's
`execute` answers as in-loop Strawberry does. No assertion is timed."""

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
