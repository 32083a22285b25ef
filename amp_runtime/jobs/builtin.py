"""The built-in `example/blocks@1.0.0` dataset: synthetic chain data derived from block numbers.

Every value is a function of the block number (sha256 of a label and the number), so rerunning
a range produces identical rows and, on one thread, identical Parquet bytes.
"""

from __future__ import annotations

from .datasets import dataset

# 2020-01-01T00:00:00Z, one block every 12 s.
_GENESIS_EPOCH_S = 1_577_836_800
_BLOCK_TIME_S = 12

_BLOCKS = """
SELECT b::BIGINT AS block_num,
       '0x' || sha256('block:' || b) AS hash,
       CASE WHEN b = 0 THEN '0x' || repeat('0', 64) ELSE '0x' || sha256('block:' || (b - 1)) END
           AS parent_hash,
       to_timestamp({genesis} + b * {block_time})::TIMESTAMP AS timestamp,
       ('0x' || substr(sha256('txs:' || b), 1, 2))::INTEGER % 8 AS tx_count
FROM range({first}, {last} + 1) r(b)
ORDER BY block_num
"""

_TRANSACTIONS = """
WITH blocks AS (
    SELECT b::BIGINT AS block_num, ('0x' || substr(sha256('txs:' || b), 1, 2))::INTEGER % 8 AS tx_count
    FROM range({first}, {last} + 1) r(b)
)
SELECT block_num,
       t::INTEGER AS tx_index,
       '0x' || substr(sha256('from:' || block_num || ':' || t), 1, 40) AS from_address,
       '0x' || substr(sha256('to:' || block_num || ':' || t), 1, 40) AS to_address,
       ('0x' || substr(sha256('value:' || block_num || ':' || t), 1, 12))::BIGINT AS value
FROM blocks, range(tx_count) x(t)
ORDER BY block_num, tx_index
"""


@dataset("example/blocks", version="1.0.0", tables=["blocks", "transactions"])
def example_blocks(table: str, first_block: int, last_block: int) -> str:
    template = _BLOCKS if table == "blocks" else _TRANSACTIONS
    return template.format(
        first=int(first_block), last=int(last_block), genesis=_GENESIS_EPOCH_S, block_time=_BLOCK_TIME_S
    )
