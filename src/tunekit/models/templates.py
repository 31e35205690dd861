"""One rendering function for conversations, used by training, evaluation and serving.

The commonest silent bug in chat fine-tuning is a model trained on one template and served with
another. So there is exactly one way a conversation becomes token ids here, ``encode``, and the
template it used is saved with the model (in ``tunekit.json`` and as the tokenizer's own
``chat_template``), so the server renders requests exactly as training rendered examples.

``encode`` tokenises a conversation segment by segment: the text before each assistant turn
(rendered with the template's generation prompt), then the assistant turn itself. That is exactly
what the server sees: prompt tokens, then the tokens the model generates. Tokenising the whole
rendered string at once would let BPE merge across the prompt/answer boundary, and the model would
be trained on token sequences it never meets when generating. Each assistant segment ends with
the tokenizer's EOS token (appended when the template does not emit it), which is trained, so the
model learns to stop.
"""

from __future__ import annotations

from dataclasses import dataclass

from tunekit.errors import ConfigError, DataError

# Named templates, in the Jinja dialect of Hugging Face chat templates (``messages``,
# ``add_generation_prompt``, ``eos_token`` are in scope), so a named and a tokenizer-provided
# template go through the same renderer. That dialect trims the newline after a block tag, hence
# ``{{ '\\n' }}`` where a newline must follow one.
NAMED: dict[str, str] = {
    "chatml": (
        "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    ),
    "llama2": (
        "{% for m in messages %}"
        "{% if m.role == 'system' %}[SYS] {{ m.content }} [/SYS]\n"
        "{% elif m.role == 'user' %}[INST] {{ m.content }} [/INST]"
        "{% else %} {{ m.content }}{{ eos_token }}\n{% endif %}"
        "{% endfor %}{% if add_generation_prompt %} {% endif %}"
    ),
    "alpaca": (
        "{% for m in messages %}"
        "{% if m.role == 'system' %}{{ m.content }}\n\n"
        "{% elif m.role == 'user' %}### Instruction:\n{{ m.content }}\n\n"
        "{% else %}### Response:\n{{ m.content }}{{ eos_token }}\n\n{% endif %}"
        "{% endfor %}{% if add_generation_prompt %}### Response:\n{% endif %}"
    ),
    "plain": (
        "{% for m in messages %}{{ m.role }}: {{ m.content }}"
        "{% if m.role == 'assistant' %}{{ eos_token }}{% endif %}{{ '\\n' }}{% endfor %}"
        "{% if add_generation_prompt %}assistant: {% endif %}"
    ),
}
# Turn-end markers that should also stop generation (besides EOS) when they are single tokens.
END_MARKERS = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>")


@dataclass(frozen=True)
class Template:
    """A chat template by name (``chatml``, ..., or ``tokenizer`` for the tokenizer's own) and its Jinja source."""

    name: str
    source: str

    def to_json(self) -> dict:
        return {"name": self.name, "chat_template": self.source}

    @classmethod
    def from_json(cls, d: dict) -> Template:
        return cls(d["name"], d["chat_template"])


def resolve(tokenizer, choice: str = "auto") -> Template:
    """The template for ``model.template``: the tokenizer's own for ``auto`` when it has one, else ChatML."""
    if choice == "auto":
        own = getattr(tokenizer, "chat_template", None)
        if isinstance(own, str) and own.strip():
            return Template("tokenizer", own)
        return Template("chatml", NAMED["chatml"])
    if choice not in NAMED:
        raise ConfigError(f"model.template: unknown template {choice!r}; choose auto, {', '.join(NAMED)}")
    return Template(choice, NAMED[choice])


def render(tokenizer, template: Template, messages: list[dict], add_generation_prompt: bool) -> str:
    """The conversation as text under ``template`` (only ``role`` and ``content`` are passed on)."""
    plain = [{"role": m["role"], "content": m["content"]} for m in messages]
    return tokenizer.apply_chat_template(plain, chat_template=template.source, tokenize=False,
                                         add_generation_prompt=add_generation_prompt)


def encode(tokenizer, template: Template, messages: list[dict], add_generation_prompt: bool = False) -> tuple[list[int], list[int]]:
    """Token ids of a conversation and a 0/1 mask of the tokens trained on (assistant turns with weight 1, with their EOS).

    For training, ``messages`` ends with an assistant turn; for serving, it ends before the turn to
    generate and ``add_generation_prompt`` is true. Both tokenise the shared prefix identically.
    """
    ids: list[int] = []
    mask: list[int] = []
    done = ""  # text rendered so far
    for k, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt = render(tokenizer, template, messages[:k], add_generation_prompt=True)
        full = render(tokenizer, template, messages[: k + 1], add_generation_prompt=False)
        _check_prefix(done, prompt, template)
        _check_prefix(prompt, full, template)
        _extend(ids, mask, _tokens(tokenizer, prompt[len(done):], first=not ids), 0)
        answer = _tokens(tokenizer, full[len(prompt):], first=False)
        if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in answer:
            answer.append(tokenizer.eos_token_id)
        _extend(ids, mask, answer, int(message.get("weight", 1)))
        done = full
    rest = render(tokenizer, template, messages, add_generation_prompt=add_generation_prompt)
    _check_prefix(done, rest, template)
    _extend(ids, mask, _tokens(tokenizer, rest[len(done):], first=not ids), 0)
    return ids, mask


def stop_token_ids(tokenizer) -> list[int]:
    """EOS and any single-token turn-end marker the tokenizer knows: generation stops at either."""
    out = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    vocab = tokenizer.get_vocab()
    out += [vocab[m] for m in END_MARKERS if m in vocab and vocab[m] not in out]
    return out


def _tokens(tokenizer, text: str, first: bool) -> list[int]:
    """Ids of ``text`` without special tokens, plus BOS at the very start when the tokenizer adds one
    and the template did not write it."""
    if not text:
        return []
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    bos = tokenizer.bos_token_id
    if first and bos is not None and (not ids or ids[0] != bos) and _adds_bos(tokenizer):
        ids = [bos, *ids]
    return ids


def _adds_bos(tokenizer) -> bool:
    probe = tokenizer("a")["input_ids"]
    return bool(probe) and probe[0] == tokenizer.bos_token_id


def _extend(ids: list[int], mask: list[int], new: list[int], trained: int) -> None:
    ids.extend(new)
    mask.extend([trained] * len(new))


def _check_prefix(prefix: str, text: str, template: Template) -> None:
    if not text.startswith(prefix):
        raise DataError(
            f"chat template {template.name!r} renders a conversation differently depending on what follows it "
            f"(the text before turn N changes once turn N is added), so prompt and answer tokens cannot be told apart. "
            f"Set model.template to a named template (chatml, llama2, alpaca, plain)."
        )
