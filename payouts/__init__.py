"""Payout schemes as pure functions over plain records.

No database, sockets or clocks here: the ledger and the CLI feed records in
and store what comes out. Satoshis are ints, scores exact ``Fraction`` values.

* ``records``   ShareRecord, BlockRecord, Credit, Settlement, Allocation
* ``rounding``  largest-remainder split of whole satoshis
* ``fees``      the pool fee in basis points; shared or kept transaction fees
* ``allocate``  weights for one block -> Allocation (used by the block schemes)
* ``rounds``    cutting the share log at a block / a PROP round
* ``pps``, ``fpps``   per-share credits (exact fractions)
* ``balances``  accumulate credits, pay whole satoshis, carry the remainder
* ``pplns``, ``prop``, ``solo``   per-block schemes
* ``risk``      PPS operator reserve and ruin probability; pool luck
* ``simulate``  one block under one scheme, for ``stope payouts simulate``
"""
