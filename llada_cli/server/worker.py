"""One model, one job at a time: a bounded queue in front of a single worker thread.

Requests wait in line (at most `max_queue` of them; beyond that the server answers 503 with
Retry-After). Every job gets a cancel flag: a client that disconnects, a request that runs past its time
limit and a shutting-down server set it, and the job stops at its next step (the sampler's and the
decoder's step callbacks check it).
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from ..errors import LladaError


class Cancelled(LladaError):
    """The job was cancelled (client gone, time limit, shutdown)."""


@dataclass
class Job:
    run: Callable  # run(job) -> result, in the worker thread
    cancel: threading.Event = field(default_factory=threading.Event)
    events: asyncio.Queue | None = None  # progress for a streaming response
    loop: asyncio.AbstractEventLoop | None = None
    future: asyncio.Future | None = None
    started: bool = False  # the worker has taken it (its slot is given back when it ends)
    dropped: bool = False  # abandoned while waiting: its queue slot is free, the worker skips it

    def check(self) -> None:
        """Called from the job's step callbacks: raise if it has been cancelled."""
        if self.cancel.is_set():
            raise Cancelled("the request was cancelled")

    def emit(self, event) -> None:
        """Hand an event to the waiting response (thread-safe)."""
        self.check()
        if self.events is not None and self.loop is not None:
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)


class Worker:
    def __init__(self, max_queue: int):
        self.max_queue = max_queue
        self.jobs: queue.Queue = queue.Queue()
        self.pending = 0  # queued + running
        self.running: Job | None = None
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._loop, name="llada-worker", daemon=True)
        self.thread.start()

    def submit(self, job: Job) -> asyncio.Future:
        """Queue a job; a full queue is refused (the caller answers 503)."""
        with self.lock:
            if self.pending > self.max_queue:  # one running and max_queue waiting
                raise QueueFull
            self.pending += 1
        job.loop = asyncio.get_running_loop()
        job.future = job.loop.create_future()
        self.jobs.put(job)
        return job.future

    def abandon(self, job: Job) -> None:
        """Nobody waits for `job` now: it stops at its next step, and if it has not started its queue
        slot is given back at once (the worker skips it when its turn comes)."""
        job.cancel.set()
        with self.lock:
            if not job.started and not job.dropped:
                job.dropped = True
                self.pending -= 1
        if job.future is not None:
            job.future.cancel()

    def cancel_all(self) -> None:
        """Shutdown: the running job and every waiting one stop at their next step."""
        with self.lock:
            running = self.running
        if running is not None:
            running.cancel.set()
        for job in list(self.jobs.queue):
            if job is not None:
                job.cancel.set()

    def stop(self) -> None:
        self.cancel_all()
        self.jobs.put(None)

    def _loop(self) -> None:
        while (job := self.jobs.get()) is not None:
            with self.lock:
                if job.dropped:
                    continue
                job.started, self.running = True, job
            try:
                job.check()
                result, error = job.run(job), None
            except BaseException as exc:  # handed to the waiting request, which answers for it
                result, error = None, exc
            finally:
                with self.lock:
                    self.running = None
                    self.pending -= 1
            job.loop.call_soon_threadsafe(_settle, job.future, result, error)


def _settle(future: asyncio.Future, result, error) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class QueueFull(Exception):
    """More requests are waiting than --max-queue allows."""
