"""Request and response bodies of the Jobs API, and the service's error type."""

from __future__ import annotations

from typing import Annotated

import msgspec

# Generous (Ethereum is near 2.3e7) and safe downstream: `example/blocks` turns a block into a
# TIMESTAMP (12 s each, good to ~7.6e11) and grid arithmetic stays far inside INT64.
MAX_BLOCK = 10**11
Block = Annotated[int, msgspec.Meta(ge=0, le=MAX_BLOCK, description="a block number")]


class JobDescriptor(msgspec.Struct, kw_only=True):
    """What the job extracts: a dataset version and an inclusive block range."""

    dataset: str
    start_block: int
    end_block: int | None  # null = continuous until stopped


class Job(msgspec.Struct, kw_only=True, omit_defaults=True):
    id: int
    created_at: str
    updated_at: str
    node_id: str
    status: str
    descriptor: JobDescriptor
    error: str | None = None  # why a Failed job failed (ours; not in the reference)


class JobList(msgspec.Struct, kw_only=True):
    jobs: list[Job]
    next_cursor: int | None


class TableProgress(msgspec.Struct, kw_only=True):
    files_count: int
    total_size_bytes: int
    start_block: int
    current_block: int  # last block written to a file of this table


class JobProgress(msgspec.Struct, kw_only=True):
    job_id: int
    job_status: str
    tables: dict[str, TableProgress]


class CreateJob(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    """`POST /jobs`. `end_block` is inclusive; omitted or null = continuous."""

    dataset: str
    start_block: Block = 0
    end_block: Annotated[Block, msgspec.Meta(description="inclusive; >= start_block")] | None = None
    node_id: str | None = None


class ListJobsQuery(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    # 0 and over `[jobs] max_limit` pass here so the service answers them with its own codes.
    limit: Annotated[int, msgspec.Meta(
        ge=0, le=2**31 - 1, description="1 to [jobs] max_limit (default 1000): 0 is LIMIT_INVALID, "
        "more is LIMIT_TOO_LARGE")] | None = None
    last_job_id: str | None = None
    status: str | None = None


class BulkDeleteQuery(msgspec.Struct, kw_only=True, forbid_unknown_fields=False):
    status: str | None = None


class JobsError(Exception):
    """An expected refusal; the routes render it as `{"error_code", "error_message"}`."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
