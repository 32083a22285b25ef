"""Every number a request can carry has a documented range, and out of range is a 400 of the
family's shape that writes nothing (issue 13, item 3); a 400 lists every problem (item 4)."""

from __future__ import annotations

from typing import Any

KEY = "ranges-key"


def _numbers_without_range(schema: Any, components: dict, where: str, seen: set[str]) -> list[str]:
    """Paths of integer/number schemas reachable from `schema` that lack a minimum or maximum."""
    if isinstance(schema, list):
        return [p for i, s in enumerate(schema) for p in _numbers_without_range(s, components, f"{where}[{i}]", seen)]
    if not isinstance(schema, dict):
        return []
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        if name in seen:
            return []
        seen.add(name)
        return _numbers_without_range(components[name], components, name, seen)
    missing = []
    if schema.get("type") in ("integer", "number") and not ("minimum" in schema and "maximum" in schema):
        missing.append(where)
    for key in ("anyOf", "oneOf", "allOf", "prefixItems"):
        if key in schema:
            missing += _numbers_without_range(schema[key], components, where, seen)
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            missing += _numbers_without_range(schema[key], components, f"{where}[]", seen)
    for name, prop in schema.get("properties", {}).items():
        missing += _numbers_without_range(prop, components, f"{where}.{name}", seen)
    return missing


async def test_openapi_shows_a_range_for_every_number_in_every_request(server):
    spec = (await server.client.get("/openapi")).json()
    components = spec["components"]["schemas"]
    missing, checked = [], 0
    for path, operations in spec["paths"].items():
        for method, op in operations.items():
            for param in op.get("parameters", []):
                missing += [f"{method.upper()} {path} ?{m}" for m in
                            _numbers_without_range(param["schema"], components, param["name"], set())]
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
            if body is not None:
                checked += 1
                missing += [f"{method.upper()} {path} body {m}" for m in
                            _numbers_without_range(body, components, "$", set())]
    assert checked >= 8
    assert not missing, "numbers without a documented range:\n" + "\n".join(missing)
    register = components["RegisterRequest"]["properties"]["timeout"]["anyOf"][0]
    assert register["minimum"] == 1 and register["maximum"] <= 2**63 - 1
    assert components["CreateJob"]["properties"]["start_block"]["maximum"] <= 2**62 // 12


async def test_a_huge_worker_timeout_is_a_400_and_registers_nothing(server):
    c = server.client
    r = await c.post("/workers.register", json={"worker": "w-huge", "timeout": 99999999999999999999})
    assert r.status_code == 400, r.text
    meta = r.json()["meta"]
    assert meta["result_code"] == 400 and "$.timeout" in meta["result_msg"]
    r = await c.post("/workers.register", json={"worker": "w-big", "timeout": 2**62})
    assert r.status_code == 400, r.text
    assert (await c.get("/workers/w-huge")).status_code == 404
    assert (await c.get("/workers/w-big")).status_code == 404
    listed = [w["node_id"] for w in (await c.get("/workers")).json()["workers"]]
    assert "w-huge" not in listed and "w-big" not in listed
    assert (await c.post("/workers.register", json={"worker": "w-fine", "timeout": 3600})).status_code == 200


async def test_out_of_range_numbers_in_status_reports_and_stats_are_400s(server):
    c = server.client
    r = await c.post("/workers.status_report", json={
        "worker": "w-stats", "timestamp": 1e300, "machine_stats": {"cpu_usage": [1e300], "memory_used": -1e300}})
    assert r.status_code == 400, r.text
    problems = r.json()["meta"]["error_data"]["problems"]
    assert {"$.timestamp", "$.machine_stats.cpu_usage[0]", "$.machine_stats.memory_used"} <= {
        p.rsplit("`", 2)[-2] for p in problems}, problems
    assert (await c.get("/workers/w-stats")).status_code == 404
    r = await c.post("/workers.get_stats", json={"from_date": 0, "to_date": 1e300, "interval": 2**70,
                                                 "items": [{"key": "cpu_usage"}]})
    assert r.status_code == 400 and len(r.json()["meta"]["error_data"]["problems"]) == 2, r.text


