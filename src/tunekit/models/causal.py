"""Causal language models: load a base, load a trained model, generate.

``load_causal_base`` is the training side (a base model by bundled name, local folder or hub id,
optionally 4-bit for QLoRA). ``load_generator`` is the evaluation and serving side: a tunekit
generation model directory becomes a ``Generator`` that renders conversations with the template
saved beside the weights (``templates.encode``, the same function training used) and decodes
batches greedily or by sampling. A PEFT generator holds its adapters by name on one base model, so
the server can answer for the base model and several adapters from one copy of the weights.

Evaluation decodes whole batches with HF ``generate`` (``Generator.generate``); the server goes
through ``Generator.decoder`` (``tunekit.models.decoding``), where concurrent requests join and leave
a running batch step by step, with the same greedy answers.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from tunekit import task_kinds
from tunekit.artifacts import MANIFEST, BaseModelRef, Manifest
from tunekit.errors import ModelError
from tunekit.models import (
    four_bit_options,
    load_hint,
    load_tokenizer,
    pick_device,
    resolve_base,
    templates,
)

__all__ = ["Generation", "Generator", "load_causal_base", "load_causal_tokenizer", "load_generator"]


def load_causal_base(base: str, revision: str | None = None, quantize_4bit: bool = False, dtype: torch.dtype | None = None):
    """A causal LM and its tokenizer, with a pad token (EOS is never reused as padding: see ``_pad_token``)."""
    from transformers import AutoModelForCausalLM

    source = resolve_base(base)
    tokenizer = load_causal_tokenizer(base, revision)
    kwargs: dict[str, Any] = {"revision": revision}
    if quantize_4bit:
        kwargs.update(four_bit_options())
        kwargs["quantization_config"].llm_int8_skip_modules = None
    elif dtype is not None:
        kwargs["dtype"] = dtype
    try:
        model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as exc:
        raise ModelError(load_hint(base, exc)) from None
    if not getattr(model.config, "is_decoder", True) and model.config.model_type in {"bert", "roberta"}:
        raise ModelError(f"model.base {base!r} is an encoder ({model.config.model_type}); task generation needs a causal LM (Llama, Qwen, Mistral, GPT-2, ...)")
    model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def load_causal_tokenizer(base: str, revision: str | None = None):
    """The tokenizer of a causal LM with the pad token training uses (the data stage needs no weights)."""
    tokenizer = load_tokenizer(base, revision)
    _pad_token(tokenizer)
    return tokenizer


def _pad_token(tokenizer) -> None:
    """Give the tokenizer a pad token distinct from EOS when it has none.

    Reusing EOS as padding is the classic way a fine-tuned model never learns to stop: collators
    mask padding out of the loss, and with pad == EOS the EOS labels vanish too. tunekit masks by
    its own loss mask, never by token id, but a distinct pad id keeps other tools that load the
    saved tokenizer safe as well. An existing UNK token is used rather than growing the vocabulary.
    """
    if tokenizer.pad_token is not None and tokenizer.pad_token_id != tokenizer.eos_token_id:
        return
    if tokenizer.unk_token is not None and tokenizer.unk_token_id != tokenizer.eos_token_id:
        tokenizer.pad_token = tokenizer.unk_token
    elif tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token  # no alternative without resizing embeddings; the loss mask still keeps EOS trained


@dataclass
class Generation:
    """One generated answer."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (EOS, a turn-end marker or a stop string) or "length"


