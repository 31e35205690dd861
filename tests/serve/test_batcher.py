"""The micro-batcher: batches bounded, results routed to their callers, errors contained, nothing lost on stop."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from tunekit.serve.batcher import MicroBatcher


class Recorder:
    """``fn`` for the batcher: doubles each item and remembers every batch (optionally slow, or failing on a marker)."""

    def __init__(self, delay: float = 0.0, fail_on: object = None):
        self.batches: list[list] = []
        self.delay, self.fail_on = delay, fail_on
        self.threads: set[int] = set()
        self.running = 0
        self.max_running = 0
        self._lock = threading.Lock()

    def __call__(self, items: list) -> list:
        with self._lock:
            self.running += 1
            self.max_running = max(self.max_running, self.running)
        try:
            self.threads.add(threading.get_ident())
            self.batches.append(list(items))
            if self.delay:
                time.sleep(self.delay)
            if self.fail_on in items:
                raise ValueError(f"bad item {self.fail_on}")
            return [item * 2 for item in items]
        finally:
            with self._lock:
                self.running -= 1


def test_concurrent_submits_share_batches_and_get_their_own_results():
    fn = Recorder(delay=0.01)
    sizes: list[int] = []

    async def main():
        batcher = MicroBatcher(fn, max_batch_size=8, max_wait_ms=20, name="t", on_batch=sizes.append)
        batcher.start()
        results = await asyncio.gather(*(batcher.submit(i) for i in range(20)))
        await batcher.stop()
        return results

    assert asyncio.run(main()) == [i * 2 for i in range(20)]
    assert all(len(b) <= 8 for b in fn.batches)
    assert 3 <= len(fn.batches) < 20
    assert sorted(x for b in fn.batches for x in b) == list(range(20))
    assert sizes == [len(b) for b in fn.batches]
    assert fn.max_running == 1  # one batch at a time
    assert threading.get_ident() not in fn.threads  # fn ran off the event loop's thread


def test_a_lone_item_does_not_wait_for_a_full_batch():
    async def main():
        batcher = MicroBatcher(Recorder(), max_batch_size=64, max_wait_ms=20, name="t")
        started = time.perf_counter()
        result = await batcher.submit(5)  # submit starts the worker when needed
        elapsed = time.perf_counter() - started
        await batcher.stop()
        return result, elapsed

    result, elapsed = asyncio.run(main())
    assert result == 10
    assert elapsed < 1.0


def test_an_error_fails_only_the_caller_whose_item_caused_it_and_the_next_batch_works():
    """Issue 14 item 1: one bad request in a micro-batch used to fail all 12 concurrent requests."""
    fn = Recorder(fail_on=3)

    async def main():
        batcher = MicroBatcher(fn, max_batch_size=4, max_wait_ms=50, name="t")
        batcher.start()
        failed = await asyncio.gather(*(batcher.submit(i) for i in range(4)), return_exceptions=True)
        after = await asyncio.gather(*(batcher.submit(i) for i in range(4, 8)))
        await batcher.stop()
        return failed, after

    failed, after = asyncio.run(main())
    assert fn.batches[0] == [0, 1, 2, 3]
    assert fn.batches[1:5] == [[0], [1], [2], [3]]  # the failed batch again, one caller at a time
    assert failed[:3] == [0, 2, 4]
    assert isinstance(failed[3], ValueError) and str(failed[3]) == "bad item 3"
    assert after == [8, 10, 12, 14]


def test_a_wrong_number_of_results_is_an_error_for_the_callers():
    async def main():
        batcher = MicroBatcher(lambda items: items[:-1], max_batch_size=4, max_wait_ms=5, name="short")
        results = await asyncio.gather(batcher.submit(1), batcher.submit(2), return_exceptions=True)
        await batcher.stop()
        return results

    for result in asyncio.run(main()):
        assert isinstance(result, RuntimeError) and "returned 0 results for 1 items" in str(result)  # each caller alone, after the batch failed


def test_only_items_with_the_same_key_share_a_batch():
    fn = Recorder()

    async def main():
        batcher = MicroBatcher(fn, max_batch_size=16, max_wait_ms=20, name="t")
        batcher.start()
        keys = ["greedy", "t=0.7"]
        results = await asyncio.gather(*(batcher.submit(i, key=keys[i % 2]) for i in range(10)))
        await batcher.stop()
        return results

    assert asyncio.run(main()) == [i * 2 for i in range(10)]
    assert sorted(fn.batches) == [[0, 2, 4, 6, 8], [1, 3, 5, 7, 9]]


def test_submit_many_keeps_a_requests_rows_together():
    fn = Recorder(delay=0.01)

    async def main():
        batcher = MicroBatcher(fn, max_batch_size=8, max_wait_ms=20, name="t")
        batcher.start()
        requests = [list(range(r * 10, r * 10 + n)) for r, n in enumerate([5, 5, 3, 1, 12, 2])]
        results = await asyncio.gather(*(batcher.submit_many(rows) for rows in requests))
        assert await batcher.submit_many([]) == []
        await batcher.stop()
        return requests, results

    requests, results = asyncio.run(main())
    assert results == [[x * 2 for x in rows] for rows in requests]
    for rows in requests:  # each request's rows lie together, in order, in one batch
        assert any(b[i:i + len(rows)] == rows for b in fn.batches for i in range(len(b)))
    assert all(len(b) <= 8 for b in fn.batches if b != requests[4])  # the 12-row request runs alone
    assert requests[4] in fn.batches


def test_cancelled_callers_do_not_break_their_batch():
    started, release = threading.Event(), threading.Event()
    batches: list[list[int]] = []

    def fn(items: list[int]) -> list[int]:
        batches.append(items)
        started.set()
        assert release.wait(5)
        return [item * 2 for item in items]

    async def main():
        batcher = MicroBatcher(fn, max_batch_size=4, max_wait_ms=10, name="t")
        batcher.start()
        running = [asyncio.ensure_future(batcher.submit(i)) for i in (0, 1)]
        assert await asyncio.to_thread(started.wait, 5)  # their batch runs now
        queued = [asyncio.ensure_future(batcher.submit(i)) for i in (2, 3, 4)]
        await asyncio.sleep(0)
        running[0].cancel()  # cancelled while its batch runs: its result is dropped
        queued[1].cancel()  # cancelled while it waits: it leaves the queue
        await asyncio.sleep(0)
        release.set()
        results = await asyncio.gather(running[1], queued[0], queued[2])
        await batcher.stop()
        return results, running[0].cancelled()

    assert asyncio.run(main()) == ([2, 4, 8], True)
    assert batches == [[0, 1], [2, 4]]


def test_stop_runs_everything_queued_and_refuses_new_items():
    fn = Recorder(delay=0.02)

    async def main():
        batcher = MicroBatcher(fn, max_batch_size=8, max_wait_ms=10_000, name="t")  # would wait 10 s for a full batch
        batcher.start()
        tasks = [asyncio.ensure_future(batcher.submit(i, key=i % 3)) for i in range(7)]
        await asyncio.sleep(0.01)
        assert batcher.queue_depth == 7
        started = time.perf_counter()
        await batcher.stop()
        assert time.perf_counter() - started < 5
        assert batcher.queue_depth == 0
        with pytest.raises(RuntimeError, match="stopped"):
            await batcher.submit(99)
        return [task.result() for task in tasks]

    assert asyncio.run(main()) == [i * 2 for i in range(7)]
    assert sorted(fn.batches) == [[0, 3, 6], [1, 4], [2, 5]]


def test_queue_depth_counts_waiting_rows():
    async def main():
        release = threading.Event()
        batcher = MicroBatcher(lambda items: (release.wait(5), items)[1], max_batch_size=2, max_wait_ms=0, name="t")
        batcher.start()
        tasks = [asyncio.ensure_future(batcher.submit_many([i, i])) for i in range(3)]
        await asyncio.sleep(0.05)
        depth = batcher.queue_depth  # one 2-row request is running, two wait
        release.set()
        await asyncio.gather(*tasks)
        await batcher.stop()
        return depth

    assert asyncio.run(main()) == 4


class Meeting(Recorder):
    """A ``Recorder`` whose first ``meet`` batches each wait until all of them run at once (a barrier):
    with fewer batches allowed to run together, the barrier breaks and those batches fail."""

    def __init__(self, meet: int, timeout: float = 5.0):
        super().__init__()
        self.barrier = threading.Barrier(meet, timeout=timeout)
        self.calls = 0

    def __call__(self, items: list) -> list:
        with self._lock:
            self.calls += 1
            first = self.calls <= self.barrier.parties
            self.running += 1
            self.max_running = max(self.max_running, self.running)
        try:
            self.batches.append(list(items))
            if first:
                self.barrier.wait()  # BrokenBarrierError (the batch fails) unless the others run too
            return [item * 2 for item in items]
        finally:
            with self._lock:
                self.running -= 1


@pytest.mark.parametrize("concurrency", [2, 3])
def test_up_to_concurrency_batches_run_at_once_and_each_caller_gets_its_own_answer(concurrency):
    fn = Meeting(concurrency)

    async def main():
        batcher = MicroBatcher(fn, max_batch_size=4, max_wait_ms=0, name="t", concurrency=concurrency)
        batcher.start()
        results = await asyncio.gather(*(batcher.submit_many([i, i + 1000]) for i in range(24)), return_exceptions=True)
        await batcher.stop()
        return results

    assert asyncio.run(main()) == [[i * 2, (i + 1000) * 2] for i in range(24)]  # in order; none failed at the barrier
    assert fn.max_running == concurrency  # the first batches met at the barrier, and never more than the limit
    assert len(fn.batches) >= 12 and all(len(b) <= 4 for b in fn.batches)


def test_one_batch_at_a_time_by_default_so_batches_that_must_meet_fail():
    fn = Meeting(2, timeout=0.5)

    async def main():
        batcher = MicroBatcher(fn, max_batch_size=4, max_wait_ms=0, name="t")
        batcher.start()
        results = await asyncio.gather(*(batcher.submit_many([i, i + 1000]) for i in range(8)), return_exceptions=True)
        await batcher.stop()
        return results

    results = asyncio.run(main())
    assert fn.max_running == 1
    assert any(isinstance(r, threading.BrokenBarrierError) for r in results)  # the first batch waited alone, in vain
    assert [r for r in results if not isinstance(r, Exception)] == [[i * 2, (i + 1000) * 2] for i in range(8)
                                                                    if not isinstance(results[i], Exception)]


def test_stop_waits_for_every_batch_in_flight():
    release = threading.Event()
    fn = Recorder()

    def gated(items):
        assert release.wait(5)
        return fn(items)

    async def main():
        batcher = MicroBatcher(gated, max_batch_size=2, max_wait_ms=0, name="t", concurrency=3)
        batcher.start()
        tasks = [asyncio.ensure_future(batcher.submit_many([i, i])) for i in range(5)]
        await asyncio.sleep(0.05)
        stopping = asyncio.ensure_future(batcher.stop())
        await asyncio.sleep(0.05)
        assert not stopping.done()  # three batches hold the worker; two wait
        release.set()
        await stopping
        return [t.result() for t in tasks]

    assert asyncio.run(main()) == [[i * 2, i * 2] for i in range(5)]
