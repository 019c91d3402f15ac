"""Typed configuration: dataclasses with a docstring per field, loaded from YAML, overridden as
`key=value` / `section.key=value` on the command line.

Every recipe has one config dataclass (defined next to the recipe) built from the shared sections
below. `load(path, overrides)` returns it; an unknown key or a value of the wrong type or outside
its choices is an `R1kitError` that names the key and what is valid.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import importlib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from r1kit.errors import R1kitError

# Recipe name -> "module:ConfigClass". Imported lazily so `r1kit --help` stays fast.
RECIPES: dict[str, str] = {
    "pretrain": "r1kit.recipes.pretrain:PretrainConfig",
    "sft": "r1kit.recipes.sft:SFTConfig",
    "grpo": "r1kit.recipes.grpo:GRPOConfig",
    "ppo": "r1kit.recipes.ppo:PPOConfig",
    "rm": "r1kit.recipes.reward_model:RewardModelConfig",
    "dpo": "r1kit.recipes.dpo:DPOConfig",
    "sample": "r1kit.recipes.rejection_sampling:SampleConfig",
    "search": "r1kit.recipes.search:SearchConfig",
    "distill": "r1kit.recipes.distill:DistillConfig",
    "pipeline": "r1kit.recipes.pipeline:PipelineConfig",
}


@dataclass
class ModelArgs:
    """Which model to train and how to hold it."""

    path: str = ""
    """A local Hugging Face model directory or a hub id (e.g. Qwen/Qwen2.5-0.5B-Instruct)."""
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = "float32"
    """Weights dtype. `auto` keeps what the checkpoint says."""
    device: str = "auto"
    """`auto` (cuda when available, else cpu), `cpu`, `cuda`, `cuda:1` ..."""
    attn_implementation: str = ""
    """Passed to transformers when set (`sdpa`, `eager`, `flash_attention_2`)."""
    lora_r: int = 0
    """LoRA rank (Hu et al. 2021) through PEFT; 0 trains every weight. With LoRA the GRPO
    reference is the base model with the adapters disabled (no second copy)."""
    lora_alpha: int = 16
    """LoRA scaling numerator: the update is (lora_alpha / lora_r) * B A."""
    lora_dropout: float = 0.0
    """Dropout on the LoRA input."""
    lora_target_modules: list[str] = field(default_factory=list)
    """Module names to adapt, e.g. [q_proj, v_proj]; empty = every linear layer but the LM head."""
    gradient_checkpointing: bool = False
    """Recompute each layer's activations in backward instead of keeping them (transformers'
    gradient checkpointing, non-reentrant): far less activation memory for long sequences, for about
    one more forward pass of compute. Applies to the model a recipe trains (and PPO's value model);
    the learner's log-probs then run a forward per row (no shared prompts)."""
    chunked_lm_head: bool = False
    """Never build the [batch, tokens, vocabulary] logits when scoring tokens: apply the LM head to
    the final hidden states a chunk of tokens at a time and recompute each chunk in backward (as
    Liger-Kernel's fused linear cross-entropy). Saves the logits and their gradient (gigabytes at a
    150k vocabulary and long completions) for one more LM-head matmul in backward. For SFT, DPO,
    PPO's policy, GRPO and distillation's sft mode; checked at load (a model whose logits are not
    its LM head applied to the last hidden state, e.g. Gemma 2's capped logits, is refused)."""
    lean_mlp: bool = True
    """SwiGLU MLPs (Llama, Qwen2, Qwen3, Mistral) keep only their gate and up projections for
    backward and recompute SiLU(gate) * up there: half the MLP activations (most of a small-vocabulary
    model's activation memory) for one more elementwise SiLU and product per layer, and the same
    gradients to the bit. Other architectures are left as they are."""
    compile: bool = False
    """Compile the trained model's transformer layers with torch.compile (regional compilation:
    one graph that every layer reuses; dynamic shapes), as TRL's `torch_compile`. Only the learner's
    passes run compiled; rollouts run eagerly. The first step pays the compile; on CPU we measured no
    gain (docs/BENCHMARKS.md), so it is off; meant for GPUs. Not with gradient_checkpointing."""


@dataclass
class DataArgs:
    """Where the prompts (and gold answers) come from."""

    task: str = "arithmetic"
    """A built-in task (arithmetic, countdown, code) that generates rows; ignored when `path` is set."""
    task_params: dict[str, Any] = field(default_factory=dict)
    """Parameters of the built-in task, e.g. {n_operands: 2, digits: 1}."""
    path: str = ""
    """Training data: a .jsonl/.json/.parquet file or a saved HF dataset directory."""
    test_path: str = ""
    """Held-out data in the same form; when empty a built-in task's test split is used."""
    columns: dict[str, str] = field(default_factory=dict)
    """Column mapping {our_name: their_name}, e.g. {prompt: question, answer: solution}."""
    train_size: int = 2000
    """Rows generated for training by a built-in task (or the cap on rows read from `path`; 0 = all)."""
    test_size: int = 100
    """Rows of the test split used for evaluation."""
    seed: int = 0
    """Seed of the task generator (splits are disjoint whatever the seed)."""
    template: Literal["tiny", "r1zero", "chat", "plain"] = "tiny"
    """How a prompt is shown to the model: `tiny` (Q:/A: for char-level models), `r1zero` (the
    DeepSeek-R1-Zero template), `chat` (the tokenizer's chat template), `plain` (as is)."""
    system_prompt: str = ""
    """System message for the `chat` template."""
    max_prompt_tokens: int = 0
    """Longest prompt in tokens (GRPO, PPO); 0 = the model's context minus sampling.max_new_tokens."""
    long_prompts: Literal["skip", "truncate", "error"] = "skip"
    """Prompts over max_prompt_tokens (GRPO, PPO): `skip` them (counted as data/skipped_long_prompts),
    `truncate` them from the left (keeping the end, where the question is), or stop with an `error`."""


@dataclass
class SamplingArgs:
    """Rollout sampling of the RL recipes (R1 samples at temperature 1)."""

    temperature: float = 1.0
    """Sampling temperature; the learner's log-probs use the same one."""
    top_p: float = 1.0
    """Nucleus sampling."""
    top_k: int = 0
    """Top-k sampling (0 = off)."""
    max_new_tokens: int = 64
    """Longest completion; longer ones are truncated (finish reason `length`)."""
    stop: list[str] = field(default_factory=list)
    """Stop strings, e.g. ["</answer>"]."""


@dataclass
class OptimArgs:
    """Optimiser and schedule."""

    lr: float = 1e-3
    """Peak learning rate of AdamW."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    """AdamW betas."""
    warmup_steps: int = 10
    """Linear warm-up steps."""
    schedule: Literal["cosine", "constant", "linear"] = "cosine"
    """Learning-rate schedule after warm-up."""
    min_lr_ratio: float = 0.1
    """Floor of the cosine/linear decay as a fraction of `lr`."""
    max_grad_norm: float = 1.0
    """Clip the global gradient norm to this (0 disables)."""


@dataclass
class RunArgs:
    """Where results go and how often things happen."""

    output_dir: str = "runs"
    """Parent folder of run directories."""
    name: str = ""
    """Run directory name; empty = `<recipe>-<timestamp>`."""
    seed: int = 0
    """Seed for python, numpy and torch."""
    log_every: int = 1
    """Log metrics every N steps."""
    eval_every: int = 0
    """Evaluate on the test split every N steps (0 = only at the end)."""
    save_every: int = 0
    """Save a checkpoint every N steps (0 = only at the end)."""
    keep_checkpoints: int = 2
    """How many step checkpoints to keep (the final model is always kept)."""
    tensorboard: bool = True
    """Write TensorBoard events when tensorboard is installed."""
    threads: int = 0
    """torch intra-op threads (0 = torch's default)."""
    accel: Literal["auto", "off"] = "auto"
    """Hardware-specific speed-ups (`r1kit.accel`), applied once at setup by device. `auto`: on
    CPU, large linear products through oneDNN (x86), rollouts through a flat decode step over the
    model's weights (or plain-matmul one-token attention), split among forked worker processes,
    with small models decoded on one thread, and glibc's malloc keeping freed memory; on a GPU,
    decode steps replayed as a CUDA graph. `off`: plain PyTorch and transformers (the
    model's own forward and attention, one process), the same maths up to float rounding and
    other random draws where auto splits a rollout among processes. OpenMP's wait policy is set
    by the command line before any config is read; set OMP_WAIT_POLICY to choose your own."""
    rollout_processes: int = 0
    """With run.accel=auto on CPU (Linux), how many processes may share a rollout's prompts
    (`r1kit/accel/workers.py`): 0 = automatic (one per torch thread for a model of at most 20M
    parameters), 1 = every rollout in the training process, k = at most k. More than 1 needs
    run.accel=auto."""
    resume: str = ""
    """`auto` to continue from the newest checkpoint of the run directory, or a checkpoint path."""
    progress: bool = True
    """Show a progress bar."""


@dataclass
class MCTSArgs:
    """Monte Carlo Tree Search over reasoning steps (r1kit/search/mcts.py), per test problem."""

    budget_tokens: int = 256
    """Generated tokens the search of one problem may spend (expansions and rollouts); never exceeded."""
    simulations: int = 64
    """Most simulations (select, expand, evaluate, backup) per problem."""
    k: int = 2
    """Next steps sampled at each expansion; their probabilities are the priors. Each level of the
    tree costs k steps: on the demo's arithmetic, k=2 answered more problems within a budget than
    k=4 (benchmarks/mcts_vs_bestofn.py)."""
    c_puct: float = 1.0
    """Exploration weight of PUCT (Silver et al. 2017): Q + c_puct * P * sqrt(N) / (1 + N_child)."""
    widening: float = 0.5
    """Progressive widening (Coulom 2007): a node visited N times asks the policy for k more next
    steps until it has done so ceil(N ** widening) times; 0 expands each node once (AlphaZero).
    A sharp policy samples the same few steps, so without it a small tree can run out of new ones."""
    step_max_tokens: int = 32
    """Longest step; a step ends at a separator, the end of the answer or the end of sequence."""
    separators: list[str] = field(default_factory=list)
    """Strings that end a step (kept in it); empty = the task's (arithmetic: a space and </think>,
    one partial sum per step), else blank lines."""
    value: Literal["rollout", "model"] = "rollout"
    """How a leaf is valued: `rollout`, a sampled completion scored by the verifier (an oracle at
    test time: it knows the gold answer, and the first verified solution ends the search); `model`,
    a value model trained on rollout outcomes (`r1kit search`), which generates nothing."""
    value_model: str = ""
    """The value model's directory, for value=model (the `value_model` of an `r1kit search` run)."""


@dataclass
class EvalArgs:
    """Evaluation on the test split."""

    k: int = 4
    """Samples per prompt for pass@1 (mean over k), pass@k and maj@k; 0 = greedy only."""
    temperature: float = 1.0
    """Sampling temperature for the k samples (R1 evaluates at 0.6 with top-p 0.95)."""
    top_p: float = 1.0
    """Nucleus sampling for the k samples."""
    max_new_tokens: int = 64
    """Longest completion."""
    batch_size: int = 64
    """Prompts per generation batch."""
    search: Literal["none", "mcts"] = "none"
    """Also answer each problem by a search at test time: `mcts` adds mcts_acc (and
    mcts_tokens, generated tokens per problem) under the settings of eval.mcts."""
    mcts: MCTSArgs = field(default_factory=MCTSArgs)
    """Settings of the test-time search."""


# --------------------------------------------------------------------------------------------
# Loading


def recipe_config_class(recipe: str) -> type:
    if recipe not in RECIPES:
        raise R1kitError(f"unknown recipe {recipe!r}; choose one of {sorted(RECIPES)}")
    module, name = RECIPES[recipe].split(":")
    return getattr(importlib.import_module(module), name)


def load(path: str | Path | None, overrides: list[str] | tuple[str, ...] = (), cls: type | None = None) -> Any:
    """Build a typed config from a YAML file and `key=value` overrides.

    `cls` is the config dataclass; when None it comes from the YAML's `recipe:` key.
    """
    raw: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise R1kitError(f"config file {str(p)!r} not found; pass an existing YAML file to --config")
        try:
            raw = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            # str(e) spans several lines (with a caret drawing); keep the error to one sentence.
            mark = getattr(e, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(e, "problem", None) or str(e).splitlines()[0]
            raise R1kitError(f"config file {str(p)!r} is not valid YAML{where} ({problem}); fix the syntax") from None
        if not isinstance(raw, dict):
            raise R1kitError(f"config file {str(p)!r} must hold a mapping of keys to values")
    for item in overrides:
        apply_override(raw, item)
    recipe = raw.pop("recipe", None)
    if cls is None:
        if recipe is None:
            raise R1kitError("the config does not say which recipe it is for; add `recipe: grpo` (or sft, ...)")
        cls = recipe_config_class(recipe)
    return from_dict(cls, raw)


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Set `a.b.c=value` in a nested dict; the value is parsed as YAML (so 1e-3, true, [1,2] work)."""
    if "=" not in item:
        raise R1kitError(f"override {item!r} is not of the form key=value (e.g. optim.lr=1e-4)")
    key, value = item.split("=", 1)
    parts = key.strip().split(".")
    node: Any = raw
    for part in parts[:-1]:
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]  # stages.1.config.steps=5
            continue
        if not isinstance(node, dict):
            raise R1kitError(f"override {item!r}: {part!r} is not a section")
        if node.get(part) is None:  # absent, or `eval:` left empty in the YAML
            node[part] = {}
        node = node[part]
    if not isinstance(node, dict):
        raise R1kitError(f"override {item!r}: {parts[-2] if len(parts) > 1 else key!r} is not a section")
    try:
        node[parts[-1]] = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError:
        node[parts[-1]] = value


def from_dict(cls: type, raw: dict[str, Any], prefix: str = "") -> Any:
    """Instantiate dataclass `cls` from `raw`, checking every key and value."""
    if not isinstance(raw, dict):
        raise R1kitError(f"config section {prefix.rstrip('.') or '(top)'} must be a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in raw.items():
        if key not in fields:
            near = difflib.get_close_matches(key, fields, n=1)
            hint = f" (did you mean {prefix + near[0]!r}?)" if near else ""
            raise R1kitError(
                f"unknown config key {prefix + key!r}{hint}; valid keys here: {', '.join(sorted(fields))}"
            )
        if dataclasses.is_dataclass(hints[key]) and isinstance(value, dict):
            value = _over_default(fields[key], value)
        kwargs[key] = _coerce(hints[key], value, f"{prefix}{key}")
    return cls(**kwargs)


def _over_default(f: dataclasses.Field, value: dict[str, Any]) -> dict[str, Any]:
    """A section given in part keeps the recipe's own defaults for the rest (GRPO's default lr of
    1e-6 survives `optim.weight_decay=0.1`), not the section class's plain defaults."""
    if f.default_factory is dataclasses.MISSING:
        return value
    return deep_merge(dataclasses.asdict(f.default_factory()), value)


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`base` with `over` laid on top, recursively for nested mappings (copies, no aliasing)."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def _coerce(tp: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value if value is not None else {}, key + ".")
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise R1kitError(f"config key {key!r} is {value!r}; choose one of {list(choices)}")
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, key)
            except R1kitError as e:
                errors.append(str(e))
        raise R1kitError(errors[0] if errors else f"config key {key!r} has an invalid value {value!r}")
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise R1kitError(f"config key {key!r} must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise R1kitError(f"config key {key!r} must be an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise R1kitError(f"config key {key!r} must be a number, got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise R1kitError(f"config key {key!r} must be a string, got {value!r}")
    if origin is list:
        if not isinstance(value, list):
            raise R1kitError(f"config key {key!r} must be a list, got {value!r}")
        (inner,) = typing.get_args(tp) or (Any,)
        return [_coerce(inner, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise R1kitError(f"config key {key!r} must be a mapping, got {value!r}")
        return dict(value)
    return value


def to_dict(config: Any) -> dict[str, Any]:
    """The resolved config as plain data (for config.yaml in the run directory)."""
    return dataclasses.asdict(config)


def dump(config: Any, recipe: str | None = None) -> str:
    data = to_dict(config)
    if recipe:
        data = {"recipe": recipe, **data}
    return yaml.safe_dump(data, sort_keys=False)