@dataclass
class Generator:
    """A causal LM ready to generate, with its template and (for PEFT models) named adapters."""

    model: Any
    tokenizer: Any
    template: templates.Template
    info: Manifest
    path: Path
    device: torch.device
    adapters: dict[str, Path] = field(default_factory=dict)  # name -> adapter directory; empty for a full checkpoint
    lock: threading.Lock = field(default_factory=threading.Lock)  # one forward pass (or evaluation's generate) at a time
    _decoder: Any = field(default=None, repr=False)
    _decoder_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def base_model(self) -> str:
        return self.info.base_model.id

    @property
    def max_length(self) -> int:
        return self.info.max_length

    def encode_chat(self, messages: list[dict]) -> list[int]:
        """Prompt ids for a conversation that the model should continue (the server's and evaluation's path)."""
        system = self.info.system_prompt
        if system and not any(m["role"] == "system" for m in messages):
            messages = [{"role": "system", "content": system}, *messages]
        ids, _ = templates.encode(self.tokenizer, self.template, messages, add_generation_prompt=True)
        return ids

    def encode_text(self, prompt: str) -> list[int]:
        """Prompt ids for raw text (``/v1/completions``): no template, the tokenizer's own special tokens."""
        return self.tokenizer(prompt)["input_ids"]

    def chat(self, conversations: list[list[dict]], **kw) -> list[Generation]:
        return self.generate([self.encode_chat(c) for c in conversations], **kw)

    @torch.inference_mode()
    def generate(self, prompts: list[list[int]], max_new_tokens: int = 64, temperature: float = 0.0, top_p: float = 1.0,
                 stop: list[str] | None = None, adapter: str | None = None, batch_size: int = 16, seed: int | None = None,
                 progress=None) -> list[Generation]:
        """Answers for prompt ids, in input order; batched with left padding (rows sorted by length).
        ``progress``: a rich console to show a progress bar on (evaluation decodes hundreds of rows)."""
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        out: list[Generation | None] = [None] * len(prompts)
        with self._adapter(adapter), _bar(progress, len(prompts)) as advance:
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                batch = [prompts[i] for i in idx]
                gen = self._generate(batch, max_new_tokens, temperature, top_p, stop, seed)
                for i, row, new in zip(idx, batch, gen):
                    out[i] = self._finish(row, new, stop, max_new_tokens)
                advance(len(idx))
        return out  # type: ignore[return-value]

    @torch.inference_mode()
    def next_token_logits(self, prompt: list[int], adapter: str | None = None) -> torch.Tensor:
        """The logits of the token after ``prompt``, exactly as ``generate`` would see them (parity checks)."""
        with self._adapter(adapter):
            return self.model(input_ids=torch.tensor([prompt], device=self.device)).logits[0, -1].float().cpu()

    @property
    def decoder(self):
        """The ``decoding.Scheduler`` that serves this model: concurrent requests share decoding steps."""
        with self._decoder_lock:
            if self._decoder is None:
                from tunekit.models.decoding import Scheduler

                self._decoder = Scheduler(self)
            return self._decoder

    async def answer(self, prompt: list[int], max_new_tokens: int = 64, temperature: float = 0.0, top_p: float = 1.0,
                     stop: list[str] | None = None, adapter: str | None = None, seed: int | None = None) -> Generation:
        """One answer through ``decoder`` (the server's path): its steps are shared with every other
        request in flight, so a request never waits for another to finish."""
        ids, _ = await self.decoder.run(prompt, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, stop=stop,
                                        adapter=adapter, seed=seed)
        return self._finish(prompt, ids, stop, max_new_tokens)

    def stream(self, prompt: list[int], max_new_tokens: int = 64, temperature: float = 0.0, top_p: float = 1.0,
               stop: list[str] | None = None, adapter: str | None = None, seed: int | None = None) -> Iterator[str | Generation]:
        """Text pieces as they are generated, then the final ``Generation``, through ``decoder``.

        The pieces concatenate to the final ``Generation.text``: text that may be the start of a stop
        string, or an incomplete UTF-8 character, is held back until it is known. Closing the iterator
        early (a client that hangs up) drops the request at the next step and waits until it is dropped,
        so an abandoned stream never runs on beside the next request.
        """
        ticket = self.decoder.submit(prompt, max_new_tokens, temperature, top_p, stop, adapter, seed)
        stops = set(templates.stop_token_ids(self.tokenizer))
        sent, kept = "", []  # text yielded so far; the answer's ids before any stop token
        try:
            for token in ticket:
                if token in stops:
                    continue  # the end: the ticket finishes by itself
                kept.append(token)
                seen = self.tokenizer.decode(kept, skip_special_tokens=True)
                if seen.endswith("\ufffd"):
                    continue  # part of a character
                cut = _cut_at_stop(seen, stop) if stop else None
                ready = cut if cut is not None else seen[: len(seen) - _stop_prefix_len(seen, stop or [])]
                if len(ready) > len(sent):
                    yield ready[len(sent):]
                    sent = ready
            ids, _ = ticket.result()
        except BaseException:  # GeneratorExit when the consumer stops early
            self.decoder.cancel(ticket)
            raise
        final = self._finish(prompt, ids, stop, max_new_tokens)
        if final.text.startswith(sent) and len(final.text) > len(sent):
            yield final.text[len(sent):]  # whatever was held back and turned out not to be a stop string
        yield final

    def _generate(self, batch: list[list[int]], max_new_tokens: int, temperature: float, top_p: float,
                  stop: list[str] | None, seed: int | None) -> list[list[int]]:
        pad = self.tokenizer.pad_token_id
        width = max(len(r) for r in batch)
        input_ids = torch.tensor([[pad] * (width - len(r)) + r for r in batch], device=self.device)
        attention = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in batch], device=self.device)
        if seed is not None:
            torch.manual_seed(seed)
        sampling = temperature > 0
        out = self.model.generate(
            input_ids=input_ids, attention_mask=attention, max_new_tokens=max_new_tokens, do_sample=sampling,
            temperature=temperature if sampling else None, top_p=top_p if sampling else None, top_k=None,
            eos_token_id=templates.stop_token_ids(self.tokenizer), pad_token_id=pad,
            stop_strings=stop or None, tokenizer=self.tokenizer if stop else None,
        )
        return [row[width:].tolist() for row in out]

    def _finish(self, prompt: list[int], new: list[int], stop: list[str] | None, max_new_tokens: int) -> Generation:
        stops = set(templates.stop_token_ids(self.tokenizer))
        pad = self.tokenizer.pad_token_id
        kept: list[int] = []
        reason = "length"
        for t in new:
            if t in stops:
                reason = "stop"
                break
            if t == pad and pad not in stops:
                break  # padding after this row finished inside a batch
            kept.append(t)
        text = self.tokenizer.decode(kept, skip_special_tokens=True)
        cut = _cut_at_stop(text, stop) if stop else None
        if cut is not None:
            text, reason = cut, "stop"
        return Generation(text=text, prompt_tokens=len(prompt), completion_tokens=len(kept) + (reason == "stop" and cut is None),
                          finish_reason=reason)

    def _adapter(self, name: str | None):
        """Context in which ``model`` is the named adapter: ``None`` is the model's own adapter (the
        one it was loaded with, as evaluation generates), the base id the bare base model.

        ``None`` once meant the bare base, so evaluation scored a trained LoRA adapter with the base
        model's answers; ``tests/generation/test_sft.py`` pins the logits of both paths.
        """
        if not self.adapters:
            return contextlib.nullcontext()
        if name == self.base_model:
            return self.model.disable_adapter()
        if name is None:
            name = next(iter(self.adapters))
        if name not in self.adapters:
            raise ModelError(f"unknown adapter {name!r}; loaded: {', '.join(self.adapters)}")
        self.model.set_adapter(name)
        return contextlib.nullcontext()

    def add_adapter(self, name: str, path: str | Path) -> None:
        """Load another adapter trained on the same base model, under ``name``."""
        info = read_manifest(Path(path))
        if info.base_model.id != self.base_model:
            raise ModelError(f"{path}: trained on base {info.base_model.id!r}, but this server's base is {self.base_model!r}")
        if not self.adapters:
            raise ModelError("this model is a full checkpoint, not a PEFT adapter; it cannot hold other adapters")
        with self.lock:
            self.model.load_adapter(str(path), adapter_name=name)
            self.adapters[name] = Path(path)

    def remove_adapter(self, name: str) -> None:
        if name not in self.adapters:
            raise ModelError(f"unknown adapter {name!r}; loaded: {', '.join(self.adapters)}")
        if len(self.adapters) == 1:
            raise ModelError("cannot unload the only adapter")
        with self.lock:
            self.model.delete_adapter(name)
            del self.adapters[name]
            self.model.set_adapter(next(iter(self.adapters)))


