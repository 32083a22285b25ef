"""A second dataset, so a test can keep the coordinator's own worker busy with a job."""

import amp_runtime

amp_runtime.dataset("test/ticks", version="1.0.0", tables=["ticks"])(
    lambda table, first, last: f"SELECT range AS block_num FROM range({first}, {last} + 1)"
)
