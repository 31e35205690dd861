"""GGUF export of a generation model, checked against the model it came from.

``export_gguf(MODEL_DIR, OUT_DIR, kind)`` writes ``OUT_DIR/model.gguf`` (``f32``, ``f16`` or
``q8_0``) for llama.cpp and Ollama, with an Ollama ``Modelfile`` beside it. A PEFT adapter is first
merged into its base (``export.export_merged``, which checks the merge itself); a full checkpoint is
written as it is. The file is written with the ``gguf`` package (``write_gguf``): llama.cpp's tensor
names (``gguf.TensorNameMap``), the query and key rows permuted the way llama.cpp's converter does,
1-D tensors kept in float32, and the tokenizer as llama.cpp's byte-level BPE metadata (vocabulary,
token types, merges, special ids, chat template).

Parity is checked, not assumed: the written file is loaded back through transformers' GGUF reader and
its next-token logits and greedy answers are compared with the adapter model's on the same prompt ids.
The agreement goes into ``OUT_DIR/export-report.json`` with the source's manifest; logits further apart than the
tolerance for the kind, or a greedy answer that differs, is an error and nothing is kept.
Llama-architecture models only (SmolLM2, Llama, and the tiny test Llama).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tunekit import task_kinds
from tunekit.artifacts import Manifest
from tunekit.errors import ModelError

__all__ = ["GGUF_KINDS", "GgufExportResult", "export_gguf", "write_gguf"]

GGUF_NAME = "model.gguf"
# The parity check (logits, next-token and greedy agreement, tokenizer agreement) and the source's
# manifest (lineage). No tunekit.json: the folder is for llama.cpp and Ollama, not a tunekit model directory.
REPORT = "export-report.json"
# Largest next-token logit difference accepted per kind: float32 is exact up to rounding, f16 and
# q8_0 round every weight (q8_0 to 8 bits per 32-weight block), so their logits move a little.
GGUF_KINDS = {"f32": 1e-3, "f16": 0.25, "q8_0": 1.0}


@dataclass
class GgufExportResult:
    out_file: Path
    kind: str
    max_abs_logit_diff: float
    top1_agreement: float  # fraction of prompts whose next token (argmax) is the same
    greedy_agreement: float  # fraction of prompts whose greedy answer is the same, token for token
    prompts: int
    tolerance: float


def export_gguf(model_dir: str | Path, out_dir: str | Path, kind: str = "f16", prompts: list[str] | None = None,
                tolerance: float | None = None, max_new_tokens: int = 16) -> GgufExportResult:
    """Write ``model_dir`` (a tunekit generation model) as ``out_dir/model.gguf``, load it back, compare, keep it only if it agrees."""
    from tunekit.models import export as merged_export
    from tunekit.models.gguf import GGUF_BUNDLED, gguf_file

    model_dir, out_dir = Path(model_dir), Path(out_dir)
    if kind not in GGUF_KINDS:
        raise ModelError(f"--quantize {kind!r}: GGUF export writes {', '.join(GGUF_KINDS)}")
    tolerance = GGUF_KINDS[kind] if tolerance is None else tolerance
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ModelError(f"--out {out_dir} exists and is not empty; choose a new folder")
    info = Manifest.read(model_dir)
    if not task_kinds.kind(info.task).causal:
        raise ModelError(f"{model_dir}: a {info.task} model; GGUF export writes generation models (causal LMs)")
    base = info.base_model.id
    pre = _gguf_pre(gguf_file(base)) if base in GGUF_BUNDLED else "default"
    reference, tokenizer, inputs = merged_export.load_with_prompts(model_dir, info, prompts)
    with tempfile.TemporaryDirectory(prefix="tunekit-gguf-") as tmp:
        if (model_dir / "adapter_config.json").is_file():
            folder = merged_export.export_merged(model_dir, Path(tmp) / "merged").out_dir
        else:
            folder = model_dir
        out_dir.mkdir(parents=True, exist_ok=True)
        try:
            write_gguf(folder, out_dir / GGUF_NAME, kind, pre=pre, name=info.name)
            check = _compare(reference, out_dir, inputs, tokenizer, max_new_tokens)
        except BaseException:
            shutil.rmtree(out_dir, ignore_errors=True)
            raise
    failed = check["max_abs_logit_diff"] > tolerance or check["greedy_agreement"] < 1.0
    if failed:
        shutil.rmtree(out_dir, ignore_errors=True)
        raise ModelError(f"the {kind} GGUF file's logits differ from the adapter model's by up to {check['max_abs_logit_diff']:.3g} "
                         f"(tolerance {tolerance:g}); greedy answers agree on {check['greedy_agreement']:.0%} of {check['prompts']} prompts. "
                         "Nothing was kept.")
    (out_dir / "Modelfile").write_text(ollama_modelfile(info.template.chat_template if info.template else None, tokenizer, info.system_prompt))
    report = {"format": "gguf", "kind": kind, "file": GGUF_NAME, "exported_from": {"path": str(model_dir), "method": info.method},
              "check": {**check, "tolerance": tolerance}, "manifest": info.model_dump(mode="json", exclude_unset=True)}
    (out_dir / REPORT).write_text(json.dumps(report, indent=2))
    return GgufExportResult(out_dir / GGUF_NAME, kind, check["max_abs_logit_diff"], check["top1_agreement"],
                            check["greedy_agreement"], check["prompts"], tolerance)


def write_gguf(folder: str | Path, out_file: str | Path, kind: str = "f16", pre: str = "default", name: str | None = None) -> Path:
    """Write the Hugging Face Llama-architecture model in ``folder`` (weights, config, tokenizer.json) as a GGUF file."""
    import gguf
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder, out_file = Path(folder), Path(out_file)
    config = AutoConfig.from_pretrained(folder)
    if config.model_type != "llama":
        raise ModelError(f"{folder}: GGUF export writes Llama-architecture models (SmolLM2, Llama); this one is {config.model_type!r}")
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    n_head, n_kv = config.num_attention_heads, config.num_key_value_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // n_head
    rope = getattr(config, "rope_parameters", None) or {}
    rope_theta = rope.get("rope_theta", getattr(config, "rope_theta", 10000.0))
    if rope.get("rope_type", "default") != "default":
        raise ModelError(f"{folder}: rope scaling {rope.get('rope_type')!r} is not written by the GGUF export yet")

    file_type = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[kind]
    writer = gguf.GGUFWriter(out_file, "llama")
    writer.add_type("model")
    writer.add_name(name or folder.name)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_kv)
    writer.add_rope_freq_base(float(rope_theta))
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    writer.add_rope_dimension_count(head_dim)
    writer.add_vocab_size(config.vocab_size)
    writer.add_file_type(int(file_type))
    if kind == "q8_0":
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    _add_tokenizer(writer, folder, tokenizer, config, pre)

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    tied = bool(getattr(config, "tie_word_embeddings", False))
    for key, tensor in model.state_dict().items():
        if tied and key == "lm_head.weight":
            continue  # llama.cpp uses token_embd for the output when output.weight is absent
        if "rotary_emb" in key:
            continue
        new = names.get_name(key, try_suffixes=(".weight", ".bias"))
        if new is None:
            raise ModelError(f"{folder}: no GGUF name for tensor {key!r}")
        data = tensor.detach().float().numpy()
        if key.endswith("self_attn.q_proj.weight"):
            data = _permute(data, n_head, n_head)
        elif key.endswith("self_attn.k_proj.weight"):
            data = _permute(data, n_head, n_kv)
        _add_tensor(writer, new, data, kind)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out_file


def ollama_modelfile(chat_template: str | None, tokenizer, system_prompt: str | None = None) -> str:
    """An Ollama Modelfile for the exported file: the chat template in Ollama's Go template syntax
    when it is ChatML (SmolLM2's, and tunekit's default), the system prompt the model was trained
    with (``data.system_prompt``), and the turn-end marker as a stop word."""
    lines = [f"FROM ./{GGUF_NAME}"]
    if system_prompt:
        lines.append(f'SYSTEM """{system_prompt}"""')
    if chat_template and "<|im_start|>" in chat_template:
        lines.append('TEMPLATE """{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n'
                     '{{ end }}<|im_start|>assistant\n"""')
        lines.append('PARAMETER stop "<|im_end|>"')
    else:
        lines.append("# The chat template is not ChatML: Ollama reads tokenizer.chat_template from the GGUF file's metadata;")
        lines.append("# check `ollama show --modelfile` and write a TEMPLATE here if it does not recognise it.")
    if tokenizer.eos_token and tokenizer.eos_token != "<|im_end|>":
        lines.append(f'PARAMETER stop "{tokenizer.eos_token}"')
    lines.append("PARAMETER temperature 0")
    return "\n".join(lines) + "\n"


