"""The worker's thread pool: threads for receivers that hang, few of them while posts are quick.

Celery's thread pool starts a thread for every task it is handed while no thread is idle,
up to the concurrency (256 in the Procfile), and keeps them all. Under a burst to fast
receivers every one of them runs: 256 threads take turns at the GIL for work that 8 do
faster, each with its stack, its malloc arena and its share of the database and HTTP
pools, and PostgreSQL spends more CPU per statement the more of them write at once. The
concurrency is there for receivers that hang (a healthy endpoint must not wait behind
5-second timeouts), so that is what it is spent on here: the pool runs up to
``core`` threads, plus one for every thread whose post has waited longer than
``BLOCKED_AFTER``, up to the concurrency. A watcher grows the pool when tasks wait and
such posts hold threads; tasks are handed to threads in the order they came, as before.

``--pool threads`` gets this pool (``webhooks_worker.celery_app`` swaps the class in when
the worker starts), so the command lines stay Celery's own.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from celery.concurrency import thread

# A post that has waited this long counts its thread as blocked. A loopback post takes
# about a millisecond, but under a full CPU a thread may wait some tens of milliseconds
# for the GIL after its answer came: at 20 ms the benchmark's pool grew by ~20 threads a
# worker with every receiver answering at once, at 50 ms by none or one. Receivers that
# answer within it share the core threads (8 threads at 40 ms a post: 200 posts/s).
BLOCKED_AFTER = 0.05
# How often the watcher looks for tasks waiting behind blocked threads.
WATCH_EVERY = 0.02


class _CountedHere:
    """Stands in for the executor's idle-thread semaphore: ElasticExecutor counts for itself.

    Python's executor takes a token per task handed to an idle thread and gives one back
    per task finished; a task that waited in the queue took none, so once tasks queue the
    tokens overstate the idle threads, and the watcher would see idle threads where none is.
    """

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        return False

    def release(self, n: int = 1) -> None:
        return None


class ElasticExecutor(ThreadPoolExecutor):
    """A ThreadPoolExecutor that runs ``core`` threads plus one per blocked thread.

    ``blocked()`` says how many of its threads wait on something slow; the executor never
    starts more than ``max_workers`` threads, and threads it started stay (as Python's
    executor's do).
    """

    def __init__(self, max_workers: int, *, core: int, blocked: Callable[[], int]) -> None:
        super().__init__(max_workers=max_workers, thread_name_prefix="task")
        self._idle_semaphore = _CountedHere()
        self._core = max(1, min(core, max_workers))
        self._blocked = blocked
        self._running = 0
        self._running_lock = threading.Lock()
        self._watch_stop = threading.Event()
        self._watcher: threading.Thread | None = None

    def allowed_threads(self) -> int:
        """How many threads the pool may run now: core plus those blocked."""
        return min(self._max_workers, self._core + self._blocked())

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        return super().submit(self._counted, fn, args, kwargs)

    def _counted(self, fn: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
        with self._running_lock:
            self._running += 1
        try:
            return fn(*args, **kwargs)
        finally:
            with self._running_lock:
                self._running -= 1

    def _threads_wanted(self, *, limit: int) -> int:
        """How many threads to start so that queued tasks find one, within ``limit`` threads."""
        threads = len(self._threads)
        idle = threads - self._running
        return max(0, min(limit - threads, self._work_queue.qsize() - idle))

    def _adjust_thread_count(self) -> None:
        # Called by submit(), after queueing the task, with the shutdown lock held.
        if self._watcher is None:
            self._watcher = threading.Thread(target=self._watch, name="pool-watch", daemon=True)
            self._watcher.start()
        if self._threads_wanted(limit=self._core) or self._threads_wanted(
            limit=self.allowed_threads()
        ):
            super()._adjust_thread_count()  # starts one thread (the idle check always fails)
        # else an idle thread takes the task, or it waits for one to finish or the watcher

    def _watch(self) -> None:
        while not self._watch_stop.wait(WATCH_EVERY):
            if self._work_queue.empty():
                continue
            with self._shutdown_lock:
                if self._shutdown:
                    return
                for _ in range(self._threads_wanted(limit=self.allowed_threads())):
                    super()._adjust_thread_count()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._watch_stop.set()
        super().shutdown(wait=wait, cancel_futures=cancel_futures)


def _blocked_posts() -> int:
    from .tasks import http_client

    return http_client().posts_waiting_longer_than(BLOCKED_AFTER)


class ElasticThreadPool(thread.TaskPool):
    """Celery's thread pool on an ElasticExecutor (``--pool threads``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        from shared.config import get_settings

        self.executor = ElasticExecutor(
            self.limit, core=get_settings().worker_core_threads, blocked=_blocked_posts
        )

    def _get_info(self) -> dict:
        info = super()._get_info()
        info["core-threads"] = self.executor._core
        return info
