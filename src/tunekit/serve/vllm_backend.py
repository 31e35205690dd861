"""``serve.backend: vllm``: hand a generation model to vLLM's OpenAI-compatible server on a GPU.

For LLMs under real load, vLLM's continuous batching and paged attention beat anything a
transformers ``generate`` loop can do, and vLLM loads PEFT LoRA adapters itself. tunekit's part is
to start it right: the base model the adapter was trained on, the adapter under its name, and the
exact chat template saved with the model (so vLLM renders prompts as training did).

What tunekit's own server adds (hashed multi-key auth, guardrails, the request log and feedback,
tunekit's metrics) is not in this path: vLLM takes one shared key (``--api-key``, from
``$VLLM_API_KEY``) and exports its own Prometheus metrics. The README says so.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

from tunekit import task_kinds
from tunekit.artifacts import MANIFEST, Manifest
from tunekit.errors import ModelError
from tunekit.models import resolve_base

__all__ = ["run_vllm", "vllm_command"]


def vllm_command(model_dir: Path, host: str, port: int, template_file: Path) -> list[str]:
    """The ``vllm`` OpenAI-server command line for a tunekit generation model directory."""
    model_dir = Path(model_dir)
    info = Manifest.read(model_dir) if (model_dir / MANIFEST).is_file() else None
    if info is None or not task_kinds.kind(info.task).causal:
        raise ModelError(f"{model_dir}: serve.backend vllm serves generation models (task: generation); this is "
                         f"{'not a tunekit model directory' if info is None else 'a ' + info.task + ' model'}")
    if info.template is None:
        raise ModelError(f"{model_dir / MANIFEST}: field `template`: required for a generation model, but missing; retrain the model")
    template_file.write_text(info.template.chat_template, encoding="utf-8")
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--host", host, "--port", str(port),
           "--chat-template", str(template_file), "--max-model-len", str(info.max_length * 2)]
    adapter = model_dir / "adapter_config.json"
    if adapter.is_file():
        rank = json.loads(adapter.read_text()).get("r", 16)
        base = info.base_model
        cmd += ["--model", resolve_base(base.id), "--served-model-name", base.id, "--enable-lora",
                "--lora-modules", f"{info.name}={model_dir.resolve()}", "--max-lora-rank", str(max(8, rank))]
        if base.revision:
            cmd += ["--revision", base.revision]
    else:
        cmd += ["--model", str(model_dir.resolve()), "--served-model-name", info.name]
    if os.environ.get("VLLM_API_KEY"):
        cmd += ["--api-key", os.environ["VLLM_API_KEY"]]
    return cmd


def run_vllm(model_dir: Path, host: str, port: int, workspace: Path) -> None:
    """Replace this process with vLLM's server (it handles SIGTERM and drains itself)."""
    try:
        import vllm  # noqa: F401
    except ImportError:
        raise ModelError("serve.backend vllm needs vLLM on a CUDA machine: pip install 'tunekit[vllm]' (or pip install vllm)") from None
    import torch

    if not torch.cuda.is_available():
        raise ModelError("serve.backend vllm needs a CUDA GPU and none is visible; use the default backend (transformers) here")
    workspace.mkdir(parents=True, exist_ok=True)
    cmd = vllm_command(model_dir, host, port, workspace / "vllm-chat-template.jinja")
    print("tunekit: starting vLLM:", " ".join(cmd), flush=True)
    os.execv(shutil.which(cmd[0]) or cmd[0], cmd)
