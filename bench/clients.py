"""Many idle miners in one process: the client side of the connection and broadcast benches.

Driven over stdin/stdout (JSON lines), single-threaded on one epoll that
watches stdin too, so it keeps reading every socket while it waits for the
controller:

* ``open``: connect ``count`` sockets from source address ``source`` (one
  127.0.0.x per client process keeps each under the ephemeral-port range),
  at most ``window`` handshakes at a time. With ``stratum`` each sends
  subscribe + authorize and counts as ready once its first
  ``mining.notify`` arrives; without, once connected (the raw-socket floor
  server sends nothing until told to).
* ``arm`` (``group``, as given to ``open``): forget past receipts; from now
  on note, per connection of that group, the
  monotonic time at which the first complete clean ``mining.notify`` line
  arrives (a line ending ``true]}``: clean_jobs, the last parameter).
  Once every connection of the group has one, answer with all the times
  (``report`` answers with what there is).
* ``close``: close everything.
"""

from __future__ import annotations

import errno
import json
import os
import select
import socket
import sys
import time
from typing import Any

from bench.common import MINER_ADDRESS, emit, raise_nofile

IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)  # Linux 4.2+

HELLO = (
    b'{"id":1,"method":"mining.subscribe","params":["stope-bench/1"]}\n'
    b'{"id":2,"method":"mining.authorize","params":["%s.idle","x"]}\n' % MINER_ADDRESS.encode()
)


class Clients:
    def __init__(self) -> None:
        self.ep = select.epoll()
        self.socks: dict[int, socket.socket] = {}
        self.index: dict[int, int] = {}
        self.bufs: dict[int, bytes] = {}
        self.ready: set[int] = set()
        self.group: dict[int, str] = {}
        self.armed: str | None = None
        self.expected = 0
        self.times: dict[int, float] = {}
        self.stdin = sys.stdin.buffer.fileno()
        os.set_blocking(self.stdin, False)
        self.ep.register(self.stdin, select.EPOLLIN)
        self._cmd_buf = b""

    # --- connecting -----------------------------------------------------------
    def open(self, host: str, port: int, count: int, source: str, stratum: bool, window: int, group: str) -> dict[str, Any]:
        started = time.monotonic()
        pending: dict[int, socket.socket] = {}  # connecting
        handshaking: set[int] = set()
        to_open = count
        failed = 0
        errors: dict[str, int] = {}
        base = len(self.index)
        while to_open or pending or handshaking:
            while to_open and len(pending) + len(handshaking) < window:
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.setblocking(False)
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if source:
                    # Pick the port at connect(), by the whole 4-tuple: a bind() to port 0
                    # must find a port free on every destination, and after a run that
                    # opened 50 000 connections the range is full of TIME_WAIT ones.
                    s.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
                    s.bind((source, 0))
                err = s.connect_ex((host, port))
                if err not in (0, errno.EINPROGRESS):
                    errors[errno.errorcode.get(err, str(err))] = errors.get(errno.errorcode.get(err, str(err)), 0) + 1
                    s.close()
                    failed += 1
                    to_open -= 1
                    continue
                fd = s.fileno()
                self.socks[fd] = s
                self.index[fd] = base + (count - to_open)
                self.bufs[fd] = b""
                self.group[fd] = group
                pending[fd] = s
                self.ep.register(fd, select.EPOLLOUT | select.EPOLLIN)
                to_open -= 1
            if time.monotonic() - started > 300:
                break
            for fd, ev in self.ep.poll(1.0):
                if fd == self.stdin:
                    continue
                if fd in pending:
                    s = pending.pop(fd)
                    err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err:
                        errors[errno.errorcode.get(err, str(err))] = errors.get(errno.errorcode.get(err, str(err)), 0) + 1
                        self._drop(fd)
                        failed += 1
                        continue
                    self.ep.modify(fd, select.EPOLLIN)
                    if stratum:
                        s.send(HELLO)
                        handshaking.add(fd)
                    else:
                        self.ready.add(fd)
                    continue
                if not self._read(fd) and fd in handshaking:
                    handshaking.discard(fd)
                    failed += 1
                    continue
                if fd in handshaking and fd in self.ready:
                    handshaking.discard(fd)
        return {
            "event": "opened", "ready": sum(1 for fd in self.ready if self.group.get(fd) == group), "failed": failed, "errors": errors,
            "seconds": time.monotonic() - started, "stuck": len(pending) + len(handshaking),
        }

    def _drop(self, fd: int) -> None:
        try:
            self.ep.unregister(fd)
        except (OSError, ValueError):
            pass
        self.socks.pop(fd).close()
        self.bufs.pop(fd, None)
        self.group.pop(fd, None)
        self.ready.discard(fd)

    def _read(self, fd: int) -> bool:
        """Read what is there; False if the peer closed."""
        try:
            data = self.socks[fd].recv(65536)
        except BlockingIOError:
            return True
        except OSError:
            self._drop(fd)
            return False
        if not data:
            self._drop(fd)
            return False
        now = time.monotonic()
        buf = self.bufs[fd] + data
        cut = buf.rfind(b"\n")
        if cut < 0:
            self.bufs[fd] = buf
            return True
        lines, self.bufs[fd] = buf[:cut], buf[cut + 1 :]
        if fd not in self.ready and b'"mining.notify"' in lines:
            self.ready.add(fd)
        elif self.armed is not None and fd not in self.times and self.group.get(fd) == self.armed:
            for line in lines.split(b"\n"):
                if line.endswith(b"true]}") and b'"mining.notify"' in line:
                    self.times[fd] = now
                    break
        return True

    # --- serving commands ---------------------------------------------------------
    def loop(self) -> None:
        while True:
            for fd, _ev in self.ep.poll(1.0):
                if fd == self.stdin:
                    if not self._commands():
                        return
                elif fd in self.socks:
                    self._read(fd)
            if self.armed is not None and len(self.times) >= self.expected:
                self._report()

    def _report(self) -> None:
        emit({"event": "received", "times": sorted(self.times.values()), "connections": self.expected})
        self.armed = None

    def _commands(self) -> bool:
        try:
            chunk = os.read(self.stdin, 65536)
        except BlockingIOError:
            return True
        if not chunk:
            return False
        self._cmd_buf += chunk
        while b"\n" in self._cmd_buf:
            line, self._cmd_buf = self._cmd_buf.split(b"\n", 1)
            if not line.strip():
                continue
            cmd = json.loads(line)
            what = cmd["cmd"]
            if what == "open":
                emit(self.open(cmd.get("host", "127.0.0.1"), cmd["port"], cmd["count"], cmd.get("source", ""),
                               cmd.get("stratum", True), cmd.get("window", 256), cmd.get("group", "")))
            elif what == "arm":
                self.times = {}
                self.armed = cmd.get("group", "")
                self.expected = sum(1 for fd in self.ready if self.group.get(fd) == self.armed)
                emit({"event": "armed", "connections": self.expected})
            elif what == "report":
                self._report()
            elif what == "close":
                for fd in list(self.socks):
                    self._drop(fd)
                emit({"event": "closed"})
        return True


def main() -> None:
    raise_nofile()
    Clients().loop()


if __name__ == "__main__":
    main()
