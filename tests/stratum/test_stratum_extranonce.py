"""Extranonce1 allocation and the session registry."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stratum.extranonce import ExtranonceAllocator, ExtranonceExhausted, SessionRegistry


def test_server_id_prefix_keeps_servers_apart():
    a = ExtranonceAllocator(4, server_id=1)
    b = ExtranonceAllocator(4, server_id=2)
    from_a = {a.allocate() for _ in range(1000)}
    from_b = {b.allocate() for _ in range(1000)}
    assert len(from_a) == len(from_b) == 1000
    assert not from_a & from_b
    assert all(x[0] == 1 and len(x) == 4 for x in from_a)


def test_bounds_and_exhaustion():
    with pytest.raises(ValueError):
        ExtranonceAllocator(1)
    with pytest.raises(ValueError):
        ExtranonceAllocator(9)
    with pytest.raises(ValueError):
        ExtranonceAllocator(4, server_id=256)
    small = ExtranonceAllocator(2, server_id=0)
    got = {small.allocate() for _ in range(256)}
    assert len(got) == 256
    with pytest.raises(ExtranonceExhausted):
        small.allocate()
    small.release(next(iter(got)))
    small.allocate()


def test_claim_only_free_values_of_this_server():
    alloc = ExtranonceAllocator(4, server_id=3)
    x = alloc.allocate()
    assert not alloc.claim(x)
    assert not alloc.claim(b"\x04\x00\x00\x01")  # another server's prefix
    alloc.release(x)
    assert alloc.claim(x)


@settings(max_examples=50)
@given(st.lists(st.booleans(), max_size=300))
def test_live_extranonces_never_collide(ops):
    alloc = ExtranonceAllocator(2, server_id=9)
    live: list[bytes] = []
    for take in ops:
        if take or not live:
            value = alloc.allocate()
            assert value not in live
            live.append(value)
        else:
            alloc.release(live.pop(0))


def test_registry_park_resume_expire():
    reg = SessionRegistry(ExtranonceAllocator(4, server_id=5), resume_window=30)
    owner = object()
    sid, en1 = reg.open(owner)
    reg.close(sid, owner, (en1,), "state", now=100.0)
    assert reg.parked == 1 and reg.live == 0
    newcomer = object()
    parked, previous = reg.resume(sid, newcomer, now=120.0)
    assert parked is not None and parked.extranonce1s == (en1,) and parked.state == "state" and previous is None
    assert reg.owns(sid, newcomer)
    reg.close(sid, newcomer, (en1,), "later", now=125.0)
    assert reg.expire(154.9) == 0 and reg.allocator.is_allocated(en1)
    assert reg.expire(155.0) == 1 and not reg.allocator.is_allocated(en1)
    assert reg.resume(sid, object(), now=160.0) == (None, None)


def test_registry_takeover_and_resume_off():
    reg = SessionRegistry(resume_window=0)
    a, b = object(), object()
    sid, en1 = reg.open(a)
    assert reg.resume(sid, b, now=1.0) == (None, a)
    reg.close(sid, a, (en1,), None, now=2.0)  # the loser releases nothing
    assert reg.allocator.is_allocated(en1)
    reg.close(sid, b, (en1,), None, now=3.0)  # resume off: released at once
    assert not reg.allocator.is_allocated(en1) and reg.parked == 0
