"""Many idle readers parked on one epoll, read by one task.

A trio task per connection that waits with ``wait_readable`` pays, for every
message, an ``epoll_ctl`` to re-arm its one-shot registration, a wake-up of
its task and a pass of the scheduler: about as much CPU as the whole
Stratum state machine spends on a share. Here a connection's task *parks*
instead: its socket stays registered, level-triggered, in one epoll of our
own, and one reader task (itself waiting on that epoll through trio) hands
each readable socket to a synchronous callback. The callback reads and
handles the bytes inline and wakes the parked task only when something must
wait (an authorization, a rate limit, the in-flight cap) or the connection
ends. Tasks keep their cancel scopes: a deadline or a drop cancels the parked
task as it would cancel ``wait_readable``, and the socket leaves the epoll.

The reader task exists only while something is parked (like the server's
flush tasks), so a server with no connections has no task left behind.
Linux only (``select.epoll``); ``available()`` says whether it can be used.
"""

from __future__ import annotations

import logging
import select
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import outcome
import trio

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Ready sockets handled per pass before the reader yields to the scheduler.
MAX_EVENTS = 1024


def available() -> bool:
    return hasattr(select, "epoll")


class _Parked(Generic[T]):
    __slots__ = ("item", "task")

    def __init__(self, item: T, task: trio.lowlevel.Task) -> None:
        self.item = item
        self.task = task


class Poller(Generic[T]):
    """Parks tasks on their sockets; ``on_ready(fd, item)`` runs for each readable one.

    ``on_ready`` runs on the reader task, synchronously, and must not raise
    (an exception wakes that item's task with ``failed``). It ends a park by
    calling ``wake(fd, value)``: ``park`` then returns ``value``.
    """

    def __init__(self, on_ready: Callable[[int, T], None], *, failed: Any = None, max_events: int = MAX_EVENTS) -> None:
        self._on_ready = on_ready
        self._failed = failed
        self._max_events = max_events
        self._epoll = select.epoll()
        self._parked: dict[int, _Parked[T]] = {}
        #: The running reader's cancel scope (None: no reader, or the last one is stopping).
        self._reader: trio.CancelScope | None = None
        self.passes = 0

    def __len__(self) -> int:
        return len(self._parked)

    def close(self) -> None:
        self._epoll.close()

    async def park(self, fd: int, item: T, nursery: trio.Nursery) -> Any:
        """Wait until ``on_ready`` wakes this task for ``fd`` (cancellable like ``wait_readable``)."""
        if fd in self._parked:
            raise trio.BusyResourceError(f"fd {fd} is already parked")
        self._epoll.register(fd, select.EPOLLIN)
        self._parked[fd] = _Parked(item, trio.lowlevel.current_task())
        if self._reader is None:
            self._reader = trio.CancelScope()
            nursery.start_soon(self._read, self._reader)

        def abort(_raise_cancel: Any) -> trio.lowlevel.Abort:
            self._unpark(fd)
            return trio.lowlevel.Abort.SUCCEEDED

        return await trio.lowlevel.wait_task_rescheduled(abort)

    def parked(self, fd: int) -> bool:
        return fd in self._parked

    def wake(self, fd: int, value: Any) -> bool:
        """End ``fd``'s park: its task gets ``value``. False if it was not parked (already woken or cancelled)."""
        entry = self._unpark(fd)
        if entry is None:
            return False
        trio.lowlevel.reschedule(entry.task, outcome.Value(value))
        return True

    def _unpark(self, fd: int) -> _Parked[T] | None:
        entry = self._parked.pop(fd, None)
        if entry is None:
            return None
        try:
            self._epoll.unregister(fd)
        except OSError:  # closed behind our back: the kernel has dropped it already
            pass
        if not self._parked and self._reader is not None:
            self._reader.cancel()  # nothing to read: the reader ends (a new park starts another)
            self._reader = None
        return entry

    async def _read(self, scope: trio.CancelScope) -> None:
        with scope:
            epoll = self._epoll
            parked = self._parked
            while True:
                await trio.lowlevel.wait_readable(epoll)
                self.passes += 1
                for fd, _events in epoll.poll(0, self._max_events):
                    entry = parked.get(fd)
                    if entry is None:  # woken or cancelled earlier in this pass
                        continue
                    try:
                        self._on_ready(fd, entry.item)
                    except Exception:  # one connection's bug must not stop every reader
                        log.exception("handling a readable socket (fd %d) failed", fd)
                        self.wake(fd, self._failed)


__all__ = ["MAX_EVENTS", "Poller", "available"]
