"""The tasks a worker sends one at a time, published from one thread, several per round trip.

A delivery task sends at most one task itself, after its write: its next try, or the
next delivery of an ordered resource that its end let go. Sent where it is made, each
one takes a producer from the pool and a Redis round trip of its own, about four times
the CPU of the same message published in a batch (kombu's ``Producer.batch``, one
pipeline). So the worker hands such tasks to one publishing thread, which takes every
task waiting when it wakes and publishes them together: under load the batches grow by
themselves, and when idle a task still leaves at once.

What a task message carries from the thread that made it is taken there: its Celery
lineage (the task that sent it, and so its lane: ``webhooks_worker.routing``) and the
tracing context (``shared.tracing.within_current``).

A task handed over is not yet in the broker. The rows it names are committed first, so
one lost with the process (killed before publishing it) is sent again by beat's sweep,
as after any failed enqueue; ``stop`` publishes what is waiting before the worker exits.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from queue import Empty, SimpleQueue
from typing import Any

log = logging.getLogger("webhooks.worker")

# Tasks published per batch at most (one Redis pipeline each).
BATCH = 500


@dataclass(frozen=True, slots=True)
class Pending:
    """A task to publish: what to send, and how to send it as its maker would have."""

    name: str
    call: tuple  # (args, countdown, eta, organization)
    lineage: Any  # what ``publish`` needs of the task that made it
    within: Callable[[Callable[[], Any]], Any]  # runs a callable in the maker's tracing context


# Publishes a batch of pending tasks in one round trip (``webhooks_worker.celery_app``).
PublishBatch = Callable[[list[Pending]], None]


class Publisher:
    """One publishing thread per process, started with the first task handed over."""

    def __init__(self, publish: PublishBatch) -> None:
        self._publish = publish
        self._queue: SimpleQueue[Pending | None] = SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid: int | None = None

    def submit(self, pending: Pending) -> None:
        """Hand a task over; it is published as soon as the thread gets to it."""
        if self._thread is None or self._pid != os.getpid():
            self._start()
        self._queue.put(pending)

    def stop(self, timeout: float = 10.0) -> None:
        """Publish what is waiting, then end the thread (the worker is shutting down)."""
        thread = self._thread
        if thread is None or self._pid != os.getpid():
            return
        self._queue.put(None)
        thread.join(timeout)
        self._thread = None

    def _start(self) -> None:
        with self._lock:
            # A forked child has the parent's queue object but not its thread: a new pair.
            if self._thread is not None and self._pid == os.getpid():
                return
            self._queue = SimpleQueue()
            self._pid = os.getpid()
            self._thread = threading.Thread(
                target=self._run, name="webhooks-publisher", daemon=True
            )
            self._thread.start()

    def _run(self) -> None:
        queue = self._queue
        stopping = False
        while True:
            if stopping:  # publish what came before the stop, then end
                try:
                    item = queue.get_nowait()
                except Empty:
                    return
            else:
                item = queue.get()
            batch: list[Pending] = []
            while True:
                if item is None:
                    stopping = True
                else:
                    batch.append(item)
                if len(batch) >= BATCH:
                    break
                try:
                    item = queue.get_nowait()
                except Empty:
                    break
            if batch:
                self._send(batch)

    def _send(self, batch: list[Pending]) -> None:
        try:
            self._publish(batch)
        except Exception as exc:  # noqa: BLE001 - any broker failure is recovered by the sweep
            log.warning(
                "publishing %d tasks failed (%s); beat's sweep will recover them",
                len(batch),
                exc,
            )
