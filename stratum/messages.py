"""Line framing and JSON-RPC 1.0 encoding of Stratum messages.

Request ids are echoed back verbatim (integers, strings, null, anything JSON):
firmware matches replies by the id it sent, and some send ids that are not
integers.  Difficulties are written as plain decimals (never ``1e-05``) so
that small embedded JSON parsers read exactly the value the pool judges at.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import Any

from .errors import StratumError, malformed

DEFAULT_MAX_LINE = 16 * 1024

#: Marker for a request that had no "id" member at all (a JSON-RPC notification).
NO_ID: Any = object()


class LineTooLong(Exception):
    """A peer sent more than the line limit without a newline."""


class LineBuffer:
    """Split a byte stream into newline-terminated lines.

    Several messages may arrive in one read and one message may span reads;
    blank lines and ``\\r`` are ignored (some firmware ends lines with CRLF).
    """

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
    """A client request; ``id`` is whatever JSON the client sent (``NO_ID`` if absent)."""

    id: Any
    method: str
    params: list[Any]

    @property
    def reply_id(self) -> Any:
        return None if self.id is NO_ID else self.id

    @property
    def is_notification(self) -> bool:
        """True for ``"id": null`` or no id: the sender expects no answer."""
        return self.id is NO_ID or self.id is None


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
    try:
        obj = json.loads(line)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MessageError(malformed("not JSON")) from exc
    if not isinstance(obj, dict):
        raise MessageError(malformed("a message must be a JSON object"))
    req_id = obj.get("id", NO_ID)
    reply_id = None if req_id is NO_ID else req_id
    method = obj.get("method")
    if method is None:
        if "result" in obj or "error" in obj:
            return Response(reply_id, obj.get("result"), obj.get("error"))
        raise MessageError(malformed("no method"), reply_id)
    if not isinstance(method, str):
        raise MessageError(malformed("method must be a string"), reply_id)
    params = obj.get("params", [])
    if params is None:
        params = []
    if isinstance(params, dict):
        # JSON-RPC 2.0 style named params: keep the values in order.
        params = list(params.values())
    if not isinstance(params, list):
        raise MessageError(malformed("params must be a list"), reply_id)
    return Request(req_id, method, params)


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


def encode_result(req_id: Any, result: Any) -> bytes:
    return _dumps({"id": req_id, "result": result, "error": None})


def encode_error(req_id: Any, error: StratumError, result: Any = None) -> bytes:
    return _dumps({"id": req_id, "result": result, "error": error.wire()})


def encode_notification(method: str, params: list[Any]) -> bytes:
    return _dumps({"id": None, "method": method, "params": params})


def format_difficulty(difficulty: Fraction) -> str:
    """JSON number text for a difficulty: an integer, or a plain decimal.

    Exact for every difficulty the server uses (integers, and three
    significant decimal digits below 1); anything else falls back to the
    shortest float form.
    """
    if difficulty.denominator == 1:
        return str(difficulty.numerator)
    rest, twos, fives = difficulty.denominator, 0, 0
    while rest % 2 == 0:
        rest //= 2
        twos += 1
    while rest % 5 == 0:
        rest //= 5
        fives += 1
    if rest == 1:  # a terminating decimal: write it exactly
        exponent = max(twos, fives)
        scaled = difficulty.numerator * 10**exponent // difficulty.denominator
        return format(Decimal(scaled).scaleb(-exponent), "f")
    return repr(float(difficulty))


def encode_set_difficulty(difficulty: Fraction) -> bytes:
    return b'{"id":null,"method":"mining.set_difficulty","params":[' + format_difficulty(difficulty).encode() + b"]}\n"
