"""Iteration-level batching: concurrent generation requests share every decoding step.

    scheduler = Scheduler(generator)                 # one per Generator (``Generator.scheduler``)
    ticket = scheduler.submit(prompt_ids, max_new_tokens=64, temperature=0.0, adapter=None)
    for token_id in ticket: ...                      # streamed as they are decoded
    ids, finish_reason = ticket.result()             # or all at once; scheduler.cancel(ticket) stops it

HF ``generate`` decodes one fixed batch to its end: a request that arrives meanwhile waits for the
whole batch, and a short answer in it keeps decoding padding until the longest one ends. Here one
background thread runs steps; at each step the requests that arrived join the running batch (their
prompts are prefilled together, and their KV cache is concatenated to the batch's, left-padded to
the same length), then every active sequence advances one token in ONE forward pass, and sequences
that finished leave the batch at once. On CPU a forward of 8 rows costs little more than one, so
aggregate tokens/s grows with the number of concurrent streams.

transformers 5 ships a continuous-batching manager (``model.generate_batch``), but it is built for
CUDA and paged attention: on CPU it took minutes for a few tokens of a tiny model, it knows nothing
of PEFT adapters, and it has no per-request stop strings or seeds. This is the compact version:
left padding, one ``DynamicCache`` per batch, the model's own attention.

Greedy answers equal one-at-a-time ``Generator.generate`` token for token (the padding is masked
and positions are passed explicitly; ``tests/generation/test_decoding.py`` pins it). Sampling draws
from a per-request ``torch.Generator``, so a seeded request repeats whatever else shares its steps.

PEFT holds one active adapter, so requests for different adapters cannot share a forward pass:
each adapter (``None`` = the model's own, the base id = the bare base) has its own batch, and steps
go round-robin over the batches with work. The thread takes ``Generator.lock`` for each step only,
so adapters can be loaded between steps, and it ends when no request is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import random
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from tunekit.models.causal import Generator

__all__ = ["Scheduler", "Ticket"]

_DONE = object()  # the last item of a ticket's queue


@dataclass
class Ticket:
    """One request: its prompt and options, the tokens decoded so far, and a queue its consumer reads."""

    prompt: list[int]
    max_new_tokens: int
    temperature: float
    top_p: float
    stop: list[str]
    group: str | None  # the adapter name, "" for the bare base, None for a model without adapters
    rng: torch.Generator
    tokens: list[int] = field(default_factory=list)
    finish_reason: str | None = None
    error: BaseException | None = None
    events: queue.Queue = field(default_factory=queue.Queue)  # token ids, then _DONE
    cancelled: threading.Event = field(default_factory=threading.Event)
    finished: threading.Event = field(default_factory=threading.Event)
    worker: threading.Thread | None = None  # the scheduler thread that served it (to wait for it to end)
    drained: bool = False  # the consumer has read _DONE
    on_done: Any = None  # called in the scheduler thread when the request ends (wakes an asyncio waiter)

    def __iter__(self) -> Iterator[int]:
        """Token ids as they are decoded (the last may be a stop token); raises the request's error."""
        while not self.drained:
            item = self.events.get()
            if item is _DONE:
                self.drained = True
                break
            yield item
        if self.error is not None:
            raise self.error

    def result(self) -> tuple[list[int], str]:
        """All decoded ids and the finish reason, once the request ends."""
        for _ in self:
            pass
        return self.tokens, self.finish_reason or "length"



def _notify(ticket: Ticket) -> None:
    """Tell the consumer that ``ticket`` ended (its queue, its event, its callback)."""
    ticket.events.put(_DONE)
    ticket.finished.set()
    callback = ticket.on_done
    if callback is not None:
        with contextlib.suppress(RuntimeError):  # the waiter's event loop closed meanwhile
            callback()


@dataclass
class _Batch:
    """The running sequences of one adapter: their left-padded attention mask and shared KV cache."""

    tickets: list[Ticket] = field(default_factory=list)
    mask: torch.Tensor | None = None  # (rows, columns) 1 for real tokens
    cache: Any = None  # a DynamicCache
    positions: list[int] = field(default_factory=list)  # real tokens in the cache per row (the next position id)


