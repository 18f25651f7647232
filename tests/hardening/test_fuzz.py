"""Fuzzing: the framing, parser, state machine and prelude parsers never raise on any input.

Hypothesis drives both raw bytes and structured-but-wrong messages (ids of
every JSON type, params of every type, hex of every length and alphabet);
atheris, when installed, runs a coverage-guided session of the same harness
(``fuzz_stratum.py``). The only exceptions allowed are the documented ones
(``LineTooLong``, ``MessageError``, ``ProxyProtocolError``, ``TlsError``);
every answer is one JSON line, and every request is answered exactly once.
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stratum import errors
from stratum.bans import AbuseSettings, AbuseTracker
from stratum.extranonce import SessionRegistry
from stratum.jobs import JobBook
from stratum.limits import TokenBucket
from stratum.messages import LineBuffer, LineTooLong, MessageError, parse_line
from stratum.protocol import (
    METHODS,
    AuthorizeRequested,
    Close,
    Send,
    ServerConnection,
    ShareSubmitted,
)
from stratum.proxy import ProxyProtocolError, encode_v1, encode_v2
from stratum.proxy import parse as parse_proxy
from stratum.tls import TlsChannel, TlsError
from tests.stratum.helpers import NTIME, make_job

ROOT = Path(__file__).resolve().parents[2]

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
hexish = st.text(alphabet="0123456789abcdefABCDEFgxX -.", max_size=18)
param = json_values | hexish | st.sampled_from(["00000000", f"{NTIME:08x}", "1", "1.1", "ffffffff", "1fffe000", "w"])
methods = st.sampled_from([*METHODS, "mining.suggest_difficulty(5)", "mining.ping", "", "client.get_version"])
request = st.fixed_dictionaries(
    {"method": methods},
    optional={"id": json_values, "params": st.lists(param, max_size=7) | json_values},
)


def fresh_connection(*, working: bool) -> ServerConnection:
    jobs = JobBook()
    jobs.add(make_job(1, clean=True))
    conn = ServerConnection(jobs=jobs, sessions=SessionRegistry())
    if working:
        conn.receive_line(b'{"id":1,"method":"mining.subscribe","params":[]}', 0.0)
        for event in conn.receive_line(b'{"id":2,"method":"mining.authorize","params":["w"]}', 0.0):
            if isinstance(event, AuthorizeRequested):
                conn.authorize_result(event.request_id, event.username, True, None, 0.0)
    return conn


def drive(conn: ServerConnection, line: bytes, now: float, verdict: int) -> tuple[list[dict[str, Any]], bool]:
    """One line through the state machine, the pool answering; (messages written, closed)."""
    out: list[dict[str, Any]] = []
    closed = False
    pending = list(conn.receive_line(line, now))
    while pending:
        event = pending.pop(0)
        if isinstance(event, Send):
            assert event.data.endswith(b"\n") and event.data.count(b"\n") == 1
            out.append(json.loads(event.data))
        elif isinstance(event, AuthorizeRequested):
            pending[:0] = conn.authorize_result(event.request_id, event.username, verdict % 2 == 0, None, now)
        elif isinstance(event, ShareSubmitted):
            error = [None, errors.LOW_DIFFICULTY, errors.NODE_UNAVAILABLE][verdict % 3]
            pending[:0] = conn.share_result(event.request_id, event.share, error, now)
        elif isinstance(event, Close):
            closed = True
    return out, closed


@settings(max_examples=300, deadline=None)
@given(chunks=st.lists(st.binary(max_size=600), max_size=12), working=st.booleans())
def test_any_bytes_never_raise(chunks, working):
    conn = fresh_connection(working=working)
    buffer = LineBuffer(max_line=1024)
    for i, chunk in enumerate(chunks):
        try:
            lines = buffer.feed(chunk)
        except LineTooLong:
            return  # the server closes the connection: the documented reaction
        for line in lines:
            try:
                parse_line(line)
            except MessageError:
                pass
            drive(conn, line, float(i), i)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages=st.lists(request, min_size=1, max_size=10), working=st.booleans(), verdicts=st.integers(0, 5))
def test_any_message_is_answered_once_with_its_id(messages, working, verdicts):
    conn = fresh_connection(working=working)
    for i, msg in enumerate(messages):
        line = json.dumps(msg).encode()
        out, closed = drive(conn, line, float(i), verdicts + i)
        replies = [m for m in out if "method" not in m]
        if closed:
            return
        notification = "id" not in msg or msg["id"] is None
        # A usable difficulty hint sent as a notification is the one request left unanswered.
        hint = notification and msg["method"].startswith(("mining.suggest_difficulty", "mining.suggest_target"))
        params = msg.get("params", [])
        if isinstance(params, dict) or params is None or isinstance(params, list):
            assert len(replies) in ((0, 1) if hint else (1,)), (msg, out)
        else:  # params of a non-list type: a malformed request, answered with error 20 and id null
            assert len(replies) == 1 and replies[0]["error"][0] == 20
            continue
        if replies:
            assert replies[0]["id"] == msg.get("id")
            assert replies[0]["error"] is None or replies[0]["error"][0] in (20, 21, 22, 23, 24, 25)


@settings(max_examples=300, deadline=None)
@given(prefix=st.sampled_from([b"", b"PROXY ", b"PROXY TCP4 ", b"\r\n\r\n\x00\r\nQUIT\n", b"\r\n\r\n\x00\r\nQUIT\n\x21\x11"]), data=st.binary(max_size=300))
def test_proxy_parser_never_raises_anything_else(prefix, data):
    try:
        parsed = parse_proxy(prefix + data)
    except ProxyProtocolError:
        return
    if parsed is not None:
        _header, used = parsed
        assert 0 < used <= len(prefix + data)


@given(
    ip=st.ip_addresses(),
    port=st.integers(0, 65535),
    tail=st.binary(max_size=40),
    cut=st.integers(0, 200),
)
def test_proxy_headers_round_trip_in_any_split(ip, port, tail, cut):
    other = "127.0.0.1" if ip.version == 4 else "::1"
    for header in (encode_v1((str(ip), port), (other, 3333)), encode_v2((str(ip), port), (other, 3333))):
        data = header + tail
        assert parse_proxy(data[: min(cut, len(header) - 1)]) is None  # incomplete: wait for more
        parsed = parse_proxy(data)
        assert parsed is not None
        result, used = parsed
        assert result.source == (str(ip), port) and data[used:] == tail


@settings(max_examples=100, deadline=None)
@given(data=st.lists(st.binary(min_size=1, max_size=400), max_size=5))
def test_tls_channel_survives_garbage(data):
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    channel = TlsChannel(context)
    try:
        for chunk in data:
            channel.handshake(chunk)
        channel.receive(b"".join(data))
    except TlsError:
        pass


@given(
    events=st.lists(
        st.tuples(st.sampled_from(["ok", "low-difficulty", "stale", "pool-busy", "junk", "auth"]), st.floats(0, 50)),
        max_size=200,
    )
)
def test_abuse_tracker_is_total_and_never_bans_for_the_pools_faults(events):
    tracker = AbuseTracker(AbuseSettings(ban_min_invalid=5, ban_junk=5, half_life=10))
    now = 0.0
    for kind, step in events:
        now += step
        if kind == "junk":
            tracker.junk("10.0.0.1", now)
        elif kind == "auth":
            assert 0 <= tracker.auth_failed("10.0.0.1", now) <= tracker.settings.auth_backoff_max
        else:
            tracker.share("10.0.0.1", kind == "ok", None if kind == "ok" else kind, now)
    only_pool_faults = all(kind in ("ok", "stale", "pool-busy", "auth") for kind, _ in events)
    if only_pool_faults:
        assert not tracker.bans


@given(gaps=st.lists(st.floats(0, 0.2), max_size=300), rate=st.floats(1, 100), burst=st.integers(1, 50))
def test_token_bucket_bounds_the_long_run_rate(gaps, rate, burst):
    bucket = TokenBucket(rate, burst, 0.0)
    now = 0.0
    for gap in gaps:
        now += gap
        now += bucket.take(now)  # the caller waits as told, then acts
    # n messages acted on by `now` never exceed the burst plus the rate over the time taken.
    assert len(gaps) <= burst + rate * now + 1e-6


@pytest.mark.skipif(
    subprocess.run([sys.executable, "-c", "import atheris"], capture_output=True, check=False).returncode != 0,
    reason="atheris not installed (pip install atheris)",
)
def test_atheris_session():
    """A short coverage-guided run of fuzz_stratum.py: any uncaught exception fails it."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("fuzz_stratum.py")), "-runs=4000", "-max_len=2048", "-seed=12345"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    assert "Done 4000 runs" in run.stderr
