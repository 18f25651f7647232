"""atheris harness: the line framing, message parser, PROXY parser and state machine never raise.

Run directly (``python tests/hardening/fuzz_stratum.py -runs=100000``) for a
long coverage-guided session; ``test_fuzz.py`` runs it briefly when atheris
is installed. Any exception other than the documented ones is a crash.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import atheris

with atheris.instrument_imports():
    from stratum.extranonce import SessionRegistry
    from stratum.jobs import JobBook, StratumJob
    from stratum.messages import LineBuffer, LineTooLong, MessageError, parse_line
    from stratum.protocol import AuthorizeRequested, ServerConnection, ShareSubmitted
    from stratum.proxy import ProxyProtocolError
    from stratum.proxy import parse as parse_proxy

JOB = StratumJob(
    job_id="1", prevhash="00" * 32, coinb1="01", coinb2="02", merkle_branch=(), version=0x20000000,
    nbits=0x1D00FFFF, ntime=0x6553F100, clean_jobs=True, generation=1, ntime_min=0x6553F000, ntime_max=0x6553FFFF,
)


METHODS = [
    "mining.subscribe", "mining.authorize", "mining.configure", "mining.suggest_difficulty",
    "mining.suggest_target", "mining.extranonce.subscribe", "mining.get_transactions", "mining.submit",
    "mining.suggest_difficulty(1e-3)", "client.get_version", "",
]
HEXISH = "0123456789abcdefABCDEFxX .-e"


def _value(fdp: atheris.FuzzedDataProvider, depth: int = 0) -> Any:
    kind = fdp.ConsumeIntInRange(0, 9 if depth < 2 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return fdp.ConsumeBool()
    if kind == 2:
        return fdp.ConsumeInt(8)
    if kind == 3:
        return fdp.ConsumeRegularFloat()
    if kind == 4:
        return "".join(HEXISH[b % len(HEXISH)] for b in fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 20)))
    if kind in (5, 6):
        return fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 16))
    if kind in (7, 8):
        return [_value(fdp, depth + 1) for _ in range(fdp.ConsumeIntInRange(0, 7))]
    return {fdp.ConsumeUnicodeNoSurrogates(8): _value(fdp, depth + 1) for _ in range(fdp.ConsumeIntInRange(0, 3))}


def _structured(fdp: atheris.FuzzedDataProvider) -> bytes:
    lines = []
    for _ in range(fdp.ConsumeIntInRange(1, 12)):
        msg: dict[str, Any] = {"method": METHODS[fdp.ConsumeIntInRange(0, len(METHODS) - 1)]}
        if fdp.ConsumeBool():
            msg["id"] = _value(fdp)
        if fdp.ConsumeIntInRange(0, 5):
            msg["params"] = [_value(fdp) for _ in range(fdp.ConsumeIntInRange(0, 7))] if fdp.ConsumeIntInRange(0, 4) else _value(fdp)
        lines.append(json.dumps(msg).encode())
    return b"\n".join(lines) + b"\n"


def one_input(raw: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(raw)
    data = _structured(fdp) if fdp.ConsumeBool() else fdp.ConsumeBytes(len(raw))
    try:
        parse_proxy(data)
    except ProxyProtocolError:
        pass
    jobs = JobBook()
    jobs.add(JOB)
    conn = ServerConnection(jobs=jobs, sessions=SessionRegistry())
    conn.receive_line(b'{"id":1,"method":"mining.subscribe","params":[]}', 0.0)
    for event in conn.receive_line(b'{"id":2,"method":"mining.authorize","params":["w"]}', 0.0):
        if isinstance(event, AuthorizeRequested):
            conn.authorize_result(event.request_id, event.username, True, None, 0.0)
    buffer = LineBuffer(max_line=2048)
    try:
        lines = buffer.feed(data)
    except LineTooLong:
        return
    for n, line in enumerate(lines):
        try:
            parse_line(line)
        except MessageError:
            pass
        for event in conn.receive_line(line, float(n)):
            if isinstance(event, AuthorizeRequested):
                conn.authorize_result(event.request_id, event.username, n % 2 == 0, None, float(n))
            elif isinstance(event, ShareSubmitted):
                conn.share_result(event.request_id, event.share, None, float(n))


def main() -> None:
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
