"""Dynamic micro-batching: concurrent requests share one forward pass.

    batcher = MicroBatcher(model_fn, max_batch_size=32, max_wait_ms=5, name="classify", on_batch=..., concurrency=1)
    batcher.start()                              # in the server's event loop (the lifespan)
    probs = await batcher.submit_many(rows)      # one request's rows, kept together
    await batcher.stop()                         # on shutdown: runs everything still queued

One worker task collects queued items into a batch and calls ``fn(batch)`` in a worker thread, so
the event loop keeps answering while the model runs; at most ``concurrency`` batches run at once
(default 1: for a model whose one forward pass already uses every core, concurrent passes would only
fight over them; a runtime whose passes use one core each, like ONNX Runtime's int8 graphs, runs
several). A batch closes when it holds ``max_batch_size`` rows or ``max_wait_ms`` after its first item
was queued, whichever comes first; while batches run the next fills, so under load batches are full
and no item waits longer than the batches ahead of it.

Items carry a ``key`` (default ``None``); only items with the same key share a batch (the server
batches classifier rows only, all under one key: generation shares decoding steps in
``tunekit.models.decoding`` instead). Each caller gets its own result, or
the exception ``fn`` raised for its items: when a batch of several callers fails, each caller's items
run again on their own, so one bad request fails only itself. The worker keeps running either way. A caller that is
cancelled (its client hung up) is dropped from the queue, or, if its batch already runs, its
result is discarded; the rest of the batch is unaffected.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

logger = logging.getLogger("tunekit.serve")

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class _Entry:
    """One caller's items (one for ``submit``, all of a request's rows for ``submit_many``)."""

    items: list[Any]
    future: asyncio.Future[Any]
    queued_at: float
    many: bool  # the caller wants a list back (submit_many) rather than one result
    rows: int = field(init=False)

    def __post_init__(self) -> None:
        self.rows = len(self.items)


class MicroBatcher(Generic[T, R]):
    """Batches items from concurrent callers for ``fn``, which maps a list of items to a list of results.

    ``fn`` must return exactly one result per item, in order. ``on_batch(size)`` is called with the
    rows of each batch before it runs (e.g. ``ServerMetrics.observe_batch``). ``concurrency``: how many
    batches may run at once, each in its own worker thread (``fn`` must then be safe to call so).
    """

    def __init__(self, fn: Callable[[list[T]], list[R]], max_batch_size: int, max_wait_ms: float, name: str,
                 on_batch: Callable[[int], None] | None = None, concurrency: int = 1):
        if max_batch_size < 1:
            raise ValueError(f"batcher {name!r}: max_batch_size must be >= 1, got {max_batch_size}")
        if max_wait_ms < 0:
            raise ValueError(f"batcher {name!r}: max_wait_ms must be >= 0, got {max_wait_ms}")
        if concurrency < 1:
            raise ValueError(f"batcher {name!r}: concurrency must be >= 1, got {concurrency}")
        self.fn, self.max_batch_size, self.max_wait, self.name, self.on_batch = fn, max_batch_size, max_wait_ms / 1000, name, on_batch
        self.concurrency = concurrency
        self._running: set[asyncio.Task[None]] = set()  # batches in flight, at most ``concurrency``
        self._queues: dict[Hashable, deque[_Entry]] = {}  # key -> entries in arrival order
        self._depth = 0  # rows queued and not yet in a batch; a plain int, so other threads (a scrape) can read it
        self._wake: asyncio.Event | None = None
        self._worker: asyncio.Task[None] | None = None
        self._stopping = False
        self._busy_until = -1.0  # loop time when the last batch finished; what queued before it waits no longer

    @property
    def queue_depth(self) -> int:
        """Rows waiting for a batch (not counting the batch that runs now)."""
        return self._depth

    def start(self) -> None:
        """Start the worker task in the running event loop; ``submit`` calls it when needed."""
        if self._stopping:
            raise RuntimeError(f"batcher {self.name!r} is stopped")
        if self._worker is None:
            self._wake = asyncio.Event()
            self._worker = asyncio.get_running_loop().create_task(self._work(), name=f"tunekit-batcher-{self.name}")

    async def stop(self) -> None:
        """Refuse new items, run every queued item (without waiting for batches to fill), then end the worker."""
        self._stopping = True
        if self._worker is None:
            return
        assert self._wake is not None
        self._wake.set()
        await self._worker

    async def submit(self, item: T, key: Hashable = None) -> R:
        """``fn``'s result for ``item``, batched with other callers' items of the same ``key``."""
        return await self._enqueue([item], key, many=False)

    async def submit_many(self, items: Sequence[T], key: Hashable = None) -> list[R]:
        """``fn``'s results for ``items``, in order; they go into one batch together (alone if they
        are more than ``max_batch_size``)."""
        if not items:
            return []
        return await self._enqueue(list(items), key, many=True)

    async def _enqueue(self, items: list[T], key: Hashable, many: bool) -> Any:
        if self._stopping:
            raise RuntimeError(f"batcher {self.name!r} is stopped; it takes no new items")
        self.start()
        loop = asyncio.get_running_loop()
        entry = _Entry(items, loop.create_future(), loop.time(), many)
        self._queues.setdefault(key, deque()).append(entry)
        self._depth += entry.rows
        assert self._wake is not None
        self._wake.set()
        return await entry.future  # cancelling the caller cancels the future; the worker skips it

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                self._running = {t for t in self._running if not t.done()}
                if len(self._running) >= self.concurrency:  # every slot busy: wait for a batch to end
                    await asyncio.wait(self._running, return_when=asyncio.FIRST_COMPLETED)
                    continue
                batch = await self._next_batch()
                if batch is None:
                    break
                self._running.add(loop.create_task(self._run(batch), name=f"tunekit-batch-{self.name}"))
            if self._running:  # stopping: the batches in flight answer their callers before the worker ends
                await asyncio.wait(self._running)
        finally:  # empty unless the task was cancelled (the loop is closing): no caller may wait forever
            for q in self._queues.values():
                _fail(q, RuntimeError(f"batcher {self.name!r} was cancelled before this item ran"))
            self._queues.clear()
            self._depth = 0

    async def _next_batch(self) -> list[_Entry] | None:
        """Wait until some key's queue is full or its oldest item has waited ``max_wait``; take its batch.

        Among ready keys, the one whose oldest item came first goes first. None once stopping and empty.
        """
        assert self._wake is not None
        loop = asyncio.get_running_loop()
        while True:
            self._wake.clear()
            self._drop_cancelled()
            now = loop.time()
            ready = [  # items that queued while the previous batch ran have waited long enough already
                (q[0].queued_at, key) for key, q in self._queues.items()
                if self._stopping or sum(e.rows for e in q) >= self.max_batch_size or now >= q[0].queued_at + self.max_wait
                or q[0].queued_at <= self._busy_until
            ]
            if ready:
                return self._take(min(ready, key=lambda r: r[0])[1])
            if self._stopping:
                return None
            deadlines = [q[0].queued_at + self.max_wait for q in self._queues.values()]
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=min(deadlines) - now if deadlines else None)
            except TimeoutError:
                pass

    def _drop_cancelled(self) -> None:
        for key in list(self._queues):
            q = self._queues[key]
            for entry in [e for e in q if e.future.done()]:
                q.remove(entry)
                self._depth -= entry.rows
            if not q:
                del self._queues[key]

    def _take(self, key: Hashable) -> list[_Entry]:
        """The first entries of ``key``'s queue, up to ``max_batch_size`` rows; always at least one."""
        q = self._queues[key]
        batch = [q.popleft()]
        rows = batch[0].rows
        while q and rows + q[0].rows <= self.max_batch_size:
            rows += q[0].rows
            batch.append(q.popleft())
        if not q:
            del self._queues[key]
        self._depth -= rows
        return batch

    async def _run(self, batch: list[_Entry]) -> None:
        """Run ``fn`` on the batch's items in a worker thread and hand each caller its share."""
        try:
            await self._run_batch(batch)
        finally:
            self._busy_until = asyncio.get_running_loop().time()
            if self._wake is not None:  # a slot is free: what queued meanwhile may go now
                self._wake.set()

    async def _run_batch(self, batch: list[_Entry]) -> None:
        items = [item for entry in batch for item in entry.items]
        if self.on_batch is not None:
            try:
                self.on_batch(len(items))
            except Exception:  # a metrics hook must not fail the batch
                logger.exception("batcher %s: on_batch hook failed", self.name)
        try:
            results = await self._call(items)
        except Exception as exc:  # noqa: BLE001 - the worker goes on
            if len(batch) == 1:
                _fail(batch, exc)
                return
            # one caller's bad item must not fail the others: run each caller's items on their own
            logger.warning("batcher %s: a batch of %d requests failed (%s: %s); running each on its own", self.name, len(batch),
                           type(exc).__name__, exc)
            for entry in batch:
                await self._run_batch([entry])
            return
        except BaseException:  # cancelled while fn ran
            _fail(batch, RuntimeError(f"batcher {self.name!r} was cancelled while this item ran"))
            raise
        start = 0
        for entry in batch:
            share = list(results[start:start + entry.rows])
            start += entry.rows
            if not entry.future.done():
                entry.future.set_result(share if entry.many else share[0])

    async def _call(self, items: list) -> list:
        results = await asyncio.to_thread(self.fn, items)
        if len(results) != len(items):
            raise RuntimeError(f"batcher {self.name!r}: fn returned {len(results)} results for {len(items)} items")
        return results


def _fail(entries: Sequence[_Entry] | deque[_Entry], exc: BaseException) -> None:
    for entry in entries:
        if not entry.future.done():
            entry.future.set_exception(exc)
