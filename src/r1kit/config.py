"""Typed configuration: dataclasses with a docstring per field, loaded from YAML, overridden as
`key=value` / `section.key=value` on the command line.

Every recipe has one config dataclass (defined next to the recipe) built from the shared sections
below. `load(path, overrides)` returns it; an unknown key or a value of the wrong type, outside
its choices or outside its range is an `R1kitError` that names the key and what is valid. A
numeric field declares its range with its type (`lr: PositiveFloat`, `top_p: Probability`), so
the check sits next to the field it guards; `check_ranges` applies it to a config built in
Python too (the run skeleton calls it before anything is made).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import importlib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml

from r1kit.errors import R1kitError
from r1kit.fields import NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, Probability, Range, check_ranges, coerce  # noqa: F401 (the fields' types, re-exported)


# Recipe name -> "module:ConfigClass". Imported lazily so `r1kit --help` stays fast.
RECIPES: dict[str, str] = {
    "pretrain": "r1kit.recipes.pretrain:PretrainConfig",
    "sft": "r1kit.recipes.sft:SFTConfig",
    "grpo": "r1kit.recipes.grpo:GRPOConfig",
    "ppo": "r1kit.recipes.ppo:PPOConfig",
    "rm": "r1kit.recipes.reward_model:RewardModelConfig",
    "prm": "r1kit.recipes.prm:PRMConfig",
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
    lora_r: NonNegativeInt = 0
    """LoRA rank (Hu et al. 2021) through PEFT; 0 trains every weight. With LoRA the GRPO
    reference is the base model with the adapters disabled (no second copy)."""
    lora_alpha: PositiveInt = 16
    """LoRA scaling numerator: the update is (lora_alpha / lora_r) * B A."""
    lora_dropout: Annotated[float, Range(ge=0, lt=1)] = 0.0
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

    task: str = "auto"
    """A built-in task (arithmetic, countdown, code) that generates rows. With `path` set the training
    rows come from the file, and a task you name scores the run on its test split when `test_path`
    is empty (right for rows sampled from that task). `auto`: arithmetic without `path`, none with
    it, so a run on your own file needs `test_path` (see `builtin_task`)."""
    task_params: dict[str, Any] = field(default_factory=dict)
    """Parameters of the built-in task, e.g. {n_operands: 2, digits: 1}."""
    path: str = ""
    """Training data: a .jsonl/.json/.parquet file, a `save_to_disk` directory, a local dataset
    folder laid out like a Hub repository, or a Hub id (`openai/gsm8k`), the last two read by
    `datasets.load_dataset` (a Hub id from the cache when offline)."""
    name: str = ""
    """The dataset's config (`load_dataset`'s `name`, e.g. `main` for openai/gsm8k); also used for
    `test_path` when that is a dataset by name. Empty = the dataset's only or default config."""
    split: str = "train"
    """Split of `path` to train on (a dataset by name or a saved DatasetDict), e.g. `train[:1000]`."""
    test_path: str = ""
    """Held-out data in the same forms as `path`; when empty, `test_split` of `path` when `path` is
    a dataset by name (a Hub id or a dataset folder), else the test split of `builtin_task` (an
    error when there is none: a run on a file with no test file)."""
    test_split: str = "test"
    """Split of `test_path` (or, when that is empty, of `path`) to evaluate on."""
    transform: str = ""
    """A row transform applied before `columns`: a built-in name (`gsm8k_r1`: GSM8K's question as
    `prompt`, its `#### n` as `answer`, its solution in R1 form as `cot`; see
    r1kit.data.transforms) or `package.module:function` taking and returning one row dict."""
    columns: dict[str, str] = field(default_factory=dict)
    """Column mapping {our_name: their_name}, e.g. {prompt: question, answer: solution}."""
    train_size: NonNegativeInt = 2000
    """Rows generated for training by a built-in task (or the cap on rows read from `path`; 0 = all)."""
    test_size: NonNegativeInt = 100
    """Rows of the test split used for evaluation."""
    seed: int = 0
    """Seed of the task generator (splits are disjoint whatever the seed)."""
    template: Literal["tiny", "r1zero", "chat", "plain"] = "tiny"
    """How a prompt is shown to the model: `tiny` (Q:/A: for char-level models), `r1zero` (the
    DeepSeek-R1-Zero template), `chat` (the tokenizer's chat template), `plain` (as is)."""
    system_prompt: str = ""
    """System message for the `chat` template, put first in every prompt (a row whose prompt is a
    message list with its own system message is an error while this is set)."""
    max_prompt_tokens: NonNegativeInt = 0
    """Longest prompt in tokens (GRPO, PPO); 0 = the model's context minus sampling.max_new_tokens."""
    long_prompts: Literal["skip", "truncate", "error"] = "skip"
    """Prompts over max_prompt_tokens (GRPO, PPO): `skip` them (counted as data/skipped_long_prompts),
    `truncate` them from the left (keeping the end, where the question is), or stop with an `error`."""

    @property
    def builtin_task(self) -> str:
        """The built-in task the run uses ('' for none): `task`, with `auto` resolved. An `auto` task
        with `path` set is none rather than arithmetic, so that a run on a user's file is never
        scored on the arithmetic test split unless the user asked for it."""
        if self.task == "auto":
            return "" if self.path else "arithmetic"
        return self.task


