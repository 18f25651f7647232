"""The pool's side of bitcoind's JSON-RPC (python-bitcoinrpc in a worker thread).

python-bitcoinrpc is synchronous; every call runs in a trio worker thread
under a deadline so a slow or dead node never stalls the event loop.
"""

from __future__ import annotations

import http.client
import logging
import socket
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import trio
from bitcoinrpc.authproxy import AuthServiceProxy, JSONRPCException

log = logging.getLogger(__name__)


class NodeError(Exception):
    """The node answered with a JSON-RPC error."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{message} (code {code})")
        self.code = code
        self.message = message


class NodeUnavailable(Exception):
    """The node could not be reached or did not answer in time."""


def url_with_cookie(url: str, cookie_file: Path | None) -> str:
    """Put bitcoind's ``.cookie`` credentials into the URL, as bitcoin-cli does."""
    if cookie_file is None:
        return url
    user, _, password = Path(cookie_file).read_text().strip().partition(":")
    parts = urlsplit(url)
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{parts.hostname}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def with_credentials(url: str) -> str:
    """python-bitcoinrpc needs user:password in the URL; an open node gets empty ones."""
    parts = urlsplit(url)
    if parts.username is not None:
        return url
    return urlunsplit((parts.scheme, ":@" + parts.netloc, parts.path, parts.query, parts.fragment))


def redact(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


class NodeClient:
    def __init__(self, url: str, *, timeout: float = 10.0, cookie_file: Path | None = None) -> None:
        self._url = url
        self._cookie_file = cookie_file
        self.timeout = timeout
        self.name = redact(url)

    def _call_sync(self, method: str, params: tuple[Any, ...]) -> Any:
        # A proxy per call: AuthServiceProxy shares one HTTPConnection and is
        # not safe across threads. Cookies are re-read so a node restart,
        # which rotates the cookie, does not lock the pool out.
        url = with_credentials(url_with_cookie(self._url, self._cookie_file))
        proxy = AuthServiceProxy(url, timeout=int(max(1, self.timeout)))
        try:
            return getattr(proxy, method)(*params)
        except JSONRPCException as exc:
            err = exc.error if isinstance(exc.error, dict) else {}
            raise NodeError(int(err.get("code", -1)), str(err.get("message", exc))) from exc
        except (OSError, http.client.HTTPException, socket.timeout, ValueError) as exc:
            raise NodeUnavailable(f"{self.name}: {method}: {exc!r}") from exc

    async def call(self, method: str, *params: Any) -> Any:
        try:
            with trio.fail_after(self.timeout + 1):
                return await trio.to_thread.run_sync(self._call_sync, method, params, abandon_on_cancel=True)
        except trio.TooSlowError as exc:
            raise NodeUnavailable(f"{self.name}: {method} timed out after {self.timeout}s") from exc

    async def getblocktemplate(self) -> dict[str, Any]:
        return await self.call("getblocktemplate", {"rules": ["segwit"]})

    async def submitblock(self, block_hex: str) -> str | None:
        return await self.call("submitblock", block_hex)

    async def getbestblockhash(self) -> str:
        return await self.call("getbestblockhash")
