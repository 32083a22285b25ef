"""`GET /metrics`: the families are there, in the Prometheus text format, and move under load."""

from functools import partial

import trio
from prometheus_client.parser import text_string_to_metric_families

from amp_runtime.observability.metrics import RATE_WINDOW_S, _Rolling, _Sample, cumulative_buckets
from amp_runtime.tasks.worker import DURATION_BUCKETS_S

from ..helpers import wait_until
from ..pg import on_both_stores


async def scrape(client) -> dict[str, list]:
    """{sample name: [(labels, value), ...]} of one scrape."""
    r = await client.get("/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples: dict[str, list] = {}
    for family in text_string_to_metric_families(r.text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def value(samples, name, **labels) -> float:
    matching = [v for lab, v in samples.get(name, []) if all(lab.get(k) == w for k, w in labels.items())]
    assert matching, f"no sample {name}{labels} in {sorted(samples)}"
    return sum(matching)


def test_cumulative_buckets():
    counts = [0] * (len(DURATION_BUCKETS_S) + 1)
    counts[0], counts[3], counts[-1] = 2, 1, 4
    buckets = cumulative_buckets(counts)
    assert buckets[0] == ("0.001", 2)
    assert buckets[3] == ("0.05", 3)
    assert buckets[-1] == ("+Inf", 7)
    assert [c for _, c in buckets] == sorted(c for _, c in buckets)


def test_rolling_window_keeps_the_oldest_sample_within_the_window():
    rolling = _Rolling()
    assert rolling.add(_Sample(0.0, 0, 0, 0)).at == 0.0
    assert rolling.add(_Sample(1.0, 1, 1, 10)).at == 0.0
    assert rolling.add(_Sample(RATE_WINDOW_S + 5, 2, 2, 20)).at == 1.0


async def test_metrics_need_the_key(server_factory):
    srv = await server_factory(auth={"api_key": "sekrit"})
    r = await srv.client.get("/metrics", headers={"Authorization": "wrong"})
    assert r.status_code == 401 and r.json()["error_code"] == "UNAUTHORIZED"
    assert (await srv.client.get("/metrics")).status_code == 200


async def test_task_families_move_under_load(server):
    before = await scrape(server.client)
    for family in ("amp_uptime_seconds", "process_cpu_seconds_total", "amp_worker_slots", "amp_worker_slots_busy", "amp_worker_queue_length",
                   "amp_worker_maintenance", "amp_store_commits_total", "amp_store_writes_total",
                   "amp_store_last_batch_size", "amp_store_last_commit_seconds", "amp_store_batch_size_recent",
                   "amp_task_duration_seconds_count", "amp_webhook_deliveries_total"):
        assert family in before, family
    assert value(before, "amp_worker_slots", worker="worker-01") == 10
    assert value(before, "amp_worker_slots_busy", worker="worker-01") == 0

    async with trio.open_nursery() as nursery:
        nursery.start_soon(partial(server.client.post, "/task", json={"function": "sleep", "contract": 1, "input": {"ms": 800}}))

        async def busy():
            return value(await scrape(server.client), "amp_worker_slots_busy", worker="worker-01") == 1

        await wait_until(busy, timeout=5)
        for _ in range(5):
            assert (await server.client.post("/task", json={"function": "echo", "contract": 1, "input": 1})).status_code == 200
        assert (await server.client.post("/task", json={"function": "fail", "contract": 1, "input": {}})).status_code == 500

    after = await scrape(server.client)
    assert value(after, "amp_tasks_total", function="echo", mode="sync", status="completed") == 5
    assert value(after, "amp_tasks_total", function="fail", status="failed") == 1
    assert value(after, "amp_tasks_total", function="sleep", status="completed") == 1
    assert value(after, "amp_task_duration_seconds_count", worker="worker-01") == 7
    assert value(after, "amp_task_duration_seconds_sum", worker="worker-01") >= 0.8
    le_1s = value(after, "amp_task_duration_seconds_bucket", worker="worker-01", le="1.0")
    le_inf = value(after, "amp_task_duration_seconds_bucket", worker="worker-01", le="+Inf")
    assert le_1s == le_inf == 7  # cumulative: the 0.8 s sleep is in le=1.0 and above
    assert value(after, "amp_task_duration_seconds_bucket", worker="worker-01", le="0.5") == 6
    assert value(after, "amp_worker_slots_busy", worker="worker-01") == 0
    # Labels stay bounded: no task ids anywhere.
    assert all(set(labels) <= {"worker", "function", "mode", "status", "outcome", "le"}
               for name, samples in after.items() if name.startswith("amp_") for labels, _ in samples)


@on_both_stores
async def test_job_and_store_families_move(server):
    before = await scrape(server.client)
    r = await server.client.post("/jobs", json={"dataset": "example/blocks@1.0.0", "start_block": 0, "end_block": 2000})
    assert r.status_code == 201, r.text
    job_id = r.json()["id"]

    async def completed():
        return (await server.client.get(f"/jobs/{job_id}")).json()["status"] == "Completed"

    await wait_until(completed, timeout=30, interval=0.05)
    after = await scrape(server.client)
    assert value(after, "amp_jobs", status="Completed") == 1
    assert value(after, "amp_job_blocks_extracted") == 2001
    assert value(after, "amp_job_progress_blocks_per_second") > 0
    assert value(after, "amp_store_commits_total") > value(before, "amp_store_commits_total")
    assert value(after, "amp_store_writes_total") > value(before, "amp_store_writes_total")
    assert value(after, "amp_store_last_batch_size") >= 1


async def test_durable_invocations_read_from_the_service(server):
    # The durable service publishes a plain dict outcome -> count; stand in for its invocations.
    server.runtime.services.durable.invocation_outcomes = {"completed": 3, "failed": 1}
    samples = await scrape(server.client)
    assert value(samples, "amp_durable_invocations_total", outcome="completed") == 3
    assert value(samples, "amp_durable_invocations_total", outcome="failed") == 1


async def test_openapi_lists_the_observability_routes(server):
    paths = (await server.client.get("/openapi")).json()["paths"]
    assert "/metrics" in paths and "/ui" in paths and "/ui/api/overview" in paths


@on_both_stores
async def test_every_job_status_is_exported_even_at_zero(server):
    samples = await scrape(server.client)
    statuses = {labels["status"] for labels, _ in samples["amp_jobs"]}
    assert statuses == {"Scheduled", "Running", "Completed", "Stopped", "StopRequested", "Stopping", "Failed"}
    assert value(samples, "amp_jobs") == 0
