"""The kernel floor for a broadcast: the same bytes to N sockets in a plain loop.

A process with no event loop and no protocol: it accepts connections, and on
``send`` writes the given bytes to every socket with one non-blocking
``send`` each (falling back to a blocking ``sendall`` only if the kernel
buffer is full, which a ~1 KB line on an idle socket never makes it). What
the pool's broadcast is compared with: nothing can put the bytes into the
kernel faster from Python.

Commands (JSON lines): ``listen`` -> port; ``accept`` (``count``) -> once
that many are connected; ``send`` (``data``) -> the monotonic times before
the first and after the last send; ``close``.
"""

from __future__ import annotations

import socket
import time

from bench.common import emit, raise_nofile, read_commands


def main() -> None:
    raise_nofile()
    listener: socket.socket | None = None
    socks: list[socket.socket] = []
    for cmd in read_commands():
        what = cmd["cmd"]
        if what == "listen":
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("0.0.0.0", 0))
            listener.listen(4096)
            emit({"event": "listening", "port": listener.getsockname()[1]})
        elif what == "accept":
            assert listener is not None
            listener.settimeout(60)
            while len(socks) < cmd["count"]:
                s, _ = listener.accept()
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                s.setblocking(False)
                socks.append(s)
            emit({"event": "accepted", "count": len(socks)})
        elif what == "send":
            data = cmd["data"].encode()
            t0 = time.monotonic()
            for s in socks:
                try:
                    n = s.send(data)
                except BlockingIOError:
                    n = 0
                if n < len(data):
                    s.setblocking(True)
                    s.sendall(data[n:])
                    s.setblocking(False)
            t1 = time.monotonic()
            emit({"event": "sent", "t0": t0, "t1": t1})
        elif what == "close":
            for s in socks:
                s.close()
            socks = []
            emit({"event": "closed"})
    for s in socks:
        s.close()


if __name__ == "__main__":
    main()
