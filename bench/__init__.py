"""Stope's benchmarks: end to end over real sockets, each figure beside a baseline.

``.venv/bin/python -m bench`` runs them all and prints one table; see
``bench/README.md`` for what each row measures and the last results.
"""
