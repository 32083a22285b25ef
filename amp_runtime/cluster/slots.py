"""What stays of the WebSocket between processes: a peer follows each other peer's `/ws/slots`.

`/ws/slots` is the public slot feed (tasks/routes.py; the dashboard reads it too): each worker's
`SlotState` on change (coalesced), and for every `ping` received (the watch pings each second:
under steady load the coalesced changes may leave nothing new to push). One watch per other
live peer feeds the peer table:
- a push updates the worker's room (`slots_pushed`);
- the socket closing (a killed peer's closes at once) or refusing us makes the peer unroutable
  until its next push (`slots_lost`); the watch reconnects every `RETRY_S`;
- no push for `SILENT_S` (three missed seconds: the peer hangs, its sockets still open) makes it
  unroutable and answers the forwards waiting on it (`on_silent`: 502 `NODE_LEFT`).
Nothing else travels on it: jobs, registry and durable state are shared through the store.
"""

from __future__ import annotations

import logging
from typing import Callable

import msgspec
import trio
from trio_websocket import ConnectionClosed, ConnectionRejected, HandshakeError, open_websocket_url

from .peers import PeerTable

log = logging.getLogger("amp_runtime.cluster")

SILENT_S = 3.0
PING_S = 1.0
RETRY_S = 1.0


class _Slots(msgspec.Struct):
    worker: str
    free: int
    total: int
    queued: int
    maintenance: bool


_decode_slots = msgspec.json.Decoder(_Slots).decode


class PeerSilent(Exception):
    pass


def _leaf(exc: BaseException) -> BaseException:
    """trio-websocket may wrap a lost connection in (nested) groups: handle it as one."""
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


async def watch_slots(url: str, table: PeerTable, *, headers: dict[str, str], connect_timeout_s: float,
                      on_silent: Callable[[str], None]) -> None:
    """Follow `url`'s /ws/slots into `table` until cancelled (the peer left the directory)."""
    ws_url = ("ws" + url[4:] if url.startswith("http") else url) + "/ws/slots"
    failing = False
    while True:
        opened: list[bool] = []
        try:
            try:
                await _follow(url, ws_url, table, list(headers.items()), connect_timeout_s, opened)
            except Exception as raised:
                raise _leaf(raised) from None
        except ConnectionRejected as exc:
            if not failing:
                log.error("cluster: peer %s refused our slots watch (HTTP %s): check [cluster] key", url,
                          exc.status_code)
        except PeerSilent:
            failing = True
            log.warning("cluster: peer %s sent no slots for %.0fs (hung?); routing nothing there", url, SILENT_S)
            on_silent(url)
        except (OSError, HandshakeError, ConnectionClosed, trio.TooSlowError, msgspec.DecodeError) as exc:
            if opened or not failing:
                log.warning("cluster: slots of peer %s unavailable (%s); routing nothing there until they are back",
                            url, type(exc).__name__)
        failing = True
        table.slots_lost(url)
        await trio.sleep(RETRY_S)


async def _follow(url: str, ws_url: str, table: PeerTable, headers: list, connect_timeout_s: float,
                  opened: list[bool]) -> None:
    async with open_websocket_url(ws_url, extra_headers=headers, disconnect_timeout=1,
                                  connect_timeout=connect_timeout_s) as ws, trio.open_nursery() as nursery:
        opened.append(True)
        nursery.start_soon(_ping, ws)
        first = True
        while True:
            with trio.move_on_after(SILENT_S) as quiet:
                message = await ws.get_message()
            if quiet.cancelled_caught:
                raise PeerSilent(url)
            state = _decode_slots(message)
            table.slots_pushed(url, state.worker, state.free, state.total, state.queued, state.maintenance)
            if first:
                log.info("cluster: routing to peer %s (its slots are known)", url)
                first = False


async def _ping(ws) -> None:
    """A `ping` makes /ws/slots push every worker now: a live peer answers at least this often,
    even under a load whose changes coalesce away (no change left to push, no idle second)."""
    while True:
        await trio.sleep(PING_S)
        await ws.send_message("ping")