@dataclass
class SamplingArgs:
    """Rollout sampling of the RL recipes (R1 samples at temperature 1)."""

    temperature: PositiveFloat = 1.0
    """Sampling temperature; the learner's log-probs use the same one."""
    top_p: Annotated[float, Range(gt=0, le=1)] = 1.0
    """Nucleus sampling."""
    top_k: NonNegativeInt = 0
    """Top-k sampling (0 = off)."""
    max_new_tokens: PositiveInt = 64
    """Longest completion; longer ones are truncated (finish reason `length`)."""
    stop: list[str] = field(default_factory=list)
    """Stop strings, e.g. ["</answer>"]."""


@dataclass
class OptimArgs:
    """Optimiser and schedule."""

    lr: PositiveFloat = 1e-3
    """Peak learning rate of AdamW."""
    weight_decay: NonNegativeFloat = 0.0
    """AdamW weight decay."""
    betas: list[Annotated[float, Range(ge=0, lt=1)]] = field(default_factory=lambda: [0.9, 0.999])
    """AdamW betas."""
    warmup_steps: NonNegativeInt = 10
    """Linear warm-up steps."""
    schedule: Literal["cosine", "constant", "linear"] = "cosine"
    """Learning-rate schedule after warm-up."""
    min_lr_ratio: Probability = 0.1
    """Floor of the cosine/linear decay as a fraction of `lr`."""
    max_grad_norm: NonNegativeFloat = 1.0
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
    log_every: PositiveInt = 1
    """Log metrics every N steps."""
    eval_every: NonNegativeInt = 0
    """Evaluate on the test split every N steps (0 = only at the end)."""
    save_every: NonNegativeInt = 0
    """Save a checkpoint every N steps (0 = only at the end)."""
    keep_checkpoints: NonNegativeInt = 2
    """How many step checkpoints to keep (the final model is always kept)."""
    tensorboard: bool = True
    """Write TensorBoard events (RUN/tb/) when tensorboard is installed."""
    wandb: bool = False
    """Log to Weights & Biases too: every metrics.jsonl row at its step, and the resolved config
    (needs `pip install 'r1kit[wandb]'`; WANDB_MODE=offline keeps the W&B run in RUN/wandb/)."""
    wandb_project: str = ""
    """W&B project; empty = WANDB_PROJECT, else `r1kit`."""
    wandb_entity: str = ""
    """W&B entity (user or team); empty = WANDB_ENTITY, else the account's default."""
    wandb_name: str = ""
    """W&B run name; empty = WANDB_NAME, else the run directory's name."""
    threads: NonNegativeInt = 0
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
    rollout_processes: NonNegativeInt = 0
    """With run.accel=auto on CPU (Linux), how many processes may share a rollout's prompts
    (`r1kit/accel/workers.py`): 0 = automatic (one per torch thread for a model of at most 20M
    parameters), 1 = every rollout in the training process, k = at most k. More than 1 needs
    run.accel=auto."""
    parallel: Literal["auto", "ddp", "fsdp"] = "auto"
    """How torchrun's processes share the training (r1kit/train/fsdp.py). `ddp`: each holds the
    whole model, gradients averaged (DistributedDataParallel); `fsdp`: each holds 1/K of the
    trained weights, gradients and optimizer state (FSDP2 `fully_shard` per decoder layer, sharded
    checkpoints through torch.distributed.checkpoint), for pretrain, sft, grpo, ppo, dpo, rm and
    distill; needs torchrun with 2 or more processes. `auto` = ddp. One process ignores ddp."""
    resume: str = ""
    """`auto` to continue from the newest checkpoint of the run directory, or a checkpoint path."""
    progress: bool = True
    """Show a progress bar."""


