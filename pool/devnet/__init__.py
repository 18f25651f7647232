"""The embedded devnet: a bitcoind stand-in that speaks bitcoind's JSON-RPC.

It keeps a real chain and validates submitted blocks the way Bitcoin Core
does for the rules a pool can get wrong, so that the pool's production RPC
path is the one under test.
"""
