"""Record an incumbent model's answers from any OpenAI-compatible endpoint into a training file.

Why: a team losing a hosted fine-tuned model needs a local one that answers the same way. ``record``
sends each prompt of a file to the old model (``--base-url``, ``--model``) with the official client,
and writes the conversations with its answers as a chat JSONL file: a ``fine-tune`` file for a job
(distillation), and the reference answers an eval scores the candidate against. Each answer is
written as soon as it arrives and a second run continues where the first stopped, so an
interrupted recording of thousands of prompts loses nothing and pays for nothing twice.

The prompts file is JSONL: ``{"messages": [...]}`` ending in a user turn, or ``{"prompt": "..."}``.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

from tunekit.errors import DataError
from tunekit.progress import bar

__all__ = ["Recording", "read_prompts", "record"]

ROLES = ("system", "developer", "user", "assistant")


@dataclass
class Recording:
    out: Path           # the chat JSONL written
    recorded: int       # answers recorded by this call
    kept: int           # answers already in the file from an earlier, interrupted call
    prompt_tokens: int  # as the endpoint reported them (0 when it does not)
    completion_tokens: int
    seconds: float


def read_prompts(path: Path) -> list[list[dict]]:
    """The conversations to send, each ending in a user turn; ``DataError`` naming the line and field."""
    conversations = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}, line {number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from None
        if isinstance(row, dict) and isinstance(row.get("prompt"), str) and row["prompt"].strip():
            conversations.append([{"role": "user", "content": row["prompt"]}])
            continue
        messages = row.get("messages") if isinstance(row, dict) else None
        if not isinstance(messages, list) or not messages:
            raise DataError(f"{where}: expected {{\"messages\": [...]}} or {{\"prompt\": \"...\"}}")
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
                raise DataError(f"{where}: messages[{i}]: expected {{\"role\": one of {', '.join(ROLES)}, \"content\": text}}")
        if messages[-1]["role"] != "user":
            raise DataError(f"{where}: messages[{len(messages) - 1}].role: the conversation must end with a user turn (the model answers it), "
                            f"got {messages[-1]['role']!r}")
        conversations.append([{"role": m["role"], "content": m["content"]} for m in messages])
    if not conversations:
        raise DataError(f"{path}: no prompts (one JSON object per line)")
    return conversations


def record(client, model: str, prompts: Path, out: Path, max_tokens: int | None = None, temperature: float = 0.0,
           console=None) -> Recording:
    """Ask ``model`` through ``client`` (an ``openai.OpenAI``) for each prompt; append to ``out``.

    ``out`` keeps the prompts in order; when it already holds the first k of them (an earlier call
    stopped), they are kept and checked to be the same prompts, and recording goes on from k+1.
    """
    conversations = read_prompts(prompts)
    kept = _kept(out, conversations)
    started, recorded, prompt_tokens, completion_tokens = time.perf_counter(), 0, 0, 0
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a", encoding="utf-8") as sink, bar(console, unit="prompts") as progress:
        task = progress.add_task(f"record {model}", total=len(conversations), completed=kept, info="")
        for messages in conversations[kept:]:
            reply = client.chat.completions.create(model=model, messages=messages, temperature=temperature,
                                                   **({"max_tokens": max_tokens} if max_tokens else {}))
            answer = reply.choices[0].message.content or ""
            sink.write(json.dumps({"messages": [*messages, {"role": "assistant", "content": answer}]}, ensure_ascii=False) + "\n")
            sink.flush()
            recorded += 1
            if reply.usage is not None:
                prompt_tokens += reply.usage.prompt_tokens or 0
                completion_tokens += reply.usage.completion_tokens or 0
            progress.update(task, advance=1)
    meta = {"model": model, "base_url": str(client.base_url), "prompts": str(prompts), "answers": kept + recorded,
            "sha256": hashlib.sha256(out.read_bytes()).hexdigest(), "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "temperature": temperature, "max_tokens": max_tokens}
    out.with_name(out.name + ".meta.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
    return Recording(out, recorded, kept, prompt_tokens, completion_tokens, round(time.perf_counter() - started, 2))


def _kept(out: Path, conversations: list[list[dict]]) -> int:
    """How many answers ``out`` already holds for the first prompts; an error when it holds other prompts."""
    if not out.is_file():
        return 0
    lines = [line for line in out.read_text(encoding="utf-8").splitlines() if line.strip()]
    for number, line in enumerate(lines, start=1):
        try:
            messages = json.loads(line)["messages"][:-1]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise DataError(f"{out}, line {number}: not a recorded conversation; move the file aside or give another --out") from None
        if number > len(conversations) or messages != conversations[number - 1]:
            raise DataError(f"{out}, line {number}: recorded for another prompt than line {number} of the prompts file; "
                            "this file belongs to another recording: give another --out") from None
    return len(lines)
