"""Framing and encoding: lines, ids, difficulties on the wire."""

from __future__ import annotations

import json
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stratum.messages import (
    NO_ID,
    LineBuffer,
    LineTooLong,
    MessageError,
    Request,
    Response,
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
