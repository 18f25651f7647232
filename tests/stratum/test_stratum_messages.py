"""Framing and encoding: lines, ids, difficulties on the wire."""

from __future__ import annotations

import json
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stratum import errors
from stratum.messages import (
    NO_ID,
    LineBuffer,
    LineTooLong,
    MessageError,
    Request,
    Response,
    decode_json,
    encode_error,
    encode_id,
    encode_result,
    format_difficulty,
    parse_line,
)
from stratum.vardiff import quantize_difficulty


def test_line_buffer_splits_and_joins_reads():
    buf = LineBuffer()
    assert buf.feed(b'{"a":1}\n{"b"') == [b'{"a":1}']
    assert buf.feed(b":2}\r\n\n") == [b'{"b":2}']
    assert buf.feed(b"") == []


@given(st.lists(st.binary(min_size=1, max_size=40).map(lambda b: b.replace(b"\n", b"x").strip() or b"x"), max_size=20), st.data())
def test_line_buffer_any_chunking(lines, data):
    stream = b"".join(line + b"\n" for line in lines)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    buf = LineBuffer()
    got: list[bytes] = []
    prev = 0
    for cut in [*cuts, len(stream)]:
        got += buf.feed(stream[prev:cut])
        prev = cut
    assert got == [line.strip() for line in lines if line.strip()]


def test_line_too_long():
    buf = LineBuffer(max_line=10)
    with pytest.raises(LineTooLong):
        buf.feed(b"x" * 11)
    with pytest.raises(LineTooLong):
        LineBuffer(max_line=10).feed(b"y" * 11 + b"\n")


def test_parse_requests_and_responses():
    req = parse_line(b'{"id": "a", "method": "mining.subscribe", "params": ["x"]}')
    assert req == Request("a", "mining.subscribe", ["x"]) and not req.is_notification
    note = parse_line(b'{"method": "mining.suggest_difficulty", "params": [1]}')
    assert isinstance(note, Request) and note.id is NO_ID and note.reply_id is None and note.is_notification
    assert parse_line(b'{"id": 1, "method": "m", "params": null}').params == []
    assert parse_line(b'{"id": 1, "method": "m", "params": {"a": 1}}').params == [1]
    assert parse_line(b'{"id": 3, "result": "v", "error": null}') == Response(3, "v", None)


@pytest.mark.parametrize("line", [b"{", b"3", b'{"id": 1}', b'{"id":1,"method":[]}', b'{"id":1,"method":"m","params":"p"}', b"\xff"])
def test_parse_refuses_non_messages(line):
    with pytest.raises(MessageError) as exc:
        parse_line(line)
    assert exc.value.error.code == 20


@pytest.mark.parametrize(
    "value,text",
    [(Fraction(1024), "1024"), (Fraction(15, 100000), "0.00015"), (Fraction(1, 100000), "0.00001"), (Fraction(233, 10000), "0.0233"), (Fraction(1, 3), repr(1 / 3))],
)
def test_format_difficulty(value, text):
    assert format_difficulty(value) == text
    assert json.loads(text) == pytest.approx(float(value))


@given(st.fractions(min_value=Fraction(1, 10**12), max_value=Fraction(10**15)))
def test_quantized_difficulties_round_trip_exactly_through_json(value):
    q = quantize_difficulty(value)
    parsed = Fraction(str(json.loads(format_difficulty(q))))
    assert parsed == q
    assert abs(q - value) <= value * Fraction(1, 200) or q.denominator == 1
    assert quantize_difficulty(value, "down") <= value <= quantize_difficulty(value, "up")


# --- fast paths: byte-for-byte what the plain implementations give -------------------


class ReferenceLineBuffer:
    """The straightforward framing the fast ``LineBuffer`` must match (bytearray, find loop)."""

    def __init__(self, max_line: int) -> None:
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
                raise LineTooLong("line")
            if line:
                lines.append(line)
            start = end + 1
        del self._buf[:start]
        if len(self._buf) > self.max_line:
            raise LineTooLong("no newline")
        return lines


