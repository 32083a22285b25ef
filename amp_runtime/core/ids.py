"""The rules for worker ids and id lists (tags, queues, groups), shared by the APIs that take
them and by the config that names them, so a value the API would refuse never gets past start.
Pure."""

from __future__ import annotations

import re

NODE_ID = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-]*$")


def valid_node_id(node_id: str, max_length: int = 256) -> bool:
    return 1 <= len(node_id) <= max_length and NODE_ID.match(node_id) is not None


def worker_id_problem(worker: str, max_length: int) -> str | None:
    if valid_node_id(worker, max_length):
        return None
    return (f"invalid worker id {worker[:max_length]!r}: it must start with a letter and hold only letters, "
            f"digits, '_', '-', '.' (1-{max_length} chars)")


def id_list_problems(name: str, entries: list[str], max_entries: int, max_length: int) -> list[str]:
    problems = []
    if len(entries) > max_entries:
        problems.append(f"{name}: at most {max_entries} entries, got {len(entries)}")
    problems.extend(f"{name}: entry longer than {max_length} chars" for entry in entries if len(entry) > max_length)
    return problems
