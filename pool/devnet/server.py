"""A minimal HTTP/1.1 JSON-RPC server in trio, shaped like bitcoind's.

bitcoind answers every RPC on POST / with ``application/json``; errors come
with HTTP 500 (404 for an unknown method) and a JSON-RPC error object. This
server does the same so python-bitcoinrpc cannot tell it apart.
"""

from __future__ import annotations

import base64
import json
import logging
from decimal import Decimal
from typing import Any

import trio

from .chain import RPCError
from .rpc import DevnetRPC

log = logging.getLogger(__name__)

MAX_HEADER = 64 * 1024
MAX_BODY = 32 * 1024 * 1024


def _json_default(o: Any) -> Any:
    if isinstance(o, Decimal):
        return float(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


class DevnetHTTPServer:
    """bitcoind's HTTP front: POST JSON-RPC, basic auth, keep-alive.

    ``hang()`` makes it read requests and never answer (a node that stopped
    responding without closing its port) until ``resume()``.
    """

    def __init__(self, rpc: DevnetRPC, *, user: str = "", password: str = "") -> None:
        self.rpc = rpc
        self._auth = None
        if user or password:
            self.set_credentials(user, password)
        self.port: int | None = None
        self._answering = trio.Event()
        self._answering.set()

    def set_credentials(self, user: str, password: str) -> None:
        """Require HTTP basic auth (what ``-rpcuser``/``-rpcpassword`` or the cookie give)."""
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        self._auth = f"Basic {token}"

    def hang(self) -> None:
        if self._answering.is_set():
            self._answering = trio.Event()

    def resume(self) -> None:
        self._answering.set()

    async def serve(self, host: str, port: int, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(port, host=host)
        self.port = listeners[0].socket.getsockname()[1]
        log.info("devnet node serving JSON-RPC", extra={"host": host, "port": self.port})
        task_status.started(self.port)
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, stream: trio.SocketStream) -> None:
        buf = bytearray()
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    chunk = await stream.receive_some(65536)
                    if not chunk:
                        return
                    buf += chunk
                    if len(buf) > MAX_HEADER and b"\r\n\r\n" not in buf:
                        return
                head, _, rest = bytes(buf).partition(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                headers = {}
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
                length = int(headers.get("content-length", "0"))
                if length > MAX_BODY:
                    return
                body = bytearray(rest)
                while len(body) < length:
                    chunk = await stream.receive_some(65536)
                    if not chunk:
                        return
                    body += chunk
                buf = bytearray(body[length:])
                await self._answering.wait()
                status, payload = await self._dispatch(headers, bytes(body[:length]))
                reason = {200: "OK", 401: "Unauthorized", 404: "Not Found", 500: "Internal Server Error"}[status]
                if status == 401:
                    # bitcoind: no JSON body, a challenge header instead.
                    extra = 'WWW-Authenticate: Basic realm="jsonrpc"\r\n'
                else:
                    extra = "Content-Type: application/json\r\n"
                response = (
                    f"HTTP/1.1 {status} {reason}\r\n{extra}"
                    f"Content-Length: {len(payload)}\r\n\r\n"
                ).encode() + payload
                await stream.send_all(response)
                if headers.get("connection", "").lower() == "close":
                    return
        except (trio.BrokenResourceError, trio.ClosedResourceError, ValueError) as exc:
            log.debug("devnet RPC connection ended: %s", exc)
        finally:
            await stream.aclose()

    async def _dispatch(self, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        if self._auth is not None and headers.get("authorization") != self._auth:
            return 401, b""
        try:
            request = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return 500, self._encode(None, None, RPCError(-32700, "Parse error"))
        if not isinstance(request, dict):
            return 500, self._encode(None, None, RPCError(-32600, "Invalid Request object"))
        req_id = request.get("id")
        method = request.get("method")
        params = request.get("params") or []
        if not isinstance(method, str) or not isinstance(params, list):
            return 500, self._encode(req_id, None, RPCError(-32600, "Invalid Request object"))
        try:
            result = await self.rpc.call_async(method, params)
        except RPCError as err:
            return (404 if err.code == -32601 else 500), self._encode(req_id, None, err)
        return 200, self._encode(req_id, result, None)

    @staticmethod
    def _encode(req_id: Any, result: Any, error: RPCError | None) -> bytes:
        err = None if error is None else {"code": error.code, "message": error.message}
        return json.dumps({"result": result, "error": err, "id": req_id}, default=_json_default).encode()