async def test_block_ranges_the_dataset_cannot_hold_are_400s_and_create_no_job(server):
    c = server.client
    for body in ({"start_block": 0, "end_block": 2**62}, {"start_block": 2**62 - 10, "end_block": 2**62},
                 {"start_block": 2**63}):
        r = await c.post("/jobs", json={"dataset": "example/blocks@1.0.0", **body})
        assert r.status_code == 400 and r.json()["error_code"] == "INVALID_REQUEST", (body, r.text)
        assert "_block" in r.json()["error_message"]
    assert (await c.get("/jobs", params={"status": "all"})).json()["jobs"] == []


async def test_id_zero_is_no_job_id(server):
    for method, path in (("GET", "/jobs/0"), ("GET", "/jobs/0/progress"), ("PUT", "/jobs/0/stop"),
                         ("DELETE", "/jobs/0"), ("GET", "/jobs/-1"), ("GET", "/jobs/00")):
        r = await server.client.request(method, path)
        assert r.status_code == 400 and r.json()["error_code"] == "INVALID_JOB_ID", (method, path, r.text)


async def test_a_400_lists_every_problem_in_each_family(server):
    c = server.client
    templates = (await c.get("/v1/templates")).json()
    counter = next(t["templateId"] for t in templates if t["name"] == "counter")
    r = await c.post(f"/v1/templates/{counter}/workers", json={"name": "multi", "args": [1], "env": [["A", 2]]})
    assert r.status_code == 400, r.text
    errors = r.json()["errors"]
    assert len(errors) == 2 and "$.args[0]" in errors[0] and "$.env[0][1]" in errors[1], errors
    r = await c.post(f"/v1/templates/{counter}/workers", json={"args": ["a", 2, 3], "env": {"A": "x", "B": 1}})
    assert len(r.json()["errors"]) == 4, r.text  # name missing, args[1], args[2], env.B
    assert (await c.get(f"/v1/templates/{counter}/workers/multi")).status_code == 404

    r = await c.post("/jobs", json={"dataset": 5, "start_block": -1, "end_block": "x"})
    assert r.status_code == 400 and r.json()["error_code"] == "INVALID_REQUEST"
    for field in ("$.dataset", "$.start_block", "$.end_block"):
        assert field in r.json()["error_message"], r.text

    r = await c.post("/workers.register", json={"worker": 1, "timeout": 0, "tags": ["a", 2]})
    problems = r.json()["meta"]["error_data"]["problems"]
    assert r.status_code == 400 and len(problems) == 3, problems

    r = await c.post("/task", json={"function": 1, "priority": 0, "contract": -1})
    assert r.status_code == 400
    for field in ("$.function", "$.priority", "$.contract"):
        assert field in r.json()["error_message"], r.text


async def test_query_strings_list_every_problem_too(server):
    r = await server.client.get("/jobs", params={"limit": "-1", "zzz": "1"})
    assert r.status_code == 400 and r.json()["error_code"] == "INVALID_QUERY"
    templates = (await server.client.get("/v1/templates")).json()
    counter = next(t["templateId"] for t in templates if t["name"] == "counter")
    await server.client.post(f"/v1/templates/{counter}/workers", json={"name": "q"})
    r = await server.client.post(f"/v1/templates/{counter}/workers/q/interrupt",
                                 params={"recover-immediately": "maybe", "recovery-immediately": "perhaps"})
    assert r.status_code == 400 and len(r.json()["errors"]) == 2, r.text


async def test_service_rules_of_the_reporting_api_are_listed_together(server_factory):
    srv = await server_factory(http={"max_tags": 2})
    r = await srv.client.post("/workers.register", json={"worker": "9bad", "tags": ["a", "b", "c"]})
    assert r.status_code == 400, r.text
    problems = r.json()["meta"]["error_data"]["problems"]
    assert len(problems) == 2 and "9bad" in problems[0] and "tags" in problems[1], problems


async def test_numbers_out_of_any_range_are_400s(server):
    c = server.client
    r = await c.post("/workers.get_stats", content=b'{"from_date": 1e400, "to_date": 1, "interval": 1, "items": []}')
    assert r.status_code == 400, r.text
    r = await c.post("/jobs", content=b'{"dataset": "example/blocks@1.0.0", "start_block": 1e400, "end_block": -1e999}')
    assert r.status_code == 400 and r.json()["error_code"] == "INVALID_REQUEST", r.text
