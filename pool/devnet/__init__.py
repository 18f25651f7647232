"""The embedded devnet: a bitcoind stand-in that speaks bitcoind's interfaces.

It keeps a real chain and validates submitted blocks the way Bitcoin Core
does for the rules a pool can get wrong (``chain``), answers bitcoind's
JSON-RPC over HTTP with its auth and long-poll (``rpc``, ``server``), and
publishes ZMQ ``hashblock`` (``notify``), so that the pool's production node
path is the one under test. ``node.DevnetNode`` bundles one node; peer
chains (``DevnetChain.spawn_peer`` + ``DevnetRelay``) make a small network
for fail-over tests.
"""
