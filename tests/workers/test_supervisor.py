"""The parent/worker plumbing of ``pool.workers`` without processes: the link,
job fan-out (one pickle for all), the propagation histogram, block hand-off."""

from __future__ import annotations

import pickle
import socket
from collections.abc import Iterator
from contextlib import contextmanager

import trio

from pool.bitcoin.serialize import internal_to_display
from pool.bitcoin.tx import TxOut
from pool.config import settings_from_mapping
from pool.devnet.chain import DevnetChain
from pool.jobs import Job, build_job
from pool.metrics import PoolMetrics
from pool.workers import JobRelay, Link, Supervisor, frame, worker_settings


def make_job(job_id: str = "1") -> Job:
    template = DevnetChain().block_template()
    return build_job(
        template, job_id=job_id, generation=1, payout_outputs=lambda v: [TxOut(v, b"\x51")],
        tag=b"/t/", extranonce_size=8, clean_jobs=True,
    )


class FakeLink:
    """Collects what the supervisor sends to one worker."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def send_framed(self, data: bytes) -> None:
        self.sent.append(data)

    def messages(self) -> list[tuple]:
        return [pickle.loads(d[4:]) for d in self.sent]


class FakeJobs:
    def __init__(self) -> None:
        self.woken = 0
        self.in_flight = 0

    def wake(self) -> None:
        self.woken += 1

    @contextmanager
    def own_block_in_flight(self) -> Iterator[None]:
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1


def histogram_count(metrics: PoolMetrics, name: str) -> float:
    value = metrics.registry.get_sample_value(f"{name}_count")
    return 0.0 if value is None else value


def test_a_job_is_pickled_once_and_stamped_with_when_its_tip_was_learned(tmp_path) -> None:
    settings = settings_from_mapping({"pool": {"data_dir": str(tmp_path)}})
    metrics = PoolMetrics()
    supervisor = Supervisor(settings, 2, [], 3333, metrics, FakeJobs())  # type: ignore[arg-type]
    links = [FakeLink(), FakeLink()]
    for w, link in zip(supervisor.workers, links):
        w.link, w.live = link, True  # type: ignore[assignment]
    job = make_job()
    metrics.propagation.tip_seen(internal_to_display(job.prevhash), 100.0)
    supervisor.on_job(job)
    assert links[0].sent[0] is links[1].sent[0]  # the same bytes object: serialised once
    kind, sent_job, learned = links[0].messages()[0]
    assert kind == "job" and sent_job == job and learned == 100.0

    # The parent's histogram: learned -> the last worker's broadcast returned.
    supervisor._broadcast_done(0, job.job_id, 100.1)
    assert histogram_count(metrics, "stope_work_propagation_seconds") == 0
    supervisor._broadcast_done(1, job.job_id, 100.3)
    assert histogram_count(metrics, "stope_work_propagation_seconds") == 1
    total = metrics.registry.get_sample_value("stope_work_propagation_seconds_sum")
    assert abs(total - 0.3) < 1e-9

    # A worker started later gets the current job (unstamped: not a new tip for it).
    assert pickle.loads(supervisor._current[4:]) == ("job", job, None)  # type: ignore[index]


def test_worker_settings_give_each_worker_its_prefix_spool_and_metrics_port(tmp_path) -> None:
    settings = settings_from_mapping({
        "pool": {"data_dir": str(tmp_path)}, "stratum": {"server_id": 8}, "metrics": {"port": 9333},
    })
    w2 = worker_settings(settings, 2)
    assert w2.stratum.server_id == 10
    assert w2.database.spool_path(w2.pool.data_dir) == tmp_path / "spool-w2"
    assert w2.metrics.port == 9336
    assert worker_settings(settings_from_mapping({"pool": {"data_dir": str(tmp_path)}, "metrics": {"port": 0}}), 1).metrics.port == 0


async def test_link_round_trip_and_block_hand_off() -> None:
    a, b = socket.socketpair()
    parent, child = Link(a), Link(b)
    jobs = FakeJobs()
    settings = settings_from_mapping({})
    supervisor = Supervisor(settings, 1, [], 3333, PoolMetrics(), jobs)  # type: ignore[arg-type]
    w = supervisor.workers[0]
    relay = JobRelay(child)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(parent.pump)
        nursery.start_soon(child.pump)
        nursery.start_soon(supervisor._from_worker, w, parent)
        child.send(("ready", 3333, 0, 1234))
        with relay.own_block_in_flight():
            relay.wake()
            with trio.fail_after(5):
                while not (jobs.in_flight == 1 and jobs.woken == 1):
                    await trio.sleep(0.01)
        with trio.fail_after(5):
            while jobs.in_flight:
                await trio.sleep(0.01)
        assert w.live and w.pid == 1234 and w.ready.is_set()

        big = make_job("2")
        parent.send_framed(frame(("job", big, None)))
        with trio.fail_after(5):
            got = await child.receive()
        assert got == ("job", big, None)
        nursery.cancel_scope.cancel()
    parent.close()
    child.close()
