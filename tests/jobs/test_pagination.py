"""GET /jobs over 2,500 jobs: every filter, cursor pages that never skip or repeat."""

from amp_runtime.core.clock import utcnow
from amp_runtime.jobs import store as jobs_store
from amp_runtime.jobs.states import ACTIVE, STATUSES

from ..pg import on_both_stores

pytestmark = on_both_stores  # every test here runs on DuckDB and on PostgreSQL

TOTAL = 2500


async def seed(server, count: int, offset: int = 0) -> dict[int, str]:
    """Insert jobs straight through the store (fast); every read below goes over HTTP."""
    rows = [
        (f"seed/ds{offset + i}@1", 0, 100, "worker-01", STATUSES[(offset + i) % len(STATUSES)], 10)
        for i in range(count)
    ]
    ids = await server.runtime.store.write(jobs_store.insert_jobs_bulk, rows, utcnow())
    return {job_id: row[4] for job_id, row in zip(ids, rows)}


async def read_all_pages(client, params: dict, *, during=None) -> list[int]:
    ids, cursor, pages = [], None, 0
    while True:
        query = dict(params, **({"last_job_id": cursor} if cursor is not None else {}))
        r = await client.get("/jobs", params=query)
        assert r.status_code == 200, r.text
        body = r.json()
        page = [job["id"] for job in body["jobs"]]
        limit = int(params.get("limit", 50))
        assert page == sorted(page, reverse=True)
        if len(page) < limit:
            assert body["next_cursor"] is None
        else:
            assert body["next_cursor"] == page[-1]
        ids.extend(page)
        pages += 1
        if during is not None and pages == 2:
            await during()
        if body["next_cursor"] is None:
            return ids
        cursor = body["next_cursor"]


async def test_pagination_over_2500_jobs_with_every_filter(server_factory):
    # The seeded active jobs name datasets that do not exist: a peer scheduler re-reading the
    # table (PostgreSQL) would fail them while we page. No re-read happens within this test.
    server = await server_factory(jobs={"worker_check_s": 3600})
    jobs = await seed(server, TOTAL)
    c = server.client

    def expected(statuses) -> list[int]:
        return sorted((i for i, s in jobs.items() if s in statuses), reverse=True)

    # Jobs created while paging have larger ids: they never shift later pages.
    async def create_more():
        more.update(await seed(server, 20, offset=TOTAL))

    more: dict[int, str] = {}

    before = expected(set(STATUSES))
    assert await read_all_pages(c, {"status": "all", "limit": 100}, during=create_more) == before
    assert len(more) == 20 and min(more) > max(before)
    jobs.update(more)
    assert await read_all_pages(c, {}) == expected(ACTIVE)  # default: active, 50 a page
    assert await read_all_pages(c, {"status": "active", "limit": 1000}) == expected(ACTIVE)
    for status in STATUSES:
        assert await read_all_pages(c, {"status": status.upper(), "limit": 77}) == expected({status})
    assert await read_all_pages(c, {"status": "completed,Failed, stopped", "limit": 250}) == expected(
        {"Completed", "Failed", "Stopped"}
    )

    # Default page: 50 active jobs, newest first, cursor = last id on the page.
    body = (await c.get("/jobs")).json()
    assert len(body["jobs"]) == 50 and body["next_cursor"] == body["jobs"][-1]["id"]
    assert {job["status"] for job in body["jobs"]} <= ACTIVE
    # A cursor in the middle returns strictly smaller ids.
    middle = (await c.get("/jobs", params={"status": "all", "last_job_id": "1000", "limit": 5})).json()
    assert [job["id"] for job in middle["jobs"]] == [999, 998, 997, 996, 995]


async def test_list_parameter_errors(server):
    c = server.client
    cases = [
        ({"limit": "0"}, "LIMIT_INVALID"),
        ({"limit": "-3"}, "INVALID_QUERY"),  # out of the query struct's range
        ({"limit": "1001"}, "LIMIT_TOO_LARGE"),
        ({"limit": "many"}, "INVALID_QUERY"),
        ({"status": "done"}, "INVALID_STATUS"),
        ({"status": "running,"}, "INVALID_STATUS"),
        ({"last_job_id": "abc"}, "INVALID_LAST_JOB_ID"),
        ({"last_job_id": "0"}, "INVALID_LAST_JOB_ID"),
    ]
    for params, code in cases:
        r = await c.get("/jobs", params=params)
        assert r.status_code == 400 and r.json()["error_code"] == code, (params, r.text)
    assert (await c.get("/jobs", params={"limit": "1000"})).status_code == 200
