"""Load any Hugging Face causal LM and its tokenizer, from a local directory or a hub id.

Tests and the demo pass directories of tiny models built by `r1kit.models.tiny`; a user passes
`Qwen/Qwen2.5-0.5B-Instruct`. Both go through `load_model`, so the code a test exercises is the
code that serves a real model. A LoRA adapter directory (written by a `model.lora_r > 0` run)
loads as its base with the adapter merged in (`merge_lora` writes that merge out as a full model
directory); `load_policy` builds the model a recipe trains. Loading leaves the model's modules as
transformers built them, apart from what ModelArgs asks for; hardware-specific routing is
`r1kit.accel`'s, applied by the recipe at setup.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase, PreTrainedTokenizerFast
from transformers.utils import is_accelerate_available
from transformers.utils import logging as hf_logging

from r1kit.algorithms.logprobs import chunked_head_problem, inner_model
from r1kit.config import ModelArgs
from r1kit.errors import R1kitError
from r1kit.models.compile import compile_layers
from r1kit.models.hub import check_model_source
from r1kit.models.swiglu import lean_swiglu

log = logging.getLogger(__name__)
hf_logging.disable_progress_bar()

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _check_exists(path_or_id: str) -> None:
    if not path_or_id:
        raise R1kitError("no model given; set model.path to a model directory or a hub id")
    check_model_source(path_or_id)  # a missing directory, or a Hub id with the Hub out of reach: at once
    p = Path(path_or_id)
    if p.is_dir() and not (p / "config.json").is_file() and not (p / "adapter_config.json").is_file():
        raise R1kitError(
            f"{path_or_id!r} is a directory without config.json, so not a Hugging Face model; "
            "point model.path at a directory written by save_pretrained"
        )


def _generic_fast_tokenizer(path_or_id: str) -> bool:
    """A local directory whose tokenizer_config.json names the generic fast tokenizer class."""
    config = Path(path_or_id) / "tokenizer_config.json"
    if not ((Path(path_or_id) / "tokenizer.json").is_file() and config.is_file()):
        return False
    try:
        cls = json.loads(config.read_text()).get("tokenizer_class", "")
    except (OSError, json.JSONDecodeError):
        return False
    return cls in ("TokenizersBackend", "PreTrainedTokenizerFast")


def load_tokenizer(path_or_id: str) -> PreTrainedTokenizerBase:
    """The tokenizer of a model, with a pad token (the eos token when the tokenizer has none)."""
    _check_exists(path_or_id)
    try:
        if _generic_fast_tokenizer(path_or_id):
            # transformers 5 swaps its own tokenizer class in for some model types (qwen2) even when
            # the directory saved a generic fast tokenizer; that class rebuilds the pipeline and
            # loses e.g. a character-level pre-tokenizer. Load exactly what was saved.
            tok = PreTrainedTokenizerFast.from_pretrained(path_or_id)
        else:
            tok = AutoTokenizer.from_pretrained(path_or_id)
    except OSError as e:
        raise R1kitError(f"could not load a tokenizer from {path_or_id!r} ({str(e).splitlines()[0]}); check the path or hub id") from None
    if tok.pad_token_id is None:
        if tok.eos_token_id is None:
            raise R1kitError(f"the tokenizer of {path_or_id!r} has neither a pad nor an eos token; add a pad token and save it again")
        log.warning("tokenizer of %s has no pad token; using its eos token %r for padding", path_or_id, tok.eos_token)
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    return tok


def load_model(path_or_id: str, dtype: str = "float32", device: str = "auto", attn_implementation: str = "") -> PreTrainedModel:
    """A causal LM on `device` in `dtype` (`auto` keeps the checkpoint's dtype). Off the CPU, the
    weights load straight onto the device (transformers' `device_map`, which needs the accelerate
    package; without it the model is loaded on the host and moved)."""
    _check_exists(path_or_id)
    if dtype != "auto" and dtype not in DTYPES:
        raise R1kitError(f"unknown dtype {dtype!r}; choose one of {sorted(DTYPES) + ['auto']}")
    if (Path(path_or_id) / "adapter_config.json").is_file():
        from r1kit.models.lora import adapter_base, load_adapter

        base = load_model(adapter_base(path_or_id), dtype, device, attn_implementation)
        return load_adapter(base, path_or_id, trainable=False).merge_and_unload()
    target = resolve_device(device)
    kwargs = {"dtype": "auto" if dtype == "auto" else DTYPES[dtype]}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if target.type != "cpu" and is_accelerate_available():
        # Straight onto the accelerator, as TRL loads it: loaded on the host first, the whole model
        # would pass through host memory (and stay in the process's peak RSS).
        kwargs["device_map"] = str(target)
    try:
        model = AutoModelForCausalLM.from_pretrained(path_or_id, **kwargs)
    except OSError as e:
        raise R1kitError(f"could not load a model from {path_or_id!r} ({str(e).splitlines()[0]}); check the path or hub id") from None
    return model if "device_map" in kwargs else model.to(target)


def load_policy(args: ModelArgs, device: str | None = None, weights: str | Path | None = None) -> torch.nn.Module:
    """The model a recipe trains: `args.path`, wrapped with fresh LoRA adapters when
    `args.lora_r > 0`, with gradient checkpointing when `args.gradient_checkpointing`. `weights` is
    a checkpoint's model directory to resume from (full weights, or the adapter on top of `args.path`)."""
    if args.lora_r > 0:
        from r1kit.models.lora import apply_lora, load_adapter

        base = load_trainable(args, device)
        return check_chunked_head(load_adapter(base, weights) if weights else apply_lora(base, args), args)
    return load_trainable(args, device, weights)


def load_trainable(args: ModelArgs, device: str | None = None, path: str | Path | None = None) -> PreTrainedModel:
    """The causal LM at `path` (default `args.path`) in `args.dtype` on `device` (default
    `args.device`), with ModelArgs' training options applied (`training_options`); no LoRA.
    With `args.chunked_lm_head`, checks that the model can score tokens that way."""
    model = load_model(str(path) if path else args.path, args.dtype, device or args.device, args.attn_implementation)
    return training_options(check_chunked_head(model, args), args)


def check_chunked_head(model: torch.nn.Module, args: ModelArgs) -> torch.nn.Module:
    """`model`, once checked to work with `args.chunked_lm_head` when that is on (a one-line error
    naming the reason otherwise); see `chunked_head_problem`."""
    if args.chunked_lm_head:
        problem = chunked_head_problem(model)
        if problem:
            raise R1kitError(f"model.chunked_lm_head cannot serve {type(inner_model(model)).__name__}: {problem}; set model.chunked_lm_head=false")
    return model


def training_options(model: PreTrainedModel, args: ModelArgs) -> PreTrainedModel:
    """`model` with what ModelArgs asks of a model being trained: lean SwiGLU MLPs (`lean_swiglu`),
    compiled layers (`compile_layers`), gradient checkpointing (non-reentrant, so frozen embeddings
    under LoRA need no input-grad hook). Returns the model."""
    if args.compile and args.gradient_checkpointing:
        raise R1kitError("model.compile and model.gradient_checkpointing cannot be combined (the compiled layers are not checkpointed); set one of them to false")
    if args.lean_mlp:
        lean_swiglu(model)
    if args.compile:
        compile_layers(model)
    if not args.gradient_checkpointing:
        return model
    # transformers 5 calls it activation checkpointing; earlier versions gradient checkpointing.
    enable = getattr(model, "activation_checkpointing_enable", None)
    try:
        if enable is not None:
            enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    except ValueError as e:  # "... does not support gradient checkpointing"
        raise R1kitError(f"{type(model).__name__} cannot use gradient checkpointing ({str(e).splitlines()[0]}); set model.gradient_checkpointing=false") from None
    return model


def save_model(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, path: str | Path) -> Path:
    """Write model and tokenizer as an ordinary HF directory (safetensors)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path


def merge_lora(adapter_dir: str | Path, out_dir: str | Path, base: str = "", dtype: str = "float32") -> Path:
    """Fold the adapter in `adapter_dir` into its base (`base`, else the one the adapter names)
    and write a full Hugging Face model directory with the tokenizer to `out_dir`
    (CLI: `r1kit merge-lora ADAPTER_DIR OUT_DIR`)."""
    from r1kit.models.lora import ADAPTER_CONFIG, adapter_base, is_adapter_dir, load_adapter

    adapter_dir = Path(adapter_dir)
    if not is_adapter_dir(adapter_dir):
        raise R1kitError(f"{str(adapter_dir)!r} is not a LoRA adapter directory (no {ADAPTER_CONFIG}); pass the `model` dir of a LoRA run")
    base = base or adapter_base(adapter_dir)
    merged = load_adapter(load_model(base, dtype, "cpu"), adapter_dir, trainable=False).merge_and_unload()
    tokenizer = load_tokenizer(str(adapter_dir) if (adapter_dir / "tokenizer_config.json").is_file() else base)
    return save_model(merged, tokenizer, out_dir)
