"""The ledger and the batch job on PostgreSQL (the storage layer's other database).

One history that touches every dialect-specific path: sums of BIGINTs,
exact-fraction text columns, the SHARE lock before per-share credits and
the advisory lock that serialises payout runs. Skips without PostgreSQL
binaries (fails under STOPE_REQUIRE_SERVICES=1, as the storage tests do).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from fractions import Fraction

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from payouts.batch import PayoutsBusy, run_lock, run_payouts
from payouts.ledger import (
    PayoutPolicy,
    balances,
    committed_share_horizon,
    credit_shares,
)
from pool.storage.db import make_engine, upgrade
from tests.payouts.ledger_helpers import FakeNode, ShareLog, regtest_address
from tests.pg import services_required, start_server, unavailable_reason

pytestmark = pytest.mark.postgres
A, B = regtest_address(1), regtest_address(2)


@pytest.fixture(scope="module")
def pg_server():  # type: ignore[no-untyped-def]
    reason = None if os.environ.get("STOPE_TEST_POSTGRES_URL") else unavailable_reason()
    if reason:
        if services_required():
            pytest.fail(f"PostgreSQL required but unavailable: {reason}")
        pytest.skip(f"PostgreSQL unavailable: {reason}")
    server = start_server()
    yield server
    server.destroy()


@pytest.fixture
def engine(pg_server) -> Iterator[Engine]:  # type: ignore[no-untyped-def]
    engine = make_engine(pg_server.create_database("payouts"))
    upgrade(engine)
    yield engine
    engine.dispose()


async def test_pplns_pay_reconcile_and_pps_on_postgres(engine: Engine):
    log = ShareLog(engine)
    log.shares([(A, 100, 100), (B, 60, 100), (A, 40, 100)])
    block = log.block(1, B, 100, reward=1_000_000)
    node = FakeNode()
    node.confirmations[block] = 101
    node.lose_reply = True
    policy = PayoutPolicy(scheme="pplns", fee_bps=200, minimum_payout=1000)
    first = await run_payouts(engine, node, policy)
    assert first.unresolved and first.credits[0].miners == {A: 196_000, B: 784_000}
    second = await run_payouts(engine, node, policy)
    assert second.batches[0].note.startswith("reconciled")
    assert node.wallet.paid_to() == {A: 196_000, B: 784_000} and node.wallet.send_calls == 1
    assert (await run_payouts(engine, node, policy)).paid == {}

    pps = PayoutPolicy(scheme="pps", fee_bps=200)
    log.shares([(A, 1, 3)])
    with Session(engine) as session:
        horizon = committed_share_horizon(session)
        session.commit()
        result = credit_shares(session, pps, horizon)
        session.commit()
        assert result.shares == 1 and result.miners == {A: Fraction(153_125_000, 6)}
        assert balances(session)[A].payable == Fraction(153_125_000, 6)

    with run_lock(engine), pytest.raises(PayoutsBusy), run_lock(engine):
        pass
