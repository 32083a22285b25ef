"""A 400 for a task request lists every problem of the body, each with its JSON path: every
field of a typed input, and the semantic problems together with the structural ones. The same
on the hot path, through Quart, and for a batch's item."""

import json

import pytest

from . import fns  # noqa: F401  (test functions: test_resize takes a typed input)

THREE_BAD_FIELDS = {"function": "test_resize", "contract": 1,
                    "input": {"width": "wide", "height": 0, "keep_ratio": "yes"}}
INPUT_PATHS = ["`$.input.width`", "`$.input.height`", "`$.input.keep_ratio`"]
# `priority` breaks the request's own type; mode, contract and the input break its rules.
BOTH_KINDS = {"function": "test_resize", "priority": "high", "mode": "bogus", "contract": 7,
              "input": {"width": 0}}


@pytest.fixture(params=["hot", "cold"])
async def srv(request, server_factory):
    return await server_factory(http={"hot_path": request.param == "hot"})


async def problems_of(srv, body) -> str:
    r = await srv.client.post("/task", json=body)
    assert r.status_code == 400, r.text
    return r.json()["error_message"]


async def test_every_field_of_a_typed_input_is_named(srv):
    message = await problems_of(srv, THREE_BAD_FIELDS)
    for path in INPUT_PATHS:
        assert message.count(path) == 1, message
    message = await problems_of(srv, {**THREE_BAD_FIELDS, "input": {}})  # both required fields missing
    assert "`height`" in message and "`width`" in message, message


async def test_semantic_problems_are_listed_with_structural_ones(srv):
    message = await problems_of(srv, BOTH_KINDS)
    for part in ("`$.priority`", "mode: unknown mode", "contract: function 'test_resize' has contract",
                 "`$.input.width`", "`height`"):
        assert part in message, (part, message)


async def test_a_broken_field_is_not_also_blamed_for_being_absent(srv):
    message = await problems_of(srv, {"function": "test_resize", "contract": "one", "input": {"width": 1, "height": 1}})
    assert "`$.contract`" in message and "contract: required" not in message, message
    message = await problems_of(srv, {"function": "echo", "contract": 1, "mode": "webhook",
                                      "webhook": {"url": "http://x.example/", "headers": {"X-A": 1}}})
    assert "`$.webhook.headers" in message and "webhook.url: required" not in message, message
    message = await problems_of(srv, {"function": "echo", "contract": 1, "priority": 0, "group": "nope"})
    assert "`$.priority`" in message and "group: function 'echo' is in group" in message, message


async def test_a_batch_item_lists_the_same_problems(srv):
    r = await srv.client.post("/tasks", json=[THREE_BAD_FIELDS, BOTH_KINDS])
    assert r.status_code == 200
    lines = sorted((json.loads(line) for line in r.text.splitlines()), key=lambda line: line["index"])
    single = [await problems_of(srv, THREE_BAD_FIELDS), await problems_of(srv, BOTH_KINDS)]
    for line, message in zip(lines, single):
        assert line["status"] == "rejected" and "; ".join(line["problems"]) in message, (line, message)
        assert line["problems"] and all(p in message for p in line["problems"])
