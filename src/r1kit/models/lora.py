"""LoRA adapters through PEFT (Hu et al. 2021): train low-rank updates, keep the base frozen.

`model.lora_r > 0` wraps the policy with `apply_lora`. Only the adapter weights reach the
optimizer, so its state is small, and the frozen base doubles as the reference model:
`AdapterDisabledReference` runs the same module with the adapters switched off
(`peft_model.disable_adapter()`), so GRPO's KL term needs no second copy of the weights.

Saving a PeftModel with `save_pretrained` writes the adapter (adapter_config.json and
adapter_model.safetensors); `merge_lora` in models/load.py (CLI: `r1kit merge-lora ADAPTER_DIR
OUT_DIR`) folds it into the base and writes an ordinary full Hugging Face directory, and
`load_model` there accepts an adapter directory too and returns the merged model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from r1kit.config import ModelArgs
from r1kit.errors import R1kitError

ADAPTER_CONFIG = "adapter_config.json"


def _peft():
    try:
        import peft
    except ImportError:
        raise R1kitError("model.lora_r > 0 needs the peft package; install it with `pip install r1kit[peft]`") from None
    return peft


def is_adapter_dir(path: str | Path) -> bool:
    """True for a directory written by PeftModel.save_pretrained."""
    return (Path(path) / ADAPTER_CONFIG).is_file()


def is_peft_model(model: Any) -> bool:
    return hasattr(model, "disable_adapter") and hasattr(model, "get_base_model")


def apply_lora(model: torch.nn.Module, args: ModelArgs, task_type: str = "CAUSAL_LM") -> torch.nn.Module:
    """Wrap `model` with fresh LoRA adapters per `args` (lora_r, lora_alpha, lora_dropout,
    lora_target_modules); the base weights are frozen. lora_B starts at zero, so the wrapped model
    computes exactly what the base does until the first update. task_type `SEQ_CLS` (a scalar-head
    model) also trains the new head in full (PEFT's modules_to_save)."""
    peft = _peft()
    targets: Any = list(args.lora_target_modules) or "all-linear"
    config = peft.LoraConfig(r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout, target_modules=targets, task_type=task_type)
    try:
        return peft.get_peft_model(model, config)
    except ValueError as e:
        raise R1kitError(f"model.lora_target_modules={args.lora_target_modules!r} does not fit this model ({str(e).splitlines()[0]}); name its linear layers, e.g. [q_proj, v_proj], or leave it empty for all") from None


def load_adapter(model: torch.nn.Module, adapter_dir: str | Path, trainable: bool = True) -> torch.nn.Module:
    """`model` (the base) wrapped with the adapter saved in `adapter_dir`."""
    return _peft().PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=trainable)


def adapter_base(adapter_dir: str | Path) -> str:
    """The base model path or hub id an adapter directory was trained on."""
    config = json.loads((Path(adapter_dir) / ADAPTER_CONFIG).read_text())
    base = config.get("base_model_name_or_path")
    if not base:
        raise R1kitError(f"{str(adapter_dir)!r} does not name its base model; pass the base explicitly")
    return base


class AdapterDisabledReference:
    """The reference model of a LoRA policy: the policy itself with its adapters disabled.

    Callable like a model (in eval mode, whatever mode the policy is in), so the log-prob code
    treats it as any reference; it holds no weights of its own.
    """

    def __init__(self, policy: torch.nn.Module):
        self.policy = policy

    def __call__(self, **kwargs):
        was_training = self.policy.training
        self.policy.eval()
        try:
            with self.policy.disable_adapter():
                return self.policy(**kwargs)
        finally:
            self.policy.train(was_training)

    def get_base_model(self) -> torch.nn.Module:
        """Lets `completion_logprobs` see which arguments the underlying forward accepts."""
        return self.policy.get_base_model()
