"""The worker's thread pool: few threads while posts are quick, more while receivers hang.

Celery's thread pool starts a thread for every task it is handed while no thread is idle,
up to the concurrency, and keeps them all. Under a burst to fast receivers every one of
them runs: hundreds of threads take turns at the GIL for work that a few do faster, each
with its stack, its malloc arena and its share of the database and HTTP pools, and
PostgreSQL spends more CPU per statement the more of them write at once. The concurrency
is there for receivers that hang (a healthy endpoint must not wait behind their
timeouts), so that is what it is spent on here: ``ElasticExecutor`` runs up to ``core``
threads, plus one for every post that has waited longer than ``BLOCKED_AFTER``, up to the
concurrency.

Tasks wait for a thread in lanes, one per broker queue they came from, and the lanes take
turns: tasks of one lane start in the order they came, and a task of a lane with one task
waiting starts before the second of a lane with thousands. The queues are organizations'
lanes (``shared.lanes``): without turns here, a worker holding a batch of one
organization's tasks (all it has prefetched, or thousands of retries coming due at once)
would run them all before another organization's task it took from the broker just after.

``ElasticThreadPool`` plugs it into Celery as a pool (``celery.concurrency.base.BasePool``);
``webhooks_worker.celery_app`` makes it the pool of ``--pool threads``, so the command lines
stay Celery's own.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Hashable
from concurrent.futures import Future, wait
from typing import Any

from celery.concurrency.base import BasePool, apply_target

from shared.config import get_settings

from .client import http_client
from .fair_share import PrefetchWindow, had_countdown, queue_of

# A post that has waited this long counts its thread as blocked. A loopback post takes
# about a millisecond, but with the CPU busy a thread may wait some tens of milliseconds
# for the GIL after its answer came; counted as blocked, such threads would grow the pool
# under plain load. Receivers that answer within it share the core threads.
BLOCKED_AFTER = 0.05
# How often, while tasks wait for a thread, the pool looks again for blocked posts.
WATCH_EVERY = 0.02
# A thread beyond the core ones that has had nothing to do for this long ends: the hang
# that called for it is over, and a new one costs a thread start (well under a millisecond).
RETIRE_AFTER = 30.0


class _Task:
    """One submitted call and the future that reports it."""

    __slots__ = ("args", "fn", "future", "kwargs")

    def __init__(self, fn: Callable[..., Any], args: tuple, kwargs: dict) -> None:
        self.future: Future = Future()
        self.fn, self.args, self.kwargs = fn, args, kwargs

    def run(self) -> None:
        if not self.future.set_running_or_notify_cancel():
            return
        try:
            result = self.fn(*self.args, **self.kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed to whoever waits on the future
            self.future.set_exception(exc)
        else:
            self.future.set_result(result)


class ElasticExecutor:
    """An executor that runs ``core`` threads, plus one per blocked post, up to ``max_threads``.

    ``blocked()`` says how many posts wait on something slow. Tasks start in the order they
    were submitted to their lane, the lanes with tasks waiting taking turns; threads beyond
    ``core`` end after ``retire_after`` idle seconds.
    """

    def __init__(
        self,
        max_threads: int,
        *,
        core: int,
        blocked: Callable[[], int],
        retire_after: float = RETIRE_AFTER,
        name: str = "task",
    ) -> None:
        self.max_threads = max(1, max_threads)
        self.core = max(1, min(core, self.max_threads))
        self._blocked = blocked
        self._retire_after = retire_after
        self._name = name
        # One lock for the queue and the counts; threads wait on `_work` for a task, the
        # watcher on `_backlog` for tasks that found no thread.
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)
        self._backlog = threading.Condition(self._lock)
        # Tasks waiting for a thread, by lane; the lanes that have some, in turn order.
        self._lanes: dict[Hashable, deque[_Task]] = {}
        self._turns: deque[Hashable] = deque()
        self._waiting = 0
        self._threads: set[threading.Thread] = set()
        # Threads waiting for a task, counting those just started: a task queued while
        # len(queue) <= idle will be taken without a new thread.
        self._idle = 0
        self._started = 0
        self._shutdown = False
        self._watcher: threading.Thread | None = None
        # The watcher is looking every WATCH_EVERY seconds already (tasks are waiting):
        # a submit need not wake it, which under a steady backlog would be every submit.
        self._watching = False

    @property
    def threads(self) -> int:
        """How many threads the executor runs now."""
        with self._lock:
            return len(self._threads)

    @property
    def waiting(self) -> int:
        """How many submitted tasks wait for a thread."""
        with self._lock:
            return self._waiting

    def allowed_threads(self) -> int:
        """How many threads the executor may run now: core plus one per blocked post."""
        return min(self.max_threads, self.core + self._blocked())

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        """Run ``fn(*args, **kwargs)`` on a thread, after the tasks submitted before it."""
        return self.submit_to(None, fn, *args, **kwargs)

    def submit_to(
        self, lane: Hashable, fn: Callable[..., Any], /, *args: Any, **kwargs: Any
    ) -> Future:
        """Run ``fn(*args, **kwargs)`` on a thread, in ``lane``'s turn (see the class)."""
        task = _Task(fn, args, kwargs)
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot submit to an executor that was shut down")
            self._push(lane, task)
            if self._waiting > self._idle:
                # No idle thread will take it: a new thread if the pool may grow now, else
                # the watcher grows it as soon as enough posts are blocked.
                if len(self._threads) < self.core or len(self._threads) < self.allowed_threads():
                    self._start_thread()
                else:
                    self._ensure_watcher()
                    if not self._watching:
                        self._backlog.notify()
            self._work.notify()
        return task.future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop taking tasks; with ``cancel_futures`` drop those not started; join if ``wait``."""
        with self._lock:
            self._shutdown = True
            if cancel_futures:
                while self._waiting:
                    self._pop().future.cancel()
            threads = list(self._threads)
            watcher = self._watcher
            self._work.notify_all()
            self._backlog.notify_all()
        if wait:
            for thread in threads:
                thread.join()
            if watcher is not None:
                watcher.join()

    # -- with the lock held

    def _push(self, lane: Hashable, task: _Task) -> None:
        waiting = self._lanes.get(lane)
        if waiting is None:
            waiting = self._lanes[lane] = deque()
            self._turns.append(lane)
        waiting.append(task)
        self._waiting += 1

    def _pop(self) -> _Task:
        """The next task: the first of the lane whose turn it is; that lane goes last."""
        lane = self._turns.popleft()
        waiting = self._lanes[lane]
        task = waiting.popleft()
        if waiting:
            self._turns.append(lane)
        else:
            del self._lanes[lane]
        self._waiting -= 1
        return task

    def _start_thread(self) -> None:
        self._started += 1
        thread = threading.Thread(
            target=self._serve, name=f"{self._name}-{self._started}", daemon=True
        )
        self._threads.add(thread)
        self._idle += 1
        thread.start()

    def _ensure_watcher(self) -> None:
        if self._watcher is None:
            self._watcher = threading.Thread(target=self._watch, name=f"{self._name}-watch")
            self._watcher.daemon = True
            self._watcher.start()

    def _grow(self) -> None:
        """Start threads for waiting tasks, as many as blocked posts allow."""
        wanted = min(self.allowed_threads() - len(self._threads), self._waiting - self._idle)
        for _ in range(max(0, wanted)):
            self._start_thread()
        if wanted > 0:
            self._work.notify(wanted)

    # -- threads

    def _serve(self) -> None:
        me = threading.current_thread()
        while True:
            with self._lock:
                while not self._waiting and not self._shutdown:
                    extra = len(self._threads) > self.core
                    if (
                        not self._work.wait(self._retire_after if extra else None)
                        and not self._waiting
                        and len(self._threads) > self.core
                    ):
                        self._idle -= 1
                        self._threads.discard(me)
                        return
                if not self._waiting:  # shut down, nothing left to run
                    self._idle -= 1
                    self._threads.discard(me)
                    return
                task = self._pop()
                self._idle -= 1
            try:
                task.run()
            finally:
                del task  # not kept alive while this thread waits for the next one
                with self._lock:
                    self._idle += 1

    def _watch(self) -> None:
        with self._lock:
            while not self._shutdown:
                if self._waiting > self._idle:
                    self._watching = True
                    self._grow()
                    self._backlog.wait(WATCH_EVERY)
                else:
                    self._watching = False
                    self._backlog.wait()


def _blocked_posts() -> int:
    return http_client().posts_waiting_longer_than(BLOCKED_AFTER)


class _Applied:
    """What Celery's consumer gets back from ``apply_async``: the task's future."""

    def __init__(self, future: Future) -> None:
        self.future = future
        self.get = future.result

    def wait(self, timeout: float | None = None) -> None:
        wait([self.future], timeout)


class ElasticThreadPool(BasePool):
    """A Celery task pool on an ElasticExecutor (``--pool threads``)."""

    body_can_be_buffer = True
    # Stopping joins threads, which a signal handler must not do.
    signal_safe = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.executor = ElasticExecutor(
            self.limit, core=get_settings().worker_core_threads, blocked=_blocked_posts
        )
        # The consumer's prefetch window, handed over by webhooks_worker.fair_share's
        # consumer step once the consumer has one; see ``on_apply``.
        self.prefetch_window: PrefetchWindow | None = None

    def on_apply(
        self,
        target: Callable[..., Any],
        args: tuple | None = None,
        kwargs: dict | None = None,
        callback: Callable[..., Any] | None = None,
        accept_callback: Callable[..., Any] | None = None,
        **_options: Any,
    ) -> _Applied:
        """Queue one task for the executor's threads, in the lane of the queue it came from.

        A countdown task that fell due keeps a place in the prefetch window until it
        starts. Celery takes it out of the window as it hands it over, while the task is
        still unacknowledged: with thousands of one organization's retries falling due at
        once, the worker would count them against the window and fetch nothing, not even
        another organization's new task, until it had run them all. Kept in the window,
        they wait in their own lane and the worker goes on fetching.
        """
        window = self.prefetch_window
        if window is not None and had_countdown(args):
            window.hold()
            future = self.executor.submit_to(
                queue_of(args), window.release_then, apply_target, target, args, kwargs,
                callback, accept_callback,
            )  # fmt: skip
        else:
            future = self.executor.submit_to(
                queue_of(args), apply_target, target, args, kwargs, callback, accept_callback
            )
        return _Applied(future)

    def on_stop(self) -> None:
        """Wait for running tasks; those not started stay unacknowledged for the broker."""
        self.executor.shutdown(cancel_futures=True)
        super().on_stop()

    @property
    def info(self) -> dict:
        """What ``celery inspect stats`` shows of the pool."""
        return {
            "implementation": f"{type(self).__module__}:{type(self).__name__}",
            "max-concurrency": self.limit,
            "core-threads": self.executor.core,
            "threads": self.executor.threads,
            "waiting": self.executor.waiting,
        }
