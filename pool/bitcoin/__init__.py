"""Bitcoin consensus serialisation as small explicit functions.

Modelled on Bitcoin Core's functional-test ``messages.py``: every byte layout
has one function that writes it and, where the pool needs to read it back,
one that parses it. Nothing here does I/O.
"""
