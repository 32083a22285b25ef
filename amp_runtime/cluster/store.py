"""SQL of the peer directory (`peers`, migration 0008). Run by the Store on its thread only.

PostgreSQL only: a single process on DuckDB has no peers. Times are the server's clock.
"""

from __future__ import annotations

import msgspec

from .peers import WorkerInfo

CHANNEL = "amp_peers"  # NOTIFY when a peer joins or leaves; the table stays the truth
_NOW = "extract(epoch FROM now())"


class PeerRow(msgspec.Struct, frozen=True):
    peer_id: str
    url: str
    workers: list[WorkerInfo]
    live: bool  # heard from within liveness_s; a stale row is a peer that died or hangs


_decode_workers = msgspec.json.Decoder(list[WorkerInfo]).decode
_encode = msgspec.json.Encoder().encode


def upsert_peer(conn, peer_id: str, url: str, workers: list[WorkerInfo], expired_after_s: float | None,
                announce: bool) -> None:
    """This peer's row, fresh; an older row of the same URL (its own earlier life, killed) goes,
    and so do rows silent for `expired_after_s` (None: judge no silence now). `announce` (the
    first beat): the rows of its earlier lives go and the other peers are woken."""
    conn.execute(
        f"INSERT INTO peers (peer_id, url, workers, started_at, heartbeat_at) VALUES (?, ?, ?, {_NOW}, {_NOW})"
        f" ON CONFLICT (peer_id) DO UPDATE SET heartbeat_at = {_NOW}, url = excluded.url,"
        " workers = excluded.workers",
        [peer_id, url, _encode(workers).decode()],
    )
    if expired_after_s is None:
        conn.execute("DELETE FROM peers WHERE peer_id <> ? AND url = ?", [peer_id, url])
    else:
        conn.execute(f"DELETE FROM peers WHERE peer_id <> ? AND (url = ? OR heartbeat_at < {_NOW} - ?)",
                     [peer_id, url, expired_after_s])
    if announce:
        _delete_earlier_lives(conn, peer_id, {worker.id for worker in workers})
        conn.execute(f"SELECT pg_notify('{CHANNEL}', ?)", [peer_id])


def _delete_earlier_lives(conn, peer_id: str, worker_ids: set[str]) -> None:
    """Rows claiming one of this peer's worker ids are its own earlier life (killed, maybe on
    another address): a worker id runs in one live process at a time (its advisory lock)."""
    rows = conn.execute("SELECT peer_id, workers FROM peers WHERE peer_id <> ?", [peer_id]).fetchall()
    for other_id, workers in rows:
        if worker_ids & {worker.id for worker in _decode_workers(workers)}:
            conn.execute("DELETE FROM peers WHERE peer_id = ?", [other_id])


def delete_peer(conn, peer_id: str) -> None:
    """A draining peer leaves routing at once (the others are woken)."""
    conn.execute("DELETE FROM peers WHERE peer_id = ?", [peer_id])
    conn.execute(f"SELECT pg_notify('{CHANNEL}', ?)", [peer_id])


def other_peers(conn, except_peer_id: str, liveness_s: float) -> list[PeerRow]:
    """Every other peer's row, by URL, saying whether it was heard from within `liveness_s`
    (a drained peer's row is gone; a dead one's stays a while, stale)."""
    rows = conn.execute(
        f"SELECT peer_id, url, workers, heartbeat_at >= {_NOW} - ? FROM peers WHERE peer_id <> ? ORDER BY url",
        [liveness_s, except_peer_id],
    ).fetchall()
    return [PeerRow(peer_id, url, _decode_workers(workers), bool(live)) for peer_id, url, workers, live in rows]
