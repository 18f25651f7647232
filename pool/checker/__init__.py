"""Share validation: the scalar hashlib reference and the vectorised Numba checker.

Import what a server needs from here::

    from pool.checker import Checker, CheckerJob, ShareBatch

Numba is imported lazily (on the first vectorised check or ``warm_up``), so
the scalar backend and the wire-verification helper work without it.
"""

from .batch import BatchResult, Checker, JobTables, share_targets
from .job import CheckerJob, notify_prevhash_to_internal, target_words, words_to_target
from .scalar import ShareVerdict, check_batch_scalar, check_share_scalar, share_header, share_merkle_root
from .shares import Share, ShareBatch

__all__ = [
    "BatchResult",
    "Checker",
    "CheckerJob",
    "JobTables",
    "Share",
    "ShareBatch",
    "ShareVerdict",
    "check_batch_scalar",
    "check_share_scalar",
    "notify_prevhash_to_internal",
    "share_header",
    "share_merkle_root",
    "share_targets",
    "target_words",
    "words_to_target",
]