@contextlib.contextmanager
def _bar(console, total: int):
    """A progress display over ``total`` rows when a console is given (a bar, or lines in a log); yields the advance function."""
    if console is None:
        yield lambda n: None
        return
    from tunekit.progress import bar

    with bar(console, "rows") as progress:
        task = progress.add_task("generate", total=total, info="")
        yield lambda n: progress.update(task, advance=n)


def _stop_prefix_len(text: str, stop: list[str]) -> int:
    """Length of the longest end of ``text`` that a stop string starts with (text to hold back while streaming)."""
    return max((k for s in stop for k in range(min(len(s) - 1, len(text)), 0, -1) if text.endswith(s[:k])), default=0)


def _cut_at_stop(text: str, stop: list[str]) -> str | None:
    """``text`` up to the first stop string, or None when none occurs."""
    hits = [text.index(s) for s in stop if s and s in text]
    return text[: min(hits)] if hits else None


def read_manifest(path: Path) -> Manifest:
    """The manifest of a generation model folder; ``ModelError`` for another task's model."""
    info = Manifest.read(path)
    if not task_kinds.kind(info.task).causal:
        raise ModelError(f"{path}: a {info.task} model, not a generation model; load it with tunekit.models.load_trained")
    if info.template is None:
        raise ModelError(f"{path / MANIFEST}: field `template`: required for a generation model, but missing; "
                         "the directory is incomplete, retrain it.")
    return info


def base_generator(cfg, model, tokenizer, template, device: torch.device, quantized: bool = False) -> Generator:
    """The untouched base model as a ``Generator`` (the prompted baselines), rendering with the
    run's template and system prompt. A 4-bit model stays where it was loaded (it cannot move)."""
    info = Manifest(task="generation", name=cfg.name, base_model=BaseModelRef(id=cfg.model.base, revision=cfg.model.revision),
                    max_length=cfg.model.max_length, template=template.to_json(), system_prompt=cfg.data.system_prompt)
    return Generator(model=model if quantized else model.to(device), tokenizer=tokenizer, template=template,
                     info=info, path=Path(resolve_base(cfg.model.base)), device=device)


def load_generator(path: str | Path, device: str = "cpu", name: str | None = None) -> Generator:
    """Load a generation model directory written by ``tunekit train`` (PEFT adapter or full checkpoint)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    info = read_manifest(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    dev = pick_device(device)
    adapters: dict[str, Path] = {}
    if (path / "adapter_config.json").is_file():
        from peft import PeftModel

        base, _ = load_causal_base(info.base_model.id, info.base_model.revision)
        adapter_name = name or info.name
        model = PeftModel.from_pretrained(base, path, adapter_name=adapter_name)
        adapters[adapter_name] = path
    else:
        model = AutoModelForCausalLM.from_pretrained(path)
    model.to(dev).eval()
    return Generator(model=model, tokenizer=tokenizer, template=templates.Template.from_json(info.template.model_dump()), info=info,
                     path=path, device=dev, adapters=adapters)
