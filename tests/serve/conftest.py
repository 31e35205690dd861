"""Fixtures for the server tests: tiny models trained once per session, and app clients.

Two real classifiers are trained on a synthetic three-intent task (a few seconds each on CPU): a
single-text classifier and a sentence-pair one. A generation model, the LoRA adapter `greeter` on
a random tiny Llama, is trained to answer two chat prompts (``GREETINGS``). Most tests inject a
loader that hands over the already loaded model, so each app starts in milliseconds; a few go
through the default loader.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.classifier_fixtures import LABELS
from tests.conftest import local_settings
from tunekit.serve import LoadedModel, ServeSettings, create_app

GREETINGS = {"say hi": "hello there", "say bye": "goodbye my friend"}  # user prompt -> the answer the greeter learns


def _train_greeter(root: Path, greetings: dict[str, str] = GREETINGS, base: Path | None = None, name: str = "greeter") -> Path:
    """A LoRA adapter (r=4 on q/v) on a random tiny Llama (``base``: an existing one), overfitted on ``greetings`` in ChatML;
    under a second of training."""
    import torch
    from peft import LoraConfig, get_peft_model

    from tunekit.models import templates
    from tunekit.models.causal import load_causal_base
    from tunekit.models.tiny import build_tiny_llama

    base = base or build_tiny_llama(root / "base", [f"{q} {a}" for q, a in GREETINGS.items()]).resolve()
    model, tokenizer = load_causal_base(str(base))
    template = templates.resolve(tokenizer, "chatml")
    rows = [templates.encode(tokenizer, template, [{"role": "user", "content": q}, {"role": "assistant", "content": a}]) for q, a in greetings.items()]
    width = max(len(ids) for ids, _ in rows)
    pad = [[0] * (width - len(ids)) for ids, _ in rows]
    input_ids = torch.tensor([ids + [tokenizer.pad_token_id] * len(p) for (ids, _), p in zip(rows, pad)])
    labels = torch.tensor([[t if m else -100 for t, m in zip(ids, mask)] + [-100] * len(p) for (ids, mask), p in zip(rows, pad)])
    attention = torch.tensor([[1] * len(ids) + p for (ids, _), p in zip(rows, pad)])
    torch.manual_seed(0)
    peft_model = get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", r=4, lora_alpha=16, lora_dropout=0.0, target_modules=["q_proj", "v_proj"]))
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=2e-2)
    peft_model.train()
    for _ in range(150):
        peft_model(input_ids=input_ids, attention_mask=attention, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    out = root / "adapter"
    peft_model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    manifest = {
        "format_version": 1, "task": "generation", "name": name, "method": "lora",
        "base_model": {"id": str(base), "revision": None}, "max_length": 128,
        "template": {"name": "chatml", "chat_template": templates.NAMED["chatml"]}, "system_prompt": None, "metrics": {},
    }
    (out / "tunekit.json").write_text(json.dumps(manifest, indent=2))
    return out


@pytest.fixture(scope="session")
def greeter_dir(tmp_path_factory) -> Path:
    """A generation model directory: the LoRA adapter `greeter` on a tiny random Llama (its `base_model.id` is a folder)."""
    return _train_greeter(tmp_path_factory.mktemp("greeter"))


@pytest.fixture(scope="session")
def greeter(greeter_dir) -> LoadedModel:
    from tunekit.models.causal import load_generator

    return LoadedModel(model=load_generator(greeter_dir), name="greeter", version="1", source="greeter/1")


@pytest.fixture
def gen_client(greeter) -> Iterator[TestClient]:
    """A ready client serving the greeter as version 1, with max_new_tokens 64."""
    yield from make_client(local_settings(model="greeter/1", max_new_tokens=64), lambda s: greeter)


def _wait_ready(client: TestClient, timeout: float = 10.0) -> dict:
    """Poll /readyz until 200; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        response = client.get("/readyz")
        if response.status_code == 200:
            return response.json()
        if time.monotonic() > deadline:
            raise AssertionError(f"/readyz still {response.status_code} after {timeout}s: {response.text}")
        time.sleep(0.02)


def make_client(settings: ServeSettings, loader: Callable[[ServeSettings], LoadedModel]) -> Iterator[TestClient]:
    with TestClient(create_app(settings, loader)) as client:
        _wait_ready(client)
        yield client


@pytest.fixture
def client(loaded) -> Iterator[TestClient]:
    """A ready client serving the single-text model as version 7, with small limits."""
    yield from make_client(local_settings(model="tiny-intent/7", max_inputs=4, max_chars=50), lambda s: loaded)


@pytest.fixture
def pair_client(loaded_pair) -> Iterator[TestClient]:
    """A ready client serving the sentence-pair model."""
    yield from make_client(local_settings(model="tiny-pair@champion"), lambda s: loaded_pair)


@pytest.fixture
def gated_loader(loaded) -> Iterator[tuple[threading.Event, Callable[[ServeSettings], LoadedModel]]]:
    """A loader that blocks until its event is set, to see the server before the model is there."""
    release = threading.Event()

    def loader(settings: ServeSettings) -> LoadedModel:
        assert release.wait(10), "the test never released the loader"
        return loaded

    yield release, loader
    release.set()  # never leave the loader thread waiting


@pytest.fixture
def wait_ready() -> Callable[..., dict]:
    """Poll /readyz until 200 and return its body."""
    return _wait_ready


@pytest.fixture
def labels() -> list[str]:
    return list(LABELS)


@contextlib.contextmanager
def live_server(make_app: Callable[[int], object]) -> Iterator[str]:
    """A real uvicorn server on a free loopback port (``make_app(port)`` builds the app), run in a thread until the block ends."""
    import socket

    import httpx
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    # log_config=None: uvicorn's own logging setup runs dictConfig, which closes every handler in the
    # process; absl's handler (imported with rouge-score) then closes the stream it holds, pytest's
    # capture of stderr, and pytest itself dies later ("lost sys.stderr").
    server = uvicorn.Server(uvicorn.Config(make_app(port), log_config=None, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{url}/readyz").status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "the server did not become ready"
        time.sleep(0.05)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
