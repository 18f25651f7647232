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
    Between messages it holds nothing (the shared empty ``bytes``): an idle
    connection's buffer is one small object.
    """

    __slots__ = ("_buf", "max_line")

    def __init__(self, max_line: int = DEFAULT_MAX_LINE) -> None:
        self._buf = b""
        self.max_line = max_line

    def feed(self, data: bytes) -> list[bytes]:
        if type(data) is not bytes:
            data = bytes(data)
        buf = self._buf + data if self._buf else data
        limit = self.max_line
        if b"\n" not in buf:
            if len(buf) > limit:
                raise LineTooLong(f"more than {limit} bytes without a newline")
            self._buf = buf
            return []
        parts = buf.split(b"\n")
        rest = parts.pop()
        lines = []
        for part in parts:
            line = part.strip()
            if line:
                if len(line) > limit:
                    raise LineTooLong(f"line of {len(line)} bytes exceeds {limit}")
                lines.append(line)
        if len(rest) > limit:
            self._buf = rest
            raise LineTooLong(f"more than {limit} bytes without a newline")
        self._buf = rest if rest else b""
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


_scan_once = json.decoder.JSONDecoder().scan_once
_encode_str = json.encoder.encode_basestring_ascii


def decode_json(line: bytes) -> Any:
    """``json.loads(line)``, faster for the usual line (one UTF-8 JSON object, nothing around it).

    Exactly ``json.loads``'s result and exceptions: a line that starts with
    ``{`` and no NUL is UTF-8 to ``json.loads`` too (no BOM, no UTF-16/32);
    anything else, or anything after the object, goes through ``json.loads``.
    """
    if line[:1] == b"{" and line[1:2] != b"\x00":
        text = line.decode("utf-8", "surrogatepass")
        try:
            obj, end = _scan_once(text, 0)
        except StopIteration as exc:  # what JSONDecoder.raw_decode turns it into
            raise json.JSONDecodeError("Expecting value", text, exc.value) from None
        if end == len(text):
            return obj
    return json.loads(line)


def parse_line(line: bytes) -> Request | Response:
    """Decode one line; raise ``MessageError`` for anything that is not a Stratum message."""
    try:
        obj = decode_json(line)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MessageError(malformed("not JSON")) from exc
    return parse_message(obj)


def parse_message(obj: Any) -> Request | Response:
    """A decoded JSON line as a message; ``MessageError`` if it is not one."""
    if type(obj) is not dict:
        raise MessageError(malformed("a message must be a JSON object"))
    req_id = obj.get("id", NO_ID)
    reply_id = None if req_id is NO_ID else req_id
    method = obj.get("method")
    if method is None:
        if "result" in obj or "error" in obj:
            return Response(reply_id, obj.get("result"), obj.get("error"))
        raise MessageError(malformed("no method"), reply_id)
    if type(method) is not str:
        raise MessageError(malformed("method must be a string"), reply_id)
    params = obj.get("params", [])
    if params is None:
        params = []
    if type(params) is dict:
        # JSON-RPC 2.0 style named params: keep the values in order.
        params = list(params.values())
    if type(params) is not list:
        raise MessageError(malformed("params must be a list"), reply_id)
    return Request(req_id, method, params)


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


def encode_id(req_id: Any) -> bytes:
    """A request id as JSON text, exactly as ``json.dumps`` writes it (the common types without it)."""
    kind = type(req_id)
    if kind is int:
        return b"%d" % req_id
    if req_id is None:
        return b"null"
    if kind is str:
        return _encode_str(req_id).encode()
    return json.dumps(req_id, separators=(",", ":")).encode()


def encode_result(req_id: Any, result: Any) -> bytes:
    if result is True:  # the answer to almost every request: no json.dumps
        if type(req_id) is int:
            return b'{"id":%d,"result":true,"error":null}\n' % req_id
        return b'{"id":' + encode_id(req_id) + b',"result":true,"error":null}\n'
    return _dumps({"id": req_id, "result": result, "error": None})


def encode_error(req_id: Any, error: StratumError, result: Any = None) -> bytes:
    if result is None:
        head = b'{"id":' + encode_id(req_id) + b',"result":null,"error":'
    elif result is False:
        head = b'{"id":' + encode_id(req_id) + b',"result":false,"error":'
    else:
        return _dumps({"id": req_id, "result": result, "error": error.wire()})
    return head + error.wire_json() + b"}\n"


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
