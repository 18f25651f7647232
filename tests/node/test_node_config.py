"""The [node] and [devnet] settings, and their wiring into a running pool."""

from __future__ import annotations

import pytest
import trio

from pool.config import ConfigError, settings_from_mapping
from pool.service import run_pool
from tests.node.helpers import wait_until
from tests.pool_fixtures import devnet_settings


def test_nodes_in_order_with_their_cookie_and_zmq(tmp_path) -> None:
    settings = settings_from_mapping({
        "node": {
            "url": "http://u:p@127.0.0.1:8332/",
            "zmq_hashblock": "tcp://127.0.0.1:28332",
            "cookie_file": str(tmp_path / ".cookie"),
            "urls": [
                "http://10.0.0.2:8332/",
                {"url": "http://10.0.0.3:8332/", "cookie_file": "/srv/b/.cookie", "zmq_hashblock": "tcp://10.0.0.3:28332"},
            ],
        }
    })
    eps = settings.node.node_endpoints()
    assert [e.url for e in eps] == settings.node.endpoints() == [
        "http://u:p@127.0.0.1:8332/", "http://10.0.0.2:8332/", "http://10.0.0.3:8332/"
    ]
    assert [e.zmq_hashblock for e in eps] == ["tcp://127.0.0.1:28332", "", "tcp://10.0.0.3:28332"]
    assert [str(e.cookie_file) for e in eps] == [str(tmp_path / ".cookie")] * 2 + ["/srv/b/.cookie"]
    assert not settings.uses_devnet


@pytest.mark.parametrize(
    "node",
    [
        {"url": "127.0.0.1:8332"},
        {"urls": ["ftp://x/"]},
        {"url": "http://127.0.0.1:8332/", "zmq_hashblock": "127.0.0.1:28332"},
        {"url": "http://127.0.0.1:8332/", "timeout": 0},
        {"urls": [{"url": "http://h:1/", "zmq": "tcp://h:2"}]},
    ],
)
def test_bad_node_settings_are_refused_at_load(node: dict) -> None:
    with pytest.raises(ConfigError, match="node"):
        settings_from_mapping({"node": node})


def test_a_tag_too_long_for_the_script_sig_is_refused_at_load() -> None:
    with pytest.raises(ConfigError, match="pool.tag"):
        settings_from_mapping({"pool": {"tag": "x" * 90}})


async def test_embedded_devnet_with_zmq_drives_the_pool(tmp_path) -> None:
    settings = devnet_settings(
        tmp_path,
        devnet={"port": 0, "difficulty": "0.0003", "zmq_hashblock": "tcp://127.0.0.1:*"},
        node={"poll_interval": 30, "longpoll": False},
    )
    async with trio.open_nursery() as nursery:
        running = await nursery.start(run_pool, settings)
        managed = running.pool.nodes.nodes[0]
        assert managed.zmq_hashblock == running.devnet_node.zmq_endpoint
        jobs = running.pool.jobs
        # Mine (with the devnet's own miner) until the subscription has carried one.
        devnet = running.devnet
        devnet.set_difficulty(devnet.difficulty / 10_000_000)
        with trio.fail_after(10):
            while managed.zmq_messages == 0:
                devnet.generate(1)
                await trio.sleep(0.05)
        await wait_until(lambda: jobs.current is not None and jobs.current.height == devnet.height + 1, 5)
        assert jobs.current.clean_jobs
        nursery.cancel_scope.cancel()
