"""A minimal JSON-lines TCP client for protocol tests (no parsing shortcuts)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import trio


class LineClient:
    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self._buf = b""
        self.seen: list[dict[str, Any]] = []

    @classmethod
    async def connect(cls, port: int) -> LineClient:
        return cls(await trio.open_tcp_stream("127.0.0.1", port))

    async def send_raw(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def send(self, obj: dict[str, Any], *, style: str = "compact") -> None:
        """One request line; ``style="spaced"`` writes ``{"id": 1, ...}`` as C firmware does."""
        sep = (", ", ": ") if style == "spaced" else (",", ":")
        await self.stream.send_all(json.dumps(obj, separators=sep).encode() + b"\n")

    async def recv(self) -> dict[str, Any]:
        while b"\n" not in self._buf:
            data = await self.stream.receive_some(65536)
            if not data:
                raise EOFError("server closed the connection")
            self._buf += data
        line, self._buf = self._buf.split(b"\n", 1)
        msg = json.loads(line)
        self.seen.append(msg)
        return msg

    async def recv_until(self, pred: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        while True:
            msg = await self.recv()
            if pred(msg):
                return msg

    async def reply_to(self, req_id: Any) -> dict[str, Any]:
        return await self.recv_until(lambda m: m.get("id") == req_id and "method" not in m)

    async def closed(self) -> bool:
        """True once the server has closed the connection."""
        try:
            while True:
                await self.recv()
        except (EOFError, trio.BrokenResourceError):
            return True

    async def aclose(self) -> None:
        await self.stream.aclose()
