"""The shared reader (``stratum/poller.py``) over real socket pairs, and the server on either reader."""

from __future__ import annotations

import json
import socket
from fractions import Fraction

import pytest
import trio
import trio.testing

from stratum import poller as poller_module
from stratum.limits import Limits
from stratum.poller import Poller
from stratum.protocol import ProtocolSettings
from stratum.server import ServerSettings
from tests.stratum.lineclient import LineClient
from tests.stratum.test_stratum_server import start_server, submit, working_client

pytestmark = pytest.mark.skipif(not poller_module.available(), reason="select.epoll is Linux only")


def _line(obj: dict) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


async def _replies(client: LineClient, ids: set[int]) -> dict[int, dict]:
    """The replies to ``ids``, in whatever order they come (shares are answered by batch)."""
    got: dict[int, dict] = {}
    while set(got) != ids:
        msg = await client.recv()
        if "method" not in msg and msg.get("id") in ids:
            got[msg["id"]] = msg
    return got


def _pairs(n: int) -> list[tuple[socket.socket, socket.socket]]:
    pairs = [socket.socketpair() for _ in range(n)]
    for ours, _theirs in pairs:
        ours.setblocking(False)
    return pairs


async def _park_all(
    poller: Poller[socket.socket], pairs: list[tuple[socket.socket, socket.socket]], nursery: trio.Nursery, got: dict[int, object]
) -> None:
    """Park a task on our end of every pair (``got[k]``: what pair ``k``'s park returns), until all wait."""

    async def parked(k: int, sock: socket.socket) -> None:
        got[k] = await poller.park(sock.fileno(), sock, nursery)

    for k, (ours, _theirs) in enumerate(pairs):
        nursery.start_soon(parked, k, ours)
    await trio.testing.wait_all_tasks_blocked()


def _close(pairs: list[tuple[socket.socket, socket.socket]]) -> None:
    for a, b in pairs:
        a.close()
        b.close()


async def test_parked_tasks_get_what_the_callback_hands_them_and_the_reader_ends():
    """Each parked task returns what ``on_ready`` woke it with; with nothing parked the
    reader task ends by itself, so the nursery finishes without being cancelled."""
    pairs = _pairs(200)
    got: dict[int, object] = {}

    def on_ready(fd: int, item: socket.socket) -> None:
        poller.wake(fd, item.recv(100))

    poller: Poller[socket.socket] = Poller(on_ready)
    try:
        async with trio.open_nursery() as nursery:
            await _park_all(poller, pairs, nursery, got)
            assert len(poller) == 200
            for k, (_ours, theirs) in enumerate(pairs):
                theirs.send(b"%d" % k)
        assert got == {k: b"%d" % k for k in range(200)}
        assert len(poller) == 0 and poller.passes >= 1
    finally:
        poller.close()
        _close(pairs)


async def test_a_callback_that_does_not_wake_keeps_the_socket_parked_level_triggered():
    """Bytes left unread are reported again on the next pass (level-triggered), and a
    callback that leaves its task parked is called again for the next bytes."""
    (ours, theirs), = pairs = _pairs(1)
    seen: list[bytes] = []

    def on_ready(fd: int, item: socket.socket) -> None:
        seen.append(item.recv(1))  # one byte a pass
        if len(seen) == 3:
            poller.wake(fd, "done")

    poller: Poller[socket.socket] = Poller(on_ready)
    try:
        async with trio.open_nursery() as nursery:
            theirs.send(b"abc")
            with trio.fail_after(5):
                assert await poller.park(ours.fileno(), ours, nursery) == "done"
        assert seen == [b"a", b"b", b"c"] and poller.passes >= 3
    finally:
        poller.close()
        _close(pairs)


