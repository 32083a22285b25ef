"""SQL of the peer directory (`peers`, migration 0008). Run by the Store on its thread only.

PostgreSQL only: a single process on DuckDB has no peers. Times are the server's clock.
"""

from __future__ import annotations

import msgspec

from .nodes import WorkerInfo

CHANNEL = "amp_peers"  # NOTIFY when a peer joins or leaves; the table stays the truth
_NOW = "extract(epoch FROM now())"


class PeerRow(msgspec.Struct, frozen=True):
    peer_id: str
    url: str
    workers: list[WorkerInfo]


_decode_workers = msgspec.json.Decoder(list[WorkerInfo]).decode
_encode = msgspec.json.Encoder().encode


def upsert_peer(conn, peer_id: str, url: str, workers: list[WorkerInfo], expired_after_s: float,
                announce: bool) -> None:
    """This peer's row, fresh; an older row of the same URL (its own earlier life, killed) goes,
    and so do rows silent for `expired_after_s`. `announce`: wake the other peers."""
    conn.execute(
        f"INSERT INTO peers (peer_id, url, workers, started_at, heartbeat_at) VALUES (?, ?, ?, {_NOW}, {_NOW})"
        f" ON CONFLICT (peer_id) DO UPDATE SET heartbeat_at = {_NOW}, url = excluded.url,"
        " workers = excluded.workers",
        [peer_id, url, _encode(workers).decode()],
    )
    conn.execute(f"DELETE FROM peers WHERE peer_id <> ? AND (url = ? OR heartbeat_at < {_NOW} - ?)",
                 [peer_id, url, expired_after_s])
    if announce:
        conn.execute(f"SELECT pg_notify('{CHANNEL}', ?)", [peer_id])


def delete_peer(conn, peer_id: str) -> None:
    """A draining peer leaves routing at once (the others are woken)."""
    conn.execute("DELETE FROM peers WHERE peer_id = ?", [peer_id])
    conn.execute(f"SELECT pg_notify('{CHANNEL}', ?)", [peer_id])


def live_peers(conn, except_peer_id: str, liveness_s: float) -> list[PeerRow]:
    """The other peers heard from within `liveness_s`, by URL."""
    rows = conn.execute(
        f"SELECT peer_id, url, workers FROM peers WHERE peer_id <> ? AND heartbeat_at >= {_NOW} - ? ORDER BY url",
        [except_peer_id, liveness_s],
    ).fetchall()
    return [PeerRow(peer_id, url, _decode_workers(workers)) for peer_id, url, workers in rows]
