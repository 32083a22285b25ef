"""Property: no request that passes the structs' validation can make the server fail (issue 13).

Values are generated from each request struct's own types and ranges (msgspec's type info, the
same source as `/openapi`), kept only when msgspec accepts them as JSON, and sent to a real
server process over HTTP. Whatever the service then decides (200, 400 for a semantic rule,
404, 409), it never answers 5xx, and a job accepted with such a range never fails on it.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from typing import Any

import httpx
import msgspec
import msgspec.inspect as mi
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from amp_runtime.durable.models import CompleteParameters, InvokeParameters
from amp_runtime.durable.templates import template_id_for
from amp_runtime.jobs import builtin  # noqa: F401  registers example/blocks@1.0.0
from amp_runtime.jobs.datasets import resolve
from amp_runtime.jobs.extractor import batches, open_private_connection, write_file
from amp_runtime.jobs.models import CreateJob, ListJobsQuery
from amp_runtime.registry.models import (
    ActivityRequest,
    LoginQuery,
    RegisterRequest,
    StatsRequest,
    StatusReportRequest,
    WorkersFilter,
)
from amp_runtime.tasks.models import TaskRequest

EXAMPLES = settings(max_examples=40, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                           HealthCheck.filter_too_much])
DATASET = "example/blocks@1.0.0"
WORKER_ID = st.uuids().map(lambda u: f"w-{u.hex[:16]}")  # valid and fresh: reaches the store

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


def _bound(low: Any, exclusive_low: Any, step: int | float) -> Any:
    return low if low is not None else (None if exclusive_low is None else exclusive_low + step)


def strategy_for(t: mi.Type, overrides: dict[str, st.SearchStrategy]) -> st.SearchStrategy:
    """JSON values of type `t`, within its ranges and sizes (`overrides` by field name)."""
    match t:
        case mi.Metadata():
            return strategy_for(t.type, overrides)
        case mi.IntType():
            return st.integers(_bound(t.ge, t.gt, 1), _bound(t.le, t.lt, -1))
        case mi.FloatType():
            return st.floats(_bound(t.ge, t.gt, 0), _bound(t.le, t.lt, 0), allow_nan=False, allow_infinity=False,
                             exclude_min=t.gt is not None, exclude_max=t.lt is not None)
        case mi.StrType():
            return st.text(min_size=t.min_length or 0, max_size=min(t.max_length or 12, 12))
        case mi.BoolType():
            return st.booleans()
        case mi.NoneType():
            return st.none()
        case mi.LiteralType():
            return st.sampled_from(t.values)
        case mi.AnyType():
            return JSON_VALUES
        case mi.ListType() | mi.VarTupleType() | mi.SetType():
            return st.lists(strategy_for(t.item_type, overrides), min_size=t.min_length or 0,
                            max_size=min(t.max_length or 4, 4))
        case mi.TupleType():
            return st.tuples(*(strategy_for(i, overrides) for i in t.item_types)).map(list)
        case mi.DictType():
            return st.dictionaries(strategy_for(t.key_type, overrides), strategy_for(t.value_type, overrides),
                                   max_size=3)
        case mi.UnionType():
            return st.one_of(*(strategy_for(u, overrides) for u in t.types))
        case mi.StructType():
            fields = {f.encode_name: overrides[f.encode_name] if f.encode_name in overrides
                      else strategy_for(f.type, overrides) for f in t.fields}
            required = {f.encode_name for f in t.fields if f.required or f.encode_name in overrides}
            return st.fixed_dictionaries({k: v for k, v in fields.items() if k in required},
                                         optional={k: v for k, v in fields.items() if k not in required})
    raise TypeError(f"no strategy for {t!r}")


def valid(struct: type, **overrides: st.SearchStrategy) -> st.SearchStrategy:
    """Bodies that msgspec's JSON decoder accepts for `struct`: the server's door lets them in."""

    def accepted(body: dict) -> bool:
        try:
            msgspec.json.decode(msgspec.json.encode(body), type=struct)
        except msgspec.ValidationError:
            return False
        return True

    return strategy_for(mi.type_info(struct), overrides).filter(accepted)


def query_params(body: dict) -> dict[str, str]:
    return {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in body.items() if v is not None}


# -- one real server for the module ---------------------------------------------------------
@pytest.fixture(scope="module")
def base_url(tmp_path_factory):
    data = tmp_path_factory.mktemp("ranges")
    proc = subprocess.Popen(
        [sys.executable, "-m", "amp_runtime", "serve", "--bind", "127.0.0.1:0", "--data-dir", str(data / "d")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, "AMP_JOBS_BATCH_BLOCKS": "100"},
    )
    output = b""
    deadline = time.monotonic() + 60
    while (match := re.search(rb"listening on (http://\S+)", output)) is None:
        line = proc.stdout.readline()
        assert line and time.monotonic() < deadline, output.decode(errors="replace")
        output += line
    # Keep draining the log so the server never blocks on a full pipe; keep it for failures.
    log = data / "server.log"
    drain = subprocess.Popen(["cat"], stdin=proc.stdout, stdout=log.open("wb"))
    yield match.group(1).decode()
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)
    drain.wait(timeout=10)
    assert b"Traceback" not in log.read_bytes(), log.read_text(errors="replace")[-4000:]


@pytest.fixture(scope="module")
def client(base_url):
    with httpx.Client(base_url=base_url, timeout=30) as c:
        yield c


def no_server_error(response: httpx.Response, *allowed: int) -> None:
    assert response.status_code < 500, f"{response.status_code}: {response.text}"
    if allowed:
        assert response.status_code in allowed, f"{response.status_code}: {response.text}"


# -- registry reporting ---------------------------------------------------------------------
@EXAMPLES
@given(body=valid(RegisterRequest, worker=WORKER_ID))
def test_register(client, body):
    response = client.post("/workers.register", json=body)
    no_server_error(response, 200, 400)
    listed = client.get(f"/workers/{body['worker']}").status_code
    assert listed == (200 if response.status_code == 200 else 404)  # a refusal writes nothing


@EXAMPLES
@given(body=valid(StatusReportRequest, worker=WORKER_ID))
def test_status_report_then_stats_over_everything(client, body):
    no_server_error(client.post("/workers.status_report", json=body), 200, 400)
    items = [{"key": "cpu_usage", "aggregation": a} for a in ("avg", "min", "max")] + [{"key": "memory_used"}]
    stats = client.post("/workers.get_stats", json={"from_date": 0, "to_date": 1e13, "interval": 10**9,
                                                    "items": items, "split_by_variant": True})
    no_server_error(stats, 200)


@EXAMPLES
@given(body=valid(WorkersFilter))
def test_worker_filters(client, body):
    no_server_error(client.post("/workers.get_all", json=body), 200, 400)
    no_server_error(client.post("/workers.get_count", json=body), 200, 400)


@EXAMPLES
@given(body=valid(StatsRequest, items=st.lists(st.fixed_dictionaries(
    {"key": st.sampled_from(["cpu_usage", "memory_used", "gpu_temperature"]),
     "aggregation": st.sampled_from(["avg", "min", "max"])}), min_size=1, max_size=3)))
def test_stats(client, body):
    no_server_error(client.post("/workers.get_stats", json=body), 200, 400)


@EXAMPLES
@given(body=valid(ActivityRequest))
def test_activity(client, body):
    no_server_error(client.post("/workers.get_activity_report", json=body), 200, 400)


@EXAMPLES
@given(query=valid(LoginQuery))
def test_login(client, query):
    no_server_error(client.get("/auth.login", params=query_params(query), auth=("a", "b")), 200)


# -- jobs ----------------------------------------------------------------------------------
@settings(EXAMPLES, max_examples=25)
@given(body=valid(CreateJob, dataset=st.just(DATASET), node_id=st.none()))
def test_block_ranges_that_pass_make_files(body, tmp_path_factory):
    """The first and last batch of any accepted range write their files (where overflow was)."""
    spec = resolve(DATASET)
    start, end = body.get("start_block", 0), body.get("end_block")
    if end is not None and end < start:
        return  # the service's 400
    grid = batches(start, end, 1000)
    edges = [next(grid)]
    if end is not None:
        edges.append((start + (end - start) // 1000 * 1000, end))
    root = tmp_path_factory.mktemp("blocks")
    conn = open_private_connection()
    try:
        for first, last in edges:
            for table in spec.tables:
                assert write_file(conn, root, spec, table, first, last) > 0
    finally:
        conn.close()


@settings(EXAMPLES, max_examples=25)
@given(body=valid(CreateJob, dataset=st.just(DATASET), node_id=st.none()))
def test_jobs_accepted_with_such_ranges_never_fail(client, body):
    response = client.post("/jobs", json=body)
    no_server_error(response, 201, 400)
    if response.status_code != 201:
        return
    job_id = response.json()["id"]
    no_server_error(client.put(f"/jobs/{job_id}/stop"), 200)
    deadline = time.monotonic() + 30
    while (job := client.get(f"/jobs/{job_id}").json())["status"] not in ("Stopped", "Completed", "Failed"):
        assert time.monotonic() < deadline, job
        time.sleep(0.02)
    assert job["status"] != "Failed", job


@EXAMPLES
@given(query=valid(ListJobsQuery, last_job_id=st.integers(1, 2**63 - 1).map(str) | st.none(),
                   status=st.sampled_from(["all", "running", "terminal"]) | st.none()))
def test_list_jobs(client, query):
    no_server_error(client.get("/jobs", params=query_params(query)), 200, 400)


# -- durable workers and tasks --------------------------------------------------------------
@pytest.fixture(scope="module")
def durable_workers(client):
    for template, name in (("approval", "prop-a"), ("counter", "prop-c")):
        no_server_error(client.post(f"/v1/templates/{template_id_for(template)}/workers", json={"name": name}), 200)
    return {t: f"/v1/templates/{template_id_for(t)}/workers/{n}" for t, n in (("approval", "prop-a"), ("counter", "prop-c"))}


@EXAMPLES
@given(body=valid(CompleteParameters))
def test_complete(client, durable_workers, body):
    no_server_error(client.post(durable_workers["approval"] + "/complete", json=body), 200, 404)


@EXAMPLES
@given(body=valid(InvokeParameters), function=st.sampled_from(["add", "get"]))
def test_invoke_and_await(client, durable_workers, body, function):
    path = durable_workers["counter"]
    key = client.post(path + "/key").json()["value"]
    response = client.post(path + "/invoke-and-await", params={"invocation-key": key, "function": function}, json=body)
    no_server_error(response, 200, 400)


@EXAMPLES
@given(body=valid(TaskRequest, function=st.just("hello"), mode=st.just("sync"), webhook=st.none(),
                  worker=st.none(), group=st.none(), input=st.fixed_dictionaries({})))
def test_task(client, body):
    no_server_error(client.post("/task", json=body), 200, 400)