_stream_bytes = st.lists(st.sampled_from([b"\n", b"\r\n", b" ", b"\t", b"\x0b", b"x", b"{}", b"y" * 7, b"\x00"]), max_size=40).map(b"".join)


@given(st.lists(_stream_bytes | st.binary(max_size=30), max_size=12), st.integers(1, 16))
def test_line_buffer_matches_the_reference_framing(chunks, max_line):
    fast, reference = LineBuffer(max_line), ReferenceLineBuffer(max_line)
    for chunk in chunks:
        try:
            expected = reference.feed(chunk)
        except LineTooLong:
            with pytest.raises(LineTooLong):
                fast.feed(chunk)
            return
        got = fast.feed(chunk)
        assert got == expected and all(type(line) is bytes for line in got)


def test_idle_line_buffer_holds_nothing():
    buf = LineBuffer()
    assert not hasattr(buf, "__dict__")
    buf.feed(b'{"id":1}\n{"id"')
    assert buf._buf == b'{"id"'
    assert buf.feed(b":2}\n") == [b'{"id":2}']
    assert type(buf._buf) is bytes and not buf._buf  # the shared empty bytes, between messages
    assert buf.feed(bytearray(b"a\nb")) == [b"a"]  # any bytes-like input


_json_text = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6,
).map(lambda v: json.dumps(v, ensure_ascii=False))


@given(
    st.one_of(
        _json_text.map(str.encode),
        _json_text.map(lambda t: ("{" + t).encode()),  # broken objects
        _json_text.map(lambda t: ('{"a":' + t + "}" + " ").encode()),  # trailing whitespace
        _json_text.map(lambda t: ('{"a":' + t + "}").encode("utf-16")),
        st.binary(max_size=20).map(lambda b: b"{" + b),
        st.binary(max_size=20),
    )
)
def test_decode_json_is_json_loads(line):
    try:
        expected = json.loads(line)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        with pytest.raises(type(exc) if isinstance(exc, RecursionError) else ValueError):
            decode_json(line)
        return
    assert decode_json(line) == expected


_ids = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=8) | st.lists(st.integers(), max_size=2) | st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)


def _dumps(obj):
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


@given(_ids, st.sampled_from([True, False, None, [], {"a": 1}, "x"]))
def test_encoders_are_json_dumps_byte_for_byte(req_id, result):
    assert encode_result(req_id, result) == _dumps({"id": req_id, "result": result, "error": None})
    for error in (errors.UNKNOWN_JOB, errors.malformed("ntime"), errors.STALE_JOB):
        for res in (None, False):
            assert encode_error(req_id, error, res) == _dumps({"id": req_id, "result": res, "error": error.wire()})
    assert encode_id(req_id) + b"\n" == _dumps(req_id)


def _reference_quantize(value, rounding="nearest"):
    """quantize_difficulty as first written: a Fraction loop."""
    import math

    def rnd(x):
        if rounding == "down":
            return math.floor(x)
        if rounding == "up":
            return math.ceil(x)
        return math.floor(x + Fraction(1, 2))

    if value >= 1:
        return Fraction(max(rnd(value), 1))
    exponent = 0
    scaled = value
    while scaled < 100:
        scaled *= 10
        exponent += 1
    return Fraction(rnd(scaled), 10**exponent)


@given(
    st.fractions(min_value=Fraction(1, 10**30), max_value=Fraction(10**20), max_denominator=10**30) | st.integers(1, 10**9).map(Fraction),
    st.sampled_from(["nearest", "down", "up"]),
)
def test_quantize_arithmetic_matches_the_loop(value, rounding):
    q = quantize_difficulty(value, rounding)
    assert q == _reference_quantize(value, rounding)
    again = quantize_difficulty(q, rounding)
    assert again == q and again is q  # a quantised value comes back as itself
