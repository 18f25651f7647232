"""PROXY protocol v1/v2 behind a trusted balancer, and stratum+ssl, over real sockets."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from pathlib import Path

import pytest
import trio

from stratum.bans import AbuseSettings
from stratum.limits import Limits
from stratum.proxy import encode_v1, encode_v2
from stratum.server import ProxyProtocolSettings
from stratum.tls import TlsSettings
from tests.hardening.helpers import (
    GOOD_IP,
    closed_by_server,
    connect,
    dumps,
    settings,
    start_server,
    submit,
)
from tests.stratum.lineclient import LineClient

BALANCER = "127.0.0.20"


async def handshake(client: LineClient) -> None:
    await client.send({"id": 1, "method": "mining.subscribe", "params": []})
    await client.reply_to(1)
    await client.send({"id": 2, "method": "mining.authorize", "params": ["w", ""]})
    await client.recv_until(lambda m: m.get("method") == "mining.notify")


@pytest.mark.parametrize("version", [1, 2])
async def test_trusted_balancer_passes_the_real_address(version):
    server_settings = settings(proxy=ProxyProtocolSettings(trusted=(f"{BALANCER}/32",)), abuse=AbuseSettings(deny=("203.0.113.66",)))
    header = (
        encode_v1(("198.51.100.7", 40000), ("127.0.0.1", 3333))
        if version == 1
        else encode_v2(("2001:db8:1:2::7", 40000), ("2001:db8::1", 3333))
    )
    real_key = "198.51.100.7" if version == 1 else "2001:db8:1:2::/64"
    async with trio.open_nursery() as nursery:
        server, _ = await start_server(nursery, server_settings)
        stream = await connect(server.port, BALANCER)
        # The header and the first request may arrive in one segment.
        await stream.send_all(header + dumps({"id": 1, "method": "mining.subscribe", "params": []}))
        client = LineClient(stream)
        await client.reply_to(1)
        await client.send({"id": 2, "method": "mining.authorize", "params": ["w", ""]})
        await client.recv_until(lambda m: m.get("method") == "mining.notify")
        await client.send(submit(1, 10))
        assert (await client.reply_to(10))["result"] is True
        (session,) = server.sessions
        assert server._by_ip.keys() == {real_key} and session.key == real_key
        # Limits and lists apply to the real address, not the balancer's.
        bad = await connect(server.port, BALANCER)
        await bad.send_all(encode_v1(("203.0.113.66", 1), ("127.0.0.1", 3333)))
        assert await closed_by_server(bad, within=1.0)
        assert server.stats["refused-denied"] == 1
        # A health check (v2 LOCAL) is the balancer itself.
        check = await connect(server.port, BALANCER)
        await check.send_all(encode_v2(None) + dumps({"id": 5, "method": "mining.get_transactions", "params": []}))
        assert (await LineClient(check).reply_to(5))["result"] == []
        nursery.cancel_scope.cancel()


async def test_header_required_from_trusted_and_not_believed_from_others():
    server_settings = settings(proxy=ProxyProtocolSettings(trusted=(f"{BALANCER}/32",)), limits=Limits(handshake_timeout=1.0))
    async with trio.open_nursery() as nursery:
        server, _ = await start_server(nursery, server_settings)
        # From the balancer, no header: closed.
        missing = await connect(server.port, BALANCER)
        await missing.send_all(dumps({"id": 1, "method": "mining.subscribe", "params": []}))
        assert await closed_by_server(missing, within=1.0)
        # A header that never completes: the handshake deadline closes it.
        partial = await connect(server.port, BALANCER)
        await partial.send_all(b"PROXY TCP4 1.2.3.4")
        assert await closed_by_server(partial, within=3.0)
        assert server.stats["closed-proxy-header"] == 1 and server.stats["closed-handshake-timeout"] == 1
        # From anyone else a header is just a malformed line, and the address stays theirs.
        spoof = LineClient(await connect(server.port, GOOD_IP))
        await spoof.send_raw(encode_v1(("8.8.8.8", 1), ("127.0.0.1", 3333)))
        assert (await spoof.recv())["error"][0] == 20
        await handshake(spoof)
        assert {s.host for s in server.sessions} == {GOOD_IP}
        nursery.cancel_scope.cancel()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl command not available to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=localhost",
            "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


async def test_stratum_over_tls_on_a_second_port(certificate):
    cert, key = certificate
    tls = TlsSettings(cert_file=cert, key_file=key, port=0)
    async with trio.open_nursery() as nursery:
        server, backend = await start_server(nursery, settings(tls=tls))
        assert server.tls_port and server.tls_port != server.port
        context = ssl.create_default_context(cafile=str(cert))
        stream = trio.SSLStream(await connect(server.tls_port), context, server_hostname="localhost")
        client = LineClient(stream)  # type: ignore[arg-type]
        await handshake(client)
        for i in range(20):
            await client.send(submit(i + 1, 100 + i))
        for i in range(20):
            assert (await client.reply_to(100 + i))["result"] is True
        # A broadcast reaches TLS and plain miners alike (same synchronous write path).
        plain = LineClient(await connect(server.port))
        await handshake(plain)
        from tests.stratum.helpers import make_job

        server.broadcast(make_job(7))
        with trio.fail_after(2):
            for miner in (client, plain):
                await miner.recv_until(lambda m: m.get("method") == "mining.notify" and m["params"][0] == "7")
        # Plain text on the TLS port is a failed handshake, not a crash.
        wrong = await connect(server.tls_port)
        await wrong.send_all(dumps({"id": 1, "method": "mining.subscribe", "params": []}))
        assert await closed_by_server(wrong, within=2.0)
        assert server.stats["closed-tls-error"] == 1
        assert backend.accepted == 20
        nursery.cancel_scope.cancel()


async def test_tls_client_that_never_reads_is_dropped(certificate):
    cert, key = certificate
    tls = TlsSettings(cert_file=cert, key_file=key, port=0)
    limits = Limits(max_send_buffer=16 * 1024, socket_send_buffer=16 * 1024)
    import dataclasses

    from tests.stratum.helpers import make_job

    async with trio.open_nursery() as nursery:
        server, _ = await start_server(nursery, settings(tls=tls, limits=limits))
        context = ssl.create_default_context(cafile=str(cert))
        stream = trio.SSLStream(await connect(server.tls_port, rcvbuf=4096), context, server_hostname="localhost")
        await handshake(LineClient(stream))  # type: ignore[arg-type]
        big = dataclasses.replace(make_job(2), coinb2="00" * 8000)
        with trio.fail_after(10):
            n = 3
            while server.sessions:
                server.broadcast(dataclasses.replace(big, job_id=f"{n:x}"))
                n += 1
                await trio.sleep(0.01)
        assert server.stats["dropped-slow-reader"] == 1
        nursery.cancel_scope.cancel()
