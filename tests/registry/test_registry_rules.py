"""The registry's pure rules, without HTTP."""

import pytest

from amp_runtime.core.http import ApiError
from amp_runtime.registry.models import MachineStats, stats_rows, tags_match, valid_node_id
from amp_runtime.registry.service import parse_last_seen, report_ts


@pytest.mark.parametrize("node_id,ok", [
    ("worker-01", True), ("indexer-node-1", True), ("amp_worker.prod", True), ("a", True), ("a" * 256, True),
    ("a" * 257, False), ("", False), ("1worker", False), ("-w", False), ("host:0", False), ("w/x", False),
])
def test_node_id_rule(node_id, ok):
    assert valid_node_id(node_id) is ok


def test_tag_filter():
    assert tags_match(None, ["x"]) and tags_match([], [])
    assert tags_match(["a", "c", "-b"], ["c"]) and not tags_match(["a", "c", "-b"], ["a", "b"])
    assert not tags_match(["a"], []) and tags_match(["-b"], []) and not tags_match(["-b"], ["b"])


def test_last_seen_and_timestamps():
    assert parse_last_seen(None, 3600) == 3600 and parse_last_seen(None, None) is None
    assert parse_last_seen(0, 3600) is None and parse_last_seen("None", 3600) is None
    assert parse_last_seen("60", 3600) == 60
    with pytest.raises(ApiError):
        parse_last_seen("soon", 3600)
    assert report_ts(1_700_000_000) == 1_700_000_000.0
    assert report_ts(1_700_000_000_500) == 1_700_000_000.5


def test_stats_rows_keep_zeros_and_split_arrays():
    rows = stats_rows(MachineStats(cpu_usage=[0.0, 5.0], memory_free=0.0))
    # A scalar's variant is "total", as the reference server names it.
    assert rows == [("cpu_usage", "0", 0.0), ("cpu_usage", "1", 5.0), ("memory_free", "total", 0.0)]
