"""Work propagation: one serialised notify, written synchronously to every socket.

1 500 working connections over real TCP: a broadcast hands the same bytes to
every socket in one loop (no task per connection, nothing awaited), every
miner receives it, and the ``BroadcastResult`` timing is what the pool can
export as a new-tip-to-last-miner figure. The bound asserted (250 ms for
1 500 sockets) is far above what it takes (a few ms here); it guards against
a return to per-connection tasks or awaited sends.
"""

from __future__ import annotations

import dataclasses
import json
import logging

import trio

from stratum.limits import Limits
from tests.hardening.helpers import connect, settings, start_server
from tests.stratum.helpers import make_job

log = logging.getLogger(__name__)

CONNECTIONS = 1500
HELLO = (
    json.dumps({"id": 1, "method": "mining.subscribe", "params": []}) + "\n"
    + json.dumps({"id": 2, "method": "mining.authorize", "params": ["w", ""]}) + "\n"
).encode()


async def read_until(stream: trio.SocketStream, marker: bytes, buf: bytearray) -> None:
    while marker not in buf:
        data = await stream.receive_some(65536)
        assert data, "closed by the server"
        buf += data


async def test_broadcast_to_many_connections_is_one_synchronous_pass():
    limits = Limits(max_connections_per_ip=0)
    async with trio.open_nursery() as nursery:
        server, _ = await start_server(nursery, settings(limits=limits))
        streams = []
        for i in range(CONNECTIONS):
            stream = await connect(server.port, f"127.0.{2 + i // 250}.{1 + i % 250}")
            await stream.send_all(HELLO)
            streams.append(stream)
        buffers = [bytearray() for _ in streams]
        with trio.fail_after(30):
            while server._working < CONNECTIONS:
                await trio.sleep(0.05)
            for stream, buf in zip(streams, buffers):
                await read_until(stream, b'"mining.notify"', buf)
                buf.clear()
        job = dataclasses.replace(make_job(2, clean=True), coinb2="00" * 400)  # a ~1 KB notify
        result = server.broadcast(job)
        log.info("broadcast to %d connections: %s", CONNECTIONS, result)
        # No task was started to deliver it (a flush task exists only for a full kernel buffer).
        assert not any(session.flushing for session in server.sessions)
        assert result.sent == CONNECTIONS and result.buffered == result.dropped == 0
        assert result.seconds < 0.25, result
        with trio.fail_after(30):
            for stream, buf in zip(streams, buffers):
                await read_until(stream, b'["2",', buf)
        for stream in streams:
            await stream.aclose()
        nursery.cancel_scope.cancel()
