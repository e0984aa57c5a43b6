"""A worker runner: registers handlers for job types your tenant declares, leases their jobs
from Conveyor, runs them with heartbeats in the background, and records each outcome.

    worker = Worker("http://127.0.0.1:8080", key, name="images-1", concurrency=4)

    @worker.task("resize-image", payload_schema={"type": "object", "required": ["url"]})
    def resize(ctx):
        return {"thumb": make_thumbnail(ctx.payload["url"])}

    worker.run()  # until SIGTERM or SIGINT

A handler takes a :class:`JobContext` and returns the job's result (any JSON). It may be a
plain function (run in a thread) or a coroutine function. Raising :class:`PermanentError`
makes the job dead at once; any other exception is retryable, and the job runs again after
Conveyor's backoff until its attempts run out. A job that outlives its `timeout_seconds`
fails as retryable.

Conveyor's guarantees hold as for its in-process workers: every outcome is fenced by the
lease token, so a worker whose lease ran out (it hung, or lost the network) cannot overwrite
the job's new attempt; a heartbeat answered 409 (the job was cancelled or taken back) stops
the handler; a worker killed outright loses nothing, its jobs run again after their lease.
On SIGTERM the worker stops leasing, lets running jobs finish for `shutdown_grace` seconds,
and hands the rest back so they run again at once.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import signal
import socket
import threading
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Dict, List, Optional, Union

from .client import ApiError, AsyncClient, Json

log = logging.getLogger("conveyor.worker")

Handler = Callable[["JobContext"], Union[Any, Awaitable[Any]]]

# The longest error text Conveyor stores.
MAX_ERROR = 10_000


class RetryableError(Exception):
    """The attempt failed; another attempt may succeed (the default for any exception)."""


class PermanentError(Exception):
    """The job cannot succeed: it is dead at once, whatever attempts it has left."""


@dataclass
class JobContext:
    """What a handler sees of its job."""

    job: Json
    attempt: int
    #: For a saga's step: ``{"saga_id", "step", "compensating", "results"}``.
    saga: Optional[Json]
    #: Set when the job was cancelled or taken back: the handler should stop.
    stopped: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def id(self) -> str:
        return self.job["id"]

    @property
    def payload(self) -> Any:
        return self.job.get("payload")

    @property
    def metadata(self) -> Json:
        return self.job.get("metadata") or {}


@dataclass
class _Task:
    handler: Handler
    spec: Json


class Worker:
    def __init__(self, base_url: str, key: str, *, name: Optional[str] = None,
                 concurrency: int = 4, lease_seconds: int = 60, wait_seconds: int = 20,
                 queues: Optional[List[str]] = None, shutdown_grace: float = 10.0,
                 client: Optional[AsyncClient] = None):
        if not 1 <= concurrency <= 100:
            raise ValueError("concurrency must be 1..100")
        self.base_url = base_url
        self.key = key
        self.name = name or f"{socket.gethostname()}-{os.getpid()}"
        self.concurrency = concurrency
        self.lease_seconds = lease_seconds
        self.wait_seconds = wait_seconds
        self.queues = queues
        self.shutdown_grace = shutdown_grace
        self._client = client
        self._tasks: Dict[str, _Task] = {}
        self._stopping: Optional[asyncio.Event] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._running: Dict[str, asyncio.Task] = {}

    def task(self, job_type: str, *, declare: bool = True, **spec: Any) -> Callable[[Handler], Handler]:
        """Registers the handler of `job_type`. With `declare` (the default) the worker declares
        the type when it starts, with `spec` (``payload_schema``, ``queue``, ``max_attempts``,
        ``timeout_seconds``, ``concurrency_limit``)."""

        def register(handler: Handler) -> Handler:
            self._tasks[job_type] = _Task(handler, spec if declare else None)
            return handler

        return register

    def run(self) -> None:
        """Runs until SIGTERM or SIGINT, then stops gracefully."""
        asyncio.run(self.run_async(install_signals=True))

    def stop(self) -> None:
        """Asks a running worker to stop, as SIGTERM does (from any thread)."""
        if self._stopping is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)

    async def run_async(self, *, install_signals: bool = False) -> None:
        if not self._tasks:
            raise RuntimeError("no task registered")
        self._stopping = asyncio.Event()
        loop = self._loop = asyncio.get_running_loop()
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self._stopping.set)
        client = self._client or AsyncClient(self.base_url, self.key)
        try:
            for job_type, t in self._tasks.items():
                if t.spec is not None:
                    await client.declare_job_type(job_type, **t.spec)
            await self._lease_loop(client)
            await self._drain(client)
        finally:
            if self._client is None:
                await client.aclose()

    async def _lease_loop(self, client: AsyncClient) -> None:
        types = sorted(self._tasks)
        stopping = asyncio.ensure_future(self._stopping.wait())
        backoff = 0.5
        try:
            while not self._stopping.is_set():
                free = self.concurrency - len(self._running)
                if free <= 0:
                    # Full: wait for a job to end (or the stop).
                    await asyncio.wait([stopping, *self._running.values()],
                                       return_when=asyncio.FIRST_COMPLETED)
                    continue
                lease = asyncio.ensure_future(client.lease_jobs(
                    worker=self.name, types=types, max=free, wait_seconds=self.wait_seconds,
                    lease_seconds=self.lease_seconds, queues=self.queues))
                await asyncio.wait([stopping, lease], return_when=asyncio.FIRST_COMPLETED)
                if not lease.done():
                    # Stopping: a lease answered after this is lost to us, and its jobs run
                    # again after their lease; cancelling the request makes that unlikely.
                    lease.cancel()
                    break
                try:
                    jobs = lease.result()
                    backoff = 0.5
                except (ApiError, OSError, Exception) as e:  # noqa: BLE001 - any transport error
                    if isinstance(e, ApiError) and e.status in (401, 403, 422):
                        raise
                    log.warning("lease failed (%s); retrying in %.1fs", e, backoff)
                    await asyncio.wait([stopping], timeout=backoff)
                    backoff = min(backoff * 2, 10)
                    continue
                for leased in jobs:
                    job_id = leased["job"]["id"]
                    self._running[job_id] = asyncio.ensure_future(self._run_one(client, leased))
                    self._running[job_id].add_done_callback(
                        lambda _t, job_id=job_id: self._running.pop(job_id, None))
        finally:
            stopping.cancel()

    async def _drain(self, client: AsyncClient) -> None:
        """Lets running jobs finish for the grace period, then hands the rest back."""
        if not self._running:
            return
        running = list(self._running.values())
        _, late = await asyncio.wait(running, timeout=self.shutdown_grace)
        for t in late:
            t.cancel()
        if late:
            await asyncio.wait(late)

    async def _run_one(self, client: AsyncClient, leased: Json) -> None:
        job = leased["job"]
        token = leased["lease_token"]
        task = self._tasks[job["type"]]
        ctx = JobContext(job=job, attempt=leased["attempt"], saga=leased.get("saga"))
        work = asyncio.ensure_future(self._call(task.handler, ctx))
        beats = asyncio.ensure_future(self._heartbeats(client, job["id"], token, ctx, work))
        try:
            try:
                result = await asyncio.wait_for(asyncio.shield(work), job["timeout_seconds"])
            except asyncio.TimeoutError:
                work.cancel()
                await self._record(client.fail_job(
                    job["id"], token, f"timed out after {job['timeout_seconds']}s", retryable=True))
                return
            except asyncio.CancelledError:
                if ctx.stopped.is_set():
                    return  # cancelled or taken back: the job is no longer ours
                # The worker is stopping and the grace is over: hand the job back.
                work.cancel()
                await self._record(asyncio.shield(client.release_job(job["id"], token)))
                raise
            except PermanentError as e:
                await self._record(client.fail_job(job["id"], token, _error(e), retryable=False))
                return
            except Exception as e:  # noqa: BLE001 - a handler's failure is the job's
                await self._record(client.fail_job(job["id"], token, _error(e), retryable=True))
                return
            await self._record(client.complete_job(job["id"], token, result))
        finally:
            beats.cancel()

    async def _call(self, handler: Handler, ctx: JobContext) -> Any:
        if inspect.iscoroutinefunction(handler):
            return await handler(ctx)
        # A plain function runs in a daemon thread of its own, not the loop's executor: a
        # thread cannot be interrupted, and the executor's are joined at exit, so one stuck
        # handler would keep a stopping worker alive after its job was handed back.
        loop = asyncio.get_running_loop()
        done: asyncio.Future = loop.create_future()

        def settle(outcome: Callable[[], None]) -> None:
            if not done.done():
                outcome()

        def hand_over(outcome: Callable[[], None]) -> None:
            try:
                loop.call_soon_threadsafe(settle, outcome)
            except RuntimeError:
                pass  # the loop is gone: the worker stopped and handed the job back

        def run() -> None:
            try:
                result = handler(ctx)
            except BaseException as e:  # noqa: BLE001 - handed to the awaiting task
                hand_over(lambda e=e: done.set_exception(e))
            else:
                hand_over(lambda: done.set_result(result))

        threading.Thread(target=run, name=f"conveyor-job-{ctx.id}", daemon=True).start()
        return await done

    async def _heartbeats(self, client: AsyncClient, job_id: str, token: str, ctx: JobContext,
                          work: asyncio.Future) -> None:
        every = max(1.0, self.lease_seconds / 3)
        while True:
            await asyncio.sleep(every)
            try:
                await client.heartbeat_job(job_id, token, lease_seconds=self.lease_seconds)
            except ApiError as e:
                if e.status in (404, 409):
                    log.info("job %s is no longer ours (%s); stopping it", job_id, e.detail)
                    ctx.stopped.set()
                    work.cancel()
                    return
                log.warning("heartbeat of %s failed: %s", job_id, e)
            except Exception as e:  # noqa: BLE001 - a missed beat is retried at the next
                log.warning("heartbeat of %s failed: %s", job_id, e)

    async def _record(self, call: Awaitable[Json]) -> None:
        try:
            await call
        except ApiError as e:
            if e.status in (404, 409):
                log.info("outcome not recorded: %s", e.detail)  # fenced: no longer ours
            else:
                log.error("outcome not recorded: %s", e)
        except Exception as e:  # noqa: BLE001 - the job runs again after its lease
            log.error("outcome not recorded: %s", e)


def _error(e: BaseException) -> str:
    text = (str(e) or type(e).__name__).replace("\x00", "\ufffd")
    return text[:MAX_ERROR]