async def test_a_cancelled_park_leaves_the_epoll():
    """A deadline (or a drop) cancels a parked task like ``wait_readable``: the socket
    leaves the epoll, later bytes reach no callback, and the fd can be parked again."""
    (ours, theirs), = pairs = _pairs(1)
    calls: list[int] = []
    poller: Poller[socket.socket] = Poller(lambda fd, item: calls.append(fd))
    try:
        async with trio.open_nursery() as nursery:
            with trio.move_on_after(0.05) as scope:
                await poller.park(ours.fileno(), ours, nursery)
            assert scope.cancelled_caught and not poller.parked(ours.fileno()) and len(poller) == 0
            theirs.send(b"x")
            await trio.sleep(0.05)
            assert calls == []
            # Parked again: the pending byte is reported at once.
            poller._on_ready = lambda fd, item: poller.wake(fd, item.recv(10))
            with trio.fail_after(5):
                assert await poller.park(ours.fileno(), ours, nursery) == b"x"
    finally:
        poller.close()
        _close(pairs)


async def test_a_failing_callback_wakes_its_own_task_only():
    """``on_ready`` raising for one socket wakes that socket's task with ``failed``;
    the reader goes on serving the others. A second park of one fd is refused."""
    pairs = _pairs(3)
    failed = object()

    def on_ready(fd: int, item: socket.socket) -> None:
        data = item.recv(10)
        if data == b"boom":
            raise RuntimeError("a bug in one connection's handling")
        poller.wake(fd, data)

    poller: Poller[socket.socket] = Poller(on_ready, failed=failed)
    results: dict[int, object] = {}
    try:
        async with trio.open_nursery() as nursery:
            await _park_all(poller, pairs, nursery, results)
            with pytest.raises(trio.BusyResourceError):
                await poller.park(pairs[0][0].fileno(), pairs[0][0], nursery)
            pairs[1][1].send(b"boom")
            await trio.testing.wait_all_tasks_blocked()
            pairs[0][1].send(b"zero")
            pairs[2][1].send(b"two")
        assert results == {0: b"zero", 1: failed, 2: b"two"}
    finally:
        poller.close()
        _close(pairs)


@pytest.mark.parametrize("shared_reader", [True, False])
async def test_the_server_serves_alike_on_either_reader(shared_reader: bool):
    """Pipelined lines, a line split over writes, an authorization waited for in the
    middle of a read, the message-rate limit and the idle timeout: the same on the
    shared reader and on a task waiting on its own socket."""
    settings = ServerSettings(
        protocol=ProtocolSettings(start_difficulty=Fraction(8)),
        limits=Limits(max_messages_per_second=20.0, message_burst=6, idle_timeout=2.0),
        shared_reader=shared_reader,
    )
    async with trio.open_nursery() as nursery:
        server, backend = await start_server(nursery, settings)
        assert (server._poller is not None) == shared_reader
        client, _ = await working_client(server)
        # A second worker's authorization (it must wait for the backend) between shares, one write.
        lines = [
            submit(1),
            {"id": 9, "method": "mining.authorize", "params": ["w2", "x"]},
            submit(2),
            {**submit(3), "params": ["w2", *submit(3)["params"][1:]]},
        ]
        await client.send_raw(b"".join(_line(m) for m in lines[:-1]) + _line(lines[-1])[:10])
        await client.send_raw(_line(lines[-1])[10:])
        with trio.fail_after(5):
            replies = await _replies(client, {101, 9, 102, 103})
        assert all(r["result"] is True for r in replies.values()), replies
        assert {s.nonce: s.worker for s in backend.shares} == {1: "w", 2: "w", 3: "w2"}
        # Over the rate (burst 6, 20/s): 20 lines in one write are all answered, throttled.
        start = trio.current_time()
        await client.send_raw(b"".join(_line(submit(n)) for n in range(10, 30)))
        with trio.fail_after(10):
            replies = await _replies(client, {100 + n for n in range(10, 30)})
        assert all(r["result"] is True for r in replies.values())
        assert server.stats["throttled"] > 0 and trio.current_time() - start > 0.5
        # Then silence: the idle timeout closes the connection.
        with trio.fail_after(5):
            assert await client.closed()
        assert server.stats["closed-idle-timeout"] == 1
        if shared_reader:
            assert server._poller is not None and server._poller.passes > 0
        nursery.cancel_scope.cancel()
