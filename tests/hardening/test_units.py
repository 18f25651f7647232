"""The sans-IO pieces of hardening: PROXY parsing, abuse accounting, limits, settings."""

from __future__ import annotations

import pytest

from pool.config import ConfigError, settings_from_mapping
from stratum.bans import AbuseSettings, AbuseTracker, address_key
from stratum.limits import Limits, TokenBucket
from stratum.proxy import ProxyProtocolError, encode_v2, parse

# --- PROXY protocol -------------------------------------------------------------------


def test_proxy_v1_examples_from_the_spec():
    header, used = parse(b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\nGET /")
    assert header.source == ("192.168.0.1", 56324) and header.destination == ("192.168.0.11", 443) and used == 47
    header, _ = parse(b"PROXY TCP6 2001:db8::1 2001:db8::2 1 2\r\n")
    assert header.source == ("2001:db8::1", 1)
    header, _ = parse(b"PROXY UNKNOWN\r\n")
    assert header.source is None
    assert parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 1") is None  # incomplete


@pytest.mark.parametrize(
    "data",
    [
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
        b"PROXY TCP4 1.2.3.4 ::1 1 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n",
        b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",
        b"PROXY " + b"1" * 120,
        b"GET / HTTP/1.1\r\n",
        b'{"id":1,"method":"mining.subscribe"}\n',
        b"\r\n\r\n\x00\r\nQUIT\n\x31\x11\x00\x0c" + bytes(12),  # version 3
        b"\r\n\r\n\x00\r\nQUIT\n\x22\x11\x00\x0c" + bytes(12),  # command 2
        b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x04" + bytes(4),  # IPv4 addresses truncated
        b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\xff\xff",  # absurd length
    ],
)
def test_proxy_refusals(data):
    with pytest.raises(ProxyProtocolError):
        parse(data)


def test_proxy_v2_local_and_tlvs():
    header, used = parse(encode_v2(None) + b"rest")
    assert header.source is None and used == 16
    data = encode_v2(("10.1.2.3", 5), ("10.0.0.1", 3333), tlvs=b"\x01\x00\x02h2") + b"{}"
    header, used = parse(data)
    assert header.source == ("10.1.2.3", 5) and data[used:] == b"{}"


# --- abuse ---------------------------------------------------------------------------


def test_address_keys_group_an_ipv6_64_and_unmap_ipv4():
    assert address_key("2001:db8:1:2:aaaa::1") == address_key("2001:db8:1:2:bbbb::9") == "2001:db8:1:2::/64"
    assert address_key("::ffff:10.0.0.1") == "10.0.0.1"
    assert address_key("10.0.0.1") == "10.0.0.1"


def test_invalid_share_ratio_bans_a_flood_not_a_farm_with_one_broken_rig():
    tracker = AbuseTracker(AbuseSettings(ban_min_invalid=50, ban_invalid_ratio=0.9))
    now = 0.0
    # A farm: 99 good rigs and one sending only garbage, all behind one address.
    for i in range(5000):
        now += 0.01
        good = i % 100 != 0
        assert not tracker.share("10.0.0.1", good, None if good else "low-difficulty", now)
    assert not tracker.bans
    # A flood: mostly invalid.
    banned = [tracker.share("10.0.0.2", False, "duplicate", now) for _ in range(60)]
    assert banned.index(True) == 49 and tracker.banned("10.0.0.2", now)
    # Stale shares and the pool's own failures never count.
    for reason in ("stale", "pool-busy", "internal-error", "storage-full"):
        for _ in range(100):
            tracker.share("10.0.0.3", False, reason, now)
    assert not tracker.banned("10.0.0.3", now)


def test_bans_expire_and_counts_decay():
    tracker = AbuseTracker(AbuseSettings(ban_duration=10, ban_junk=10, half_life=5))
    for _ in range(9):
        tracker.junk("10.0.0.1", 0.0)
    # Five half-lives later the nine junk points are ~0.3: another nine do not ban.
    for _ in range(9):
        assert not tracker.junk("10.0.0.1", 25.0)
    assert tracker.junk("10.0.0.1", 25.0)
    assert tracker.refusal("10.0.0.1", 30.0) == "banned"
    assert tracker.refusal("10.0.0.1", 35.1) is None
    tracker.expire(100.0)
    assert not tracker.bans


def test_the_rest_of_a_ban_served_elsewhere_lasts_what_is_left_never_longer():
    tracker = AbuseTracker(AbuseSettings(ban_duration=10))
    assert tracker.ban("10.0.0.1", 100.0, duration=3.0)
    assert tracker.refusal("10.0.0.1", 102.9) == "banned"
    assert tracker.refusal("10.0.0.1", 103.1) is None
    assert tracker.ban("10.0.0.2", 100.0, duration=1e9)  # capped at ban_duration
    assert tracker.refusal("10.0.0.2", 109.9) == "banned"
    assert tracker.refusal("10.0.0.2", 110.1) is None
    assert not AbuseTracker(AbuseSettings(ban_duration=0)).ban("10.0.0.3", 0.0, duration=5.0)


def test_exempt_deny_allow_and_bounded_memory():
    tracker = AbuseTracker(
        AbuseSettings(ban_junk=1, exempt=("10.9.0.0/16",), deny=("192.0.2.0/24",), allow=("10.0.0.0/8", "2001:db8::/32"), max_tracked=100)
    )
    assert not tracker.junk("10.9.1.1", 0.0) and not tracker.banned("10.9.1.1", 0.0)
    assert tracker.refusal("192.0.2.5", 0.0) == "denied"
    assert tracker.refusal("172.16.0.1", 0.0) == "not allowed"
    assert tracker.refusal("2001:db8::5", 0.0) is None
    for i in range(1000):
        tracker.auth_failed(f"10.1.{i // 250}.{i % 250}", 0.0)
    assert len(tracker._records) == 100


def test_auth_backoff_doubles_up_to_the_cap():
    tracker = AbuseTracker(AbuseSettings(auth_backoff_base=0.5, auth_backoff_max=4))
    assert [tracker.auth_failed("10.0.0.1", 0.0) for _ in range(6)] == [0.5, 1, 2, 4, 4, 4]


def test_token_bucket_allows_a_burst_then_the_rate():
    bucket = TokenBucket(rate=10, burst=5, now=0.0)
    assert [bucket.take(0.0) for _ in range(5)] == [0.0] * 5
    assert bucket.take(0.0) == pytest.approx(0.1)
    assert bucket.take(0.0) == pytest.approx(0.2)
    assert bucket.take(10.0) == 0.0  # refilled (up to the burst)


# --- settings ------------------------------------------------------------------------


def test_limits_and_abuse_settings_are_validated():
    with pytest.raises(ValueError):
        Limits(max_line=10)
    with pytest.raises(ValueError):
        AbuseSettings(ban_invalid_ratio=0)
    with pytest.raises(ValueError):
        AbuseSettings(deny=("not-a-network",))


def test_config_sections_reach_the_server_settings(tmp_path):
    cert = tmp_path / "c.pem"
    cert.write_text("x")
    s = settings_from_mapping(
        {
            "stratum": {
                "limits": {"max_connections_per_ip": 7, "socket_send_buffer": 0},
                "abuse": {"exempt": ["10.0.0.0/8"], "ban_duration": 0},
                "proxy_protocol": {"trusted": ["10.1.1.1"]},
                "tls": {"enabled": True, "cert_file": str(cert), "key_file": str(cert), "port": 4444},
            }
        }
    )
    h = s.stratum.hardening()
    assert h["limits"].max_connections_per_ip == 7 and h["limits"].socket_send_buffer is None
    assert h["abuse"].exempt == ("10.0.0.0/8",) and h["proxy"].trusted == ("10.1.1.1",)
    assert h["tls"].port == 4444
    with pytest.raises(ConfigError, match="cert_file"):
        settings_from_mapping({"stratum": {"tls": {"enabled": True}}})
    with pytest.raises(ConfigError, match="trusted"):
        settings_from_mapping({"stratum": {"proxy_protocol": {"trusted": ["10.0.0.300"]}}})
