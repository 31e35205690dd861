"""LoRA through PEFT, with the classification head trained in full.

PEFT's ``SEQ_CLS`` task type puts the head (``classifier``/``score``) in ``modules_to_save``, so it
is trained and saved with the adapter; without that a LoRA classifier would keep a random head.
The default targets are every linear layer of the encoder blocks (and BERT's pooler, which feeds
the head): LoRA on all linear layers beats attention-only LoRA on BANKING77 at the same rank.
"""

from __future__ import annotations

# Linear layers inside the transformer blocks, by ``config.model_type``. PEFT matches a name
# when a module's qualified name ends with it.
DEFAULT_TARGETS: dict[str, list[str]] = {
    "bert": ["query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense", "pooler.dense"],
    "roberta": ["query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense"],
    "xlm-roberta": ["query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense"],
    "distilbert": ["q_lin", "k_lin", "v_lin", "out_lin", "lin1", "lin2"],
    "deberta-v2": ["query_proj", "key_proj", "value_proj", "attention.output.dense", "intermediate.dense", "output.dense"],
    "electra": ["query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense"],
}


def target_modules(model, method) -> list[str] | str:
    """The configured targets, else the architecture's default, else PEFT's ``all-linear``."""
    if method.target_modules:
        return list(method.target_modules)
    return DEFAULT_TARGETS.get(getattr(model.config, "model_type", ""), "all-linear")


def check_qlora(device) -> None:
    """QLoRA quantises the base with bitsandbytes, which runs on CUDA only."""
    from tunekit.errors import ModelError

    if getattr(device, "type", str(device)) != "cuda":
        raise ModelError("method.kind qlora needs a CUDA GPU (4-bit NF4 through bitsandbytes) and none is in use; "
                         "use method.kind lora here, or run on a CUDA machine with train.device auto or cuda")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise ModelError("method.kind qlora needs bitsandbytes: pip install bitsandbytes") from None


def apply(model, method, task_type: str = "SEQ_CLS"):
    """LoRA, DoRA (``use_dora``), rsLoRA (``use_rslora``) or QLoRA (LoRA on a 4-bit base)."""
    from peft import LoraConfig, TaskType, get_peft_model

    if method.kind == "qlora":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model)
    config = LoraConfig(
        task_type=TaskType[task_type],
        r=method.r,
        lora_alpha=method.alpha,
        lora_dropout=method.dropout,
        target_modules=target_modules(model, method),
        use_dora=method.kind == "dora",
        use_rslora=method.kind == "rslora",
    )
    try:
        return get_peft_model(model, config)
    except ValueError as exc:  # PEFT says which targets matched nothing
        from tunekit.errors import ConfigError

        raise ConfigError(f"method.target_modules: {exc}") from None