def _permute(w: np.ndarray, n_head: int, n_kv: int) -> np.ndarray:
    """llama.cpp's query/key row order (rotary pairs interleaved); transformers' GGUF reader undoes it."""
    if n_kv != n_head:
        n_head = n_kv
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _add_tensor(writer, name: str, data: np.ndarray, kind: str) -> None:
    import gguf

    if data.ndim == 1 or kind == "f32":
        writer.add_tensor(name, data.astype(np.float32))
    elif kind == "f16":
        writer.add_tensor(name, data.astype(np.float16))
    elif data.shape[-1] % gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType.Q8_0][0] == 0:
        writer.add_tensor(name, gguf.quants.quantize(data.astype(np.float32), gguf.GGMLQuantizationType.Q8_0),
                          raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    else:  # rows not a multiple of the 32-weight block, as llama.cpp's converter does
        writer.add_tensor(name, data.astype(np.float16))


def _add_tokenizer(writer, folder: Path, tokenizer, config, pre: str) -> None:
    """The tokenizer as llama.cpp's byte-level BPE ("gpt2") metadata, from ``tokenizer.json``."""
    import gguf

    spec = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    model = spec["model"]
    if model.get("type") != "BPE":
        raise ModelError(f"{folder}: GGUF export writes byte-level BPE tokenizers; this one is {model.get('type')!r}")
    size = max(config.vocab_size, len(tokenizer))
    tokens = [f"[PAD{i}]" for i in range(size)]
    types = [gguf.TokenType.UNUSED] * size
    for token, i in model["vocab"].items():
        tokens[i], types[i] = token, gguf.TokenType.NORMAL
    for added in spec.get("added_tokens", []):
        tokens[added["id"]] = added["content"]
        types[added["id"]] = gguf.TokenType.CONTROL if added.get("special") else gguf.TokenType.USER_DEFINED
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types([int(t) for t in types])
    writer.add_token_merges(merges)
    for setter, token_id in ((writer.add_bos_token_id, tokenizer.bos_token_id), (writer.add_eos_token_id, tokenizer.eos_token_id),
                             (writer.add_unk_token_id, tokenizer.unk_token_id), (writer.add_pad_token_id, tokenizer.pad_token_id)):
        if token_id is not None:
            setter(int(token_id))
    probe = tokenizer("a")["input_ids"]
    writer.add_add_bos_token(bool(probe) and probe[0] == tokenizer.bos_token_id)
    if isinstance(getattr(tokenizer, "chat_template", None), str):
        writer.add_chat_template(tokenizer.chat_template)


def _gguf_pre(path: Path) -> str:
    """The pre-tokenizer name a GGUF file states (``smollm`` for SmolLM2), so the export keeps it."""
    import gguf

    field = gguf.GGUFReader(path).fields.get("tokenizer.ggml.pre")
    return field.contents() if field is not None else "default"


@torch.inference_mode()
def _compare(reference, out_dir: Path, inputs: list[dict], tokenizer, max_new_tokens: int) -> dict:
    """Load the written file back (transformers' GGUF reader) and compare it with ``reference`` on the same prompt ids."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        reloaded = AutoModelForCausalLM.from_pretrained(out_dir, gguf_file=GGUF_NAME, dtype=torch.float32).eval()
    finally:
        hf_logging.set_verbosity(verbosity)
    reference.eval()
    diffs, top1, greedy = [], [], []
    stops = _stop_ids(tokenizer)
    for x in inputs:
        ids = x["input_ids"]
        a, b = reference(input_ids=ids).logits[0, -1].float(), reloaded(input_ids=ids).logits[0, -1].float()
        diffs.append(float((a - b).abs().max()))
        top1.append(int(a.argmax()) == int(b.argmax()))
        kw = {"max_new_tokens": max_new_tokens, "do_sample": False, "eos_token_id": stops, "pad_token_id": tokenizer.pad_token_id}
        ga = reference.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **kw)[0, ids.shape[1]:].tolist()
        gb = reloaded.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **kw)[0, ids.shape[1]:].tolist()
        greedy.append(ga == gb)
    n = len(inputs)
    return {"prompts": n, "max_abs_logit_diff": max(diffs), "top1_agreement": sum(top1) / n, "greedy_agreement": sum(greedy) / n,
            "tokenizer_agreement": _tokenizer_agreement(out_dir, tokenizer, inputs)}


def _tokenizer_agreement(out_dir: Path, tokenizer, inputs: list[dict]) -> float:
    """Fraction of the prompts that the tokenizer rebuilt from the file's metadata encodes to the same ids
    (reported, not enforced: a tokenizer with a custom pre-tokenizer, like the tiny test one, has no GGUF form)."""
    from transformers import AutoTokenizer

    rebuilt = AutoTokenizer.from_pretrained(out_dir, gguf_file=GGUF_NAME)
    same = 0
    for x in inputs:
        ids = x["input_ids"][0].tolist()
        text = tokenizer.decode(ids, skip_special_tokens=False)
        same += rebuilt(text, add_special_tokens=False)["input_ids"] == tokenizer(text, add_special_tokens=False)["input_ids"]
    return same / len(inputs)


def _stop_ids(tokenizer) -> list[int]:
    from tunekit.models import templates

    return templates.stop_token_ids(tokenizer)
