"""Stratum V1: a sans-IO protocol core and a trio server that only moves bytes.

Nothing in this package knows about databases, payouts or block building;
the pool plugs in through the ``PoolBackend`` protocol in ``server.py``.
"""