class Scheduler:
    """Runs queued requests of one ``Generator`` in shared decoding steps (module docstring)."""

    def __init__(self, gen: Generator, max_batch: int = 16):
        self.gen = gen
        self.max_batch = max_batch
        self.cond = threading.Condition()
        self.pending: list[Ticket] = []
        self.batches: dict[str | None, _Batch] = {}
        self.turn = 0  # round-robin position over the batches
        self.thread: threading.Thread | None = None
        self.stop_ids = set()
        self.steps = 0  # steps run (tests and the bench read it)
        self.on_step: Callable[[int], None] | None = None  # called with each step's rows (the server's batch-size metric)

    @property
    def queue_depth(self) -> int:
        """Requests waiting to join a batch."""
        return len(self.pending)

    def submit(self, prompt: list[int], max_new_tokens: int = 64, temperature: float = 0.0, top_p: float = 1.0,
               stop: list[str] | None = None, adapter: str | None = None, seed: int | None = None, on_done=None) -> Ticket:
        """Queue one request; an unknown adapter raises here, before anything is queued."""
        from tunekit.models import templates

        if not prompt:
            raise ValueError("an empty prompt has nothing to continue")
        self.stop_ids = set(templates.stop_token_ids(self.gen.tokenizer))
        rng = torch.Generator()
        rng.manual_seed(seed if seed is not None else random.randrange(2**63))
        ticket = Ticket(list(prompt), max_new_tokens, temperature, top_p, list(stop or []), self._group(adapter), rng, on_done=on_done)
        with self.cond:
            self.pending.append(ticket)
            if self.thread is None:
                self.thread = threading.Thread(target=self._run, name="tunekit-decoding", daemon=True)
                self.thread.start()
            ticket.worker = self.thread
        return ticket

    def _group(self, adapter: str | None) -> str | None:
        """The batch a request joins: a resolved adapter name ("" = the bare base); checks the name now."""
        from tunekit.errors import ModelError

        gen = self.gen
        if not gen.adapters:
            return None
        if adapter == gen.base_model:
            return ""
        if adapter is not None and adapter not in gen.adapters:  # the message of Generator._adapter, without switching adapters
            raise ModelError(f"unknown adapter {adapter!r}; loaded: {', '.join(gen.adapters)}")
        return adapter if adapter is not None else next(iter(gen.adapters))

    async def run(self, prompt: list[int], **options) -> tuple[list[int], str]:
        """``submit`` for an asyncio caller: waits without a thread; if the caller is cancelled (a
        timeout, a client that left), the request is dropped at the next step."""
        loop = asyncio.get_running_loop()
        done = asyncio.Event()
        ticket = self.submit(prompt, **options, on_done=lambda: loop.call_soon_threadsafe(done.set))
        try:
            await done.wait()
        except asyncio.CancelledError:
            ticket.on_done = None  # the loop may be gone by the time the request is dropped
            ticket.cancelled.set()
            raise
        return ticket.result()

    # --- the decoding thread -------------------------------------------------------------------

    def _run(self) -> None:
        """Steps until no request is left, then ends (the next ``submit`` starts a new thread)."""
        ended: list[Ticket] = []
        while True:
            with self.cond:
                dropped = [t for t in self.pending if t.cancelled.is_set()]
                self.pending = [t for t in self.pending if t not in dropped]
                groups = sorted({t.group or "" for t in self.pending} | {g or "" for g, b in self.batches.items() if b.tickets})
                if not groups:
                    self.thread = None  # before the last requests hear they ended, so a waiter may join this thread
            for ticket in ended + dropped:
                ticket.finish_reason = ticket.finish_reason or "cancelled"
                _notify(ticket)
            if not groups:
                return
            with self.cond:
                group = groups[self.turn % len(groups)]
                self.turn += 1
                key = group if self.gen.adapters else None
                room = self.max_batch - len(self.batches[key].tickets) if key in self.batches else self.max_batch
                joining = [t for t in self.pending if t.group == key][:room]
                self.pending = [t for t in self.pending if t not in joining]
            try:
                ended = self._step(key, joining)
            except Exception as exc:  # noqa: BLE001 - e.g. its adapter was unloaded meanwhile: fail this batch, keep serving the rest
                ended = self._fail(self.batches.setdefault(key, _Batch()), exc) + joining
                for ticket in joining:
                    ticket.error = exc

    def cancel(self, ticket: Ticket) -> None:
        """Stop ``ticket`` at the next step and wait until it is dropped (and for the thread, if that was
        its last request), so nothing keeps decoding for a client that left."""
        ticket.cancelled.set()
        ticket.finished.wait()
        with self.cond:
            retired = ticket.worker is not None and ticket.worker is not self.thread
        if retired and ticket.worker is not threading.current_thread():
            ticket.worker.join()

    @torch.inference_mode()
    def _step(self, key: str | None, joining: list[Ticket]) -> list[Ticket]:
        """One step for one adapter's batch: prefill the joiners, decode one token for all. The tickets that ended."""
        batch = self.batches.setdefault(key, _Batch())
        ended = [t for t in batch.tickets if t.cancelled.is_set()]
        for t in ended:
            t.finish_reason = "cancelled"
        self._keep(batch, [i for i, t in enumerate(batch.tickets) if t not in ended])
        with self.gen.lock, self._adapter(key):
            try:
                if batch.tickets:
                    self._decode(batch)
            except Exception as exc:  # noqa: BLE001 - a failed forward fails the requests in it, never the thread
                ended += self._fail(batch, exc)
            if joining:
                ended += self._prefill(batch, joining)
        self.steps += 1
        if self.on_step is not None:
            self.on_step(len(batch.tickets))
        ended += self._retire(batch)
        return ended

    def _adapter(self, key: str | None):
        return self.gen._adapter(None if key is None else self.gen.base_model if key == "" else key)

    def _prefill(self, batch: _Batch, joining: list[Ticket]) -> list[Ticket]:
        """Run the joiners' prompts together and merge their cache into the batch; on an error, one by
        one, so a bad request fails alone. Returns the joiners that failed."""
        try:
            self._merge(batch, joining, *self._forward_prompts(joining))
            return []
        except Exception as exc:  # noqa: BLE001 - kept on the ticket, raised to its consumer
            if len(joining) == 1:
                joining[0].error = exc
                return joining
        failed = []
        for ticket in joining:
            failed += self._prefill(batch, [ticket])
        return failed

    def _forward_prompts(self, tickets: list[Ticket]):
        from transformers import DynamicCache

        pad = self.gen.tokenizer.pad_token_id or 0
        width = max(len(t.prompt) for t in tickets)
        ids = torch.tensor([[pad] * (width - len(t.prompt)) + t.prompt for t in tickets], device=self.gen.device)
        mask = torch.tensor([[0] * (width - len(t.prompt)) + [1] * len(t.prompt) for t in tickets], device=self.gen.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache()
        logits = self.gen.model(input_ids=ids, attention_mask=mask, position_ids=positions, cache=cache, use_cache=True).logits
        return mask, cache, logits[:, -1]

    def _merge(self, batch: _Batch, tickets: list[Ticket], mask: torch.Tensor, cache, logits: torch.Tensor) -> None:
        """Append the prefilled rows to the batch, left-padding whichever side is shorter."""
        for ticket, row in zip(tickets, logits):
            ticket.tokens.append(self._pick(ticket, row))
            ticket.events.put(ticket.tokens[-1])
        positions = [len(t.prompt) for t in tickets]
        if not batch.tickets:
            batch.tickets, batch.mask, batch.cache, batch.positions = list(tickets), mask, cache, positions
            return
        width = max(batch.mask.shape[1], mask.shape[1])
        batch.mask = torch.cat([_left_pad(batch.mask, width, -1), _left_pad(mask, width, -1)])
        for old, new in zip(batch.cache.layers, cache.layers):
            old.keys = torch.cat([_left_pad(old.keys, width, -2), _left_pad(new.keys, width, -2)])
            old.values = torch.cat([_left_pad(old.values, width, -2), _left_pad(new.values, width, -2)])
        batch.tickets += tickets
        batch.positions += positions

    def _decode(self, batch: _Batch) -> None:
        """Feed every row its last token: one forward, one new token per row."""
        dev = self.gen.device
        ids = torch.tensor([[t.tokens[-1]] for t in batch.tickets], device=dev)
        batch.mask = torch.cat([batch.mask, torch.ones((len(batch.tickets), 1), dtype=batch.mask.dtype, device=dev)], dim=1)
        positions = torch.tensor([[p] for p in batch.positions], device=dev)
        logits = self.gen.model(input_ids=ids, attention_mask=batch.mask, position_ids=positions, cache=batch.cache,
                                use_cache=True).logits[:, -1]
        for i, (ticket, row) in enumerate(zip(batch.tickets, logits)):
            ticket.tokens.append(self._pick(ticket, row))
            ticket.events.put(ticket.tokens[-1])
            batch.positions[i] += 1

    def _pick(self, ticket: Ticket, logits: torch.Tensor) -> int:
        """Greedy (argmax, as ``generate``), or a draw from the request's own generator with temperature and top-p."""
        if ticket.temperature <= 0:
            return int(logits.argmax())
        probs = torch.softmax(logits.float() / ticket.temperature, dim=-1)
        if ticket.top_p < 1:
            sorted_probs, order = probs.sort(descending=True)
            drop = sorted_probs.cumsum(-1) - sorted_probs >= ticket.top_p  # keep the smallest set reaching top_p (at least one)
            probs = probs.clone()
            probs[order[drop]] = 0
        return int(torch.multinomial(probs.cpu(), 1, generator=ticket.rng))

    def _retire(self, batch: _Batch) -> list[Ticket]:
        """Remove the rows that hit a stop token, a stop string, their token budget or a cancel."""
        ended = [t for t in batch.tickets if self._ends(t)]
        if ended:
            self._keep(batch, [i for i, t in enumerate(batch.tickets) if t not in ended])
        return ended

    def _ends(self, ticket: Ticket) -> bool:
        if ticket.error is not None or ticket.cancelled.is_set():
            ticket.finish_reason = ticket.finish_reason or "cancelled"
            return True
        text = self.gen.tokenizer.decode(ticket.tokens, skip_special_tokens=True) if ticket.stop else ""
        if ticket.tokens[-1] in self.stop_ids or any(s in text for s in ticket.stop):
            ticket.finish_reason = "stop"
        elif len(ticket.tokens) >= ticket.max_new_tokens:
            ticket.finish_reason = "length"
        return ticket.finish_reason is not None

    def _keep(self, batch: _Batch, rows: list[int]) -> None:
        """Keep only ``rows`` of the batch, and drop cache columns that are padding in every row left."""
        if len(rows) == len(batch.tickets):
            return
        batch.tickets = [batch.tickets[i] for i in rows]
        batch.positions = [batch.positions[i] for i in rows]
        if not rows:
            batch.mask = batch.cache = None
            return
        index = torch.tensor(rows, device=self.gen.device)
        batch.mask = batch.mask[index]
        skip = int((batch.mask.sum(0) == 0).long().cumprod(0).sum())  # leading columns no row attends to
        batch.mask = batch.mask[:, skip:]
        for layer in batch.cache.layers:
            layer.keys = layer.keys[index, :, skip:]
            layer.values = layer.values[index, :, skip:]

    def _fail(self, batch: _Batch, exc: Exception) -> list[Ticket]:
        failed = list(batch.tickets)
        for ticket in failed:
            ticket.error = exc
        self._keep(batch, [])
        return failed


def _left_pad(t: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    """``t`` with zeros before its entries along ``dim`` up to ``width``."""
    missing = width - t.shape[dim]
    if missing == 0:
        return t
    shape = list(t.shape)
    shape[dim] = missing
    return torch.cat([t.new_zeros(shape), t], dim=dim)
