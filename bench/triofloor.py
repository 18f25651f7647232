"""The trio floor for idle connections: the least a trio server can hold a miner with.

One task per connection (``trio.serve_tcp``) that reads, and answers the
handshake with canned bytes (subscribe result, authorize ``true``,
``mining.set_difficulty``, a ``mining.notify``). No protocol state, no
sessions, no limits. Its memory per connection is the baseline the pool's
figure is put beside: what trio itself costs per socket and task.

Commands (JSON lines, as ``bench.server``): ``stats`` -> RSS and connections.
"""

from __future__ import annotations

import json
import os
import sys

import trio

from bench.common import emit, raise_nofile, rss_bytes

REPLY = (
    b'{"id":1,"result":[[["mining.set_difficulty","1"],["mining.notify","1"]],"00000001",4],"error":null}\n'
    b'{"id":2,"result":true,"error":null}\n'
    b'{"id":null,"method":"mining.set_difficulty","params":[1]}\n'
    b'{"id":null,"method":"mining.notify","params":["1","00","01","02",[],"20000000","1d00ffff","6553f100",true]}\n'
)


class Floor:
    def __init__(self) -> None:
        self.connections = 0

    async def handle(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        answered = False
        try:
            while True:
                data = await stream.receive_some(65536)
                if not data:
                    return
                if not answered and b"mining.authorize" in data:
                    answered = True
                    await stream.send_all(REPLY)
        except trio.BrokenResourceError:
            return
        finally:
            self.connections -= 1


async def main_async() -> None:
    floor = Floor()
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(trio.serve_tcp, floor.handle, 0)
        port = listeners[0].socket.getsockname()[1]
        emit({"event": "ready", "pid": os.getpid(), "port": port, "rss": rss_bytes(os.getpid())})
        stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
        buf = b""
        while True:
            chunk = await stdin.receive_some(65536)
            if not chunk:
                break
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                if line.strip() and json.loads(line).get("cmd") == "stats":
                    emit({"rss": rss_bytes(os.getpid()), "connections": floor.connections, "working": floor.connections})
        nursery.cancel_scope.cancel()


def main() -> None:
    raise_nofile()
    trio.run(main_async)


if __name__ == "__main__":
    main()
