"""Templates and loss masks: one encoder for training and serving, EOS trained, masks never empty."""

from __future__ import annotations

import pytest

from tunekit.errors import ConfigError, DataError
from tunekit.models import templates

CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "reverse: apple pear"},
    {"role": "assistant", "content": "pear apple"},
    {"role": "user", "content": "again"},
    {"role": "assistant", "content": "pear apple", "weight": 0},
]


@pytest.fixture(scope="module")
def tokenizer(tiny_llama):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_llama)


@pytest.mark.parametrize("name", list(templates.NAMED))
def test_only_weighted_assistant_turns_and_their_eos_are_trained(tokenizer, name):
    template = templates.resolve(tokenizer, name)
    ids, mask = templates.encode(tokenizer, template, CONVERSATION)
    trained = [t for t, m in zip(ids, mask) if m]
    assert tokenizer.decode(trained, skip_special_tokens=True).strip() == "pear apple"  # the weight-0 turn is not trained
    assert tokenizer.eos_token_id in trained  # the model learns to stop
    assert ids[0] == tokenizer.bos_token_id and mask[0] == 0


@pytest.mark.parametrize("name", list(templates.NAMED))
def test_serving_prompt_is_a_prefix_of_the_training_tokens(tokenizer, name):
    """What the server feeds the model is exactly what training put before the answer."""
    template = templates.resolve(tokenizer, name)
    ids, mask = templates.encode(tokenizer, template, CONVERSATION[:3])
    prompt, prompt_mask = templates.encode(tokenizer, template, CONVERSATION[:2], add_generation_prompt=True)
    assert ids[: len(prompt)] == prompt and not any(prompt_mask)
    assert mask[len(prompt)] == 1  # the first token after the prompt is the first trained one


def test_auto_uses_the_tokenizers_own_template_else_chatml(tokenizer):
    assert templates.resolve(tokenizer, "auto").name == "chatml"
    tokenizer = tokenizer.__class__.from_pretrained(tokenizer.name_or_path)
    tokenizer.chat_template = templates.NAMED["plain"]
    own = templates.resolve(tokenizer, "auto")
    assert own.name == "tokenizer" and own.source == templates.NAMED["plain"]


def test_unknown_template_is_a_config_error(tokenizer):
    with pytest.raises(ConfigError, match="model.template"):
        templates.resolve(tokenizer, "vicuna")


def test_a_template_that_rewrites_earlier_turns_is_refused(tokenizer):
    """A template whose prompt text changes once the answer is added cannot be split into prompt and answer."""
    shifty = templates.Template("shifty", "{% for m in messages %}{{ m.content }};{% endfor %}{% if add_generation_prompt %}Answer:{% endif %}")
    with pytest.raises(DataError, match="named template"):
        templates.encode(tokenizer, shifty, CONVERSATION[1:3])


def test_stop_tokens_include_the_turn_end_marker(tokenizer):
    stops = templates.stop_token_ids(tokenizer)
    assert tokenizer.eos_token_id in stops and tokenizer.convert_tokens_to_ids("<|im_end|>") in stops
