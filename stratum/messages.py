"""Line framing and JSON-RPC 1.0 encoding of Stratum messages."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .errors import StratumError

DEFAULT_MAX_LINE = 16 * 1024


class LineTooLong(Exception):
    """A peer sent more than the line limit without a newline."""


class LineBuffer:
    """Split a byte stream into newline-terminated lines."""

    def __init__(self, max_line: int = DEFAULT_MAX_LINE) -> None:
        self._buf = bytearray()
        self.max_line = max_line

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        lines = []
        start = 0
        while True:
            end = self._buf.find(b"\n", start)
            if end < 0:
                break
            line = bytes(self._buf[start:end]).strip()
            if len(line) > self.max_line:
                raise LineTooLong(f"line of {len(line)} bytes exceeds {self.max_line}")
            if line:
                lines.append(line)
            start = end + 1
        del self._buf[:start]
        if len(self._buf) > self.max_line:
            raise LineTooLong(f"more than {self.max_line} bytes without a newline")
        return lines


@dataclass(frozen=True)
class Request:
    id: Any
    method: str
    params: list[Any]


@dataclass(frozen=True)
class Response:
    """A client's answer to a server request (e.g. client.get_version)."""

    id: Any
    result: Any
    error: Any


class MessageError(Exception):
    def __init__(self, error: StratumError, request_id: Any = None) -> None:
        super().__init__(error.message)
        self.error = error
        self.request_id = request_id


def parse_line(line: bytes) -> Request | Response:
    """Decode one line; raise ``MessageError`` for anything that is not a Stratum message."""
    from .errors import malformed

    try:
        obj = json.loads(line)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MessageError(malformed("not JSON")) from exc
    if not isinstance(obj, dict):
        raise MessageError(malformed("a message must be a JSON object"))
    req_id = obj.get("id")
    if isinstance(req_id, (dict, list)):
        req_id = None
    method = obj.get("method")
    if method is None:
        if "result" in obj or "error" in obj:
            return Response(req_id, obj.get("result"), obj.get("error"))
        raise MessageError(malformed("no method"), req_id)
    if not isinstance(method, str):
        raise MessageError(malformed("method must be a string"), req_id)
    params = obj.get("params", [])
    if params is None:
        params = []
    if not isinstance(params, list):
        raise MessageError(malformed("params must be a list"), req_id)
    return Request(req_id, method, params)


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


def encode_result(req_id: Any, result: Any) -> bytes:
    return _dumps({"id": req_id, "result": result, "error": None})


def encode_error(req_id: Any, error: StratumError) -> bytes:
    return _dumps({"id": req_id, "result": None, "error": error.wire()})


def encode_notification(method: str, params: list[Any]) -> bytes:
    return _dumps({"id": None, "method": method, "params": params})