@dataclass
class MCTSArgs:
    """Monte Carlo Tree Search over reasoning steps (r1kit/search/mcts.py), per test problem."""

    budget_tokens: PositiveInt = 256
    """Generated tokens the search of one problem may spend (expansions and rollouts); never exceeded."""
    simulations: PositiveInt = 64
    """Most simulations (select, expand, evaluate, backup) per problem."""
    k: PositiveInt = 2
    """Next steps sampled at each expansion; their probabilities are the priors. Each level of the
    tree costs k steps: on the demo's arithmetic, k=2 answered more problems within a budget than
    k=4 (benchmarks/mcts_vs_bestofn.py)."""
    c_puct: NonNegativeFloat = 1.0
    """Exploration weight of PUCT (Silver et al. 2017): Q + c_puct * P * sqrt(N) / (1 + N_child)."""
    widening: NonNegativeFloat = 0.5
    """Progressive widening (Coulom 2007): a node visited N times asks the policy for k more next
    steps until it has done so ceil(N ** widening) times; 0 expands each node once (AlphaZero).
    A sharp policy samples the same few steps, so without it a small tree can run out of new ones."""
    step_max_tokens: PositiveInt = 32
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

    k: NonNegativeInt = 4
    """The k of pass@k (Chen et al. 2021) reported besides 1, 2, 4, ... <= n; 0 = greedy only."""
    n: NonNegativeInt = 0
    """Samples per prompt (0 = k): pass@1 is their mean, pass@j for j = 1, 2, 4, ... <= n and k the
    unbiased estimate 1 - C(n - c, j) / C(n, j) from all n (c correct), maj@n their majority vote
    (R1 reports pass@1 over 64 samples and cons@64). n > k lowers the estimate's variance."""
    temperature: NonNegativeFloat = 1.0
    """Sampling temperature for the k samples (R1 evaluates at 0.6 with top-p 0.95)."""
    top_p: Annotated[float, Range(gt=0, le=1)] = 1.0
    """Nucleus sampling for the k samples."""
    max_new_tokens: PositiveInt = 64
    """Longest completion."""
    batch_size: PositiveInt = 64
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
    return check_ranges(from_dict(cls, raw))


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
    lay_under = getattr(cls, "preset_settings", None)
    if lay_under is not None:  # a preset (GRPO's `grpo.preset: dapo`) fills in what the user left out
        raw = deep_merge(lay_under(raw), raw)
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
        kwargs[key] = coerce(hints[key], value, f"{prefix}{key}", from_dict)
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


def to_dict(config: Any) -> dict[str, Any]:
    """The resolved config as plain data (for config.yaml in the run directory)."""
    return dataclasses.asdict(config)


def dump(config: Any, recipe: str | None = None) -> str:
    data = to_dict(config)
    if recipe:
        data = {"recipe": recipe, **data}
    return yaml.safe_dump(data, sort_keys=False)
