"""Pass-through tables: `[stages.NAME.trainer]` keys for the stage's library
config, `[stages.NAME.lora]` extras for peft's LoraConfig, checked at spec
validation, before anything trains.

A key passes when it is a field of the library config the stage builds (the
names come from library_fields.py, generated torch-free), is not one the spec
already owns (`learning_rate` is set on the stage itself: two places for one
setting would disagree), is not one the engine must control (`output_dir`,
`save_strategy`...: a reason is given), and its value has a type the field takes.
At run time the stage lays the table over the keywords it built
(engine/stages/common/setup.py `library_config`), so a key that passes here
wins over the engine's own defaults (`dataloader_num_workers`, say).

PPO is this project's own loop, not a Trainer: its table takes the optimizer's
and the Accelerator's settings that make sense there, and refuses the rest.

This module also gives the hints for a Hugging Face name written at the stage
level (`save_steps` -> `save_every`), which the pipeline loader consults before
its difflib guess. Torch-free: imported by the CLI and the console.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Mapping
from typing import Any

from engine.spec.library_fields import CONFIGS

#: stage kind -> the library config its [trainer] table fills (a name in library_fields.CONFIGS; PPO: ours)
KIND_CONFIGS: dict[str, str] = {
    "pretrain": "TrainingArguments",
    "sft": "SFTConfig",
    "reward": "RewardConfig",
    "dpo": "DPOConfig",
    "kto": "KTOConfig",
    "orpo": "ORPOConfig",
    "cpo": "CPOConfig",
    "grpo": "GRPOConfig",
    "rloo": "RLOOConfig",
    "online_dpo": "OnlineDPOConfig",
    "ppo": "PPO",
}

#: how messages name each config
LIBRARY_NAMES: dict[str, str] = {
    "TrainingArguments": "transformers' TrainingArguments",
    "SFTConfig": "trl's SFTConfig",
    "RewardConfig": "trl's RewardConfig",
    "DPOConfig": "trl's DPOConfig",
    "KTOConfig": "trl's KTOConfig",
    "ORPOConfig": "trl's ORPOConfig",
    "CPOConfig": "trl's CPOConfig",
    "GRPOConfig": "trl's GRPOConfig",
    "RLOOConfig": "trl's RLOOConfig",
    "OnlineDPOConfig": "trl's OnlineDPOConfig",
    "LoraConfig": "peft's LoraConfig",
    "PPO": "the PPO stage's AdamW and Accelerator",
}

# -- PPO: our own loop ------------------------------------------------------------
#: [trainer] key -> the torch.optim.AdamW keyword it sets (the Trainer's names, so a pasted table reads the same)
PPO_OPTIMIZER_KEYS: dict[str, str] = {
    "adam_beta1": "betas[0]",
    "adam_beta2": "betas[1]",
    "adam_epsilon": "eps",
    "amsgrad": "amsgrad",
    "fused": "fused",  # one kernel per step on CUDA (and CPU), instead of one per parameter
    "foreach": "foreach",
}
#: [trainer] keys given to PPO's Accelerator as they are
PPO_ACCELERATOR_KEYS: tuple[str, ...] = ("dynamo_backend",)
_PPO_TYPES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "adam_beta1": (("float", "int"), ()),
    "adam_beta2": (("float", "int"), ()),
    "adam_epsilon": (("float", "int"), ()),
}


def _ppo_fields() -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
    adamw, accelerator = CONFIGS["AdamW"], CONFIGS["Accelerator"]
    fields = dict(_PPO_TYPES)
    fields.update({key: adamw[key] for key in PPO_OPTIMIZER_KEYS if key in adamw})
    fields.update({key: accelerator[key] for key in PPO_ACCELERATOR_KEYS if key in accelerator})
    return fields


def split_ppo_settings(trainer: Mapping[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """A validated PPO [trainer] table as (AdamW keywords, Accelerator keywords)."""
    table = dict(trainer or {})
    optimizer: dict[str, Any] = {}
    if "adam_beta1" in table or "adam_beta2" in table:
        optimizer["betas"] = (float(table.pop("adam_beta1", 0.9)), float(table.pop("adam_beta2", 0.999)))
    if "adam_epsilon" in table:
        optimizer["eps"] = float(table.pop("adam_epsilon"))
    for key in ("amsgrad", "fused", "foreach"):
        if key in table:
            optimizer[key] = table.pop(key)
    accelerator = {key: table.pop(key) for key in PPO_ACCELERATOR_KEYS if key in table}
    if table:  # validation refuses anything else; a spec built past it is a bug
        raise ValueError(f"PPO takes no trainer setting {sorted(table)}")
    return optimizer, accelerator


# -- what the spec owns -------------------------------------------------------------
#: a library's name -> the stage fields that hold the same setting (the first the kind has is named)
HF_NAMES: dict[str, tuple[str, ...]] = {
    "per_device_train_batch_size": ("batch_size", "prompts_per_step", "rollout_batch_size"),
    "train_batch_size": ("batch_size", "prompts_per_step", "rollout_batch_size"),
    "mini_batch_size": ("minibatch_size",),
    "max_steps": ("max_steps", "updates"),
    "num_train_epochs": ("max_steps", "updates"),
    "total_episodes": ("max_steps", "updates"),
    "lr": ("learning_rate",),
    "lr_scheduler_type": ("lr_scheduler",),
    "warmup_ratio": ("warmup_steps",),
    "save_steps": ("save_every",),
    "save_total_limit": ("keep_checkpoints",),
    "logging_steps": ("log_every",),
    "eval_steps": ("eval_every",),
    "data_seed": ("seed",),
    "gradient_checkpointing": ("activation_checkpointing",),
    "bf16": ("precision",),
    "fp16": ("precision",),
    "bf16_full_eval": ("precision",),
    "fp16_full_eval": ("precision",),
    "mixed_precision": ("precision",),
    "use_cpu": ("device",),
    "cpu": ("device",),
    "no_cuda": ("device",),
    "max_completion_length": ("max_new_tokens",),
    "response_length": ("max_new_tokens",),
    "epsilon": ("clip_range",),
    "cliprange": ("clip_range",),
    "cliprange_value": ("clip_range_value",),
    "num_ppo_epochs": ("ppo_epochs",),
    "kl_coef": ("beta",),
    "loss_weights": ("sft_weight",),
    "dataset_text_field": ("text_field",),
    "model_name_or_path": ("from",),
    "lora_alpha": ("alpha",),
    "lora_dropout": ("dropout",),
}

#: where a library's name is no plain synonym of ours, what to say instead of "this spec calls it"
HF_NOTES: dict[str, str] = {
    "num_train_epochs": "this spec counts training in optimizer steps",
    "total_episodes": "this spec counts training in optimizer steps",
    "warmup_ratio": "this spec counts warm-up in steps",
}

_STAGE_REPORTS = "a stage reports to the store (and the console); the engine keeps the libraries quiet"
_STRATEGY = "the engine counts logging, evaluation and checkpoints in steps: set log_every, eval_every or save_every"
_RESUME = "a stage resumes with `rlhf resume RUN`, from its newest complete checkpoint"
_PUBLISH = "a stage does not publish while it trains: publish a finished checkpoint"
_SHARDING = "set `strategy` or `accelerate_config` on the stage: the launcher starts the processes from them"
_PREPARES_DATA = "the stage prepares its data itself"

#: settings the engine must control, whatever the kind, with why
ENGINE_OWNED: dict[str, str] = {
    "output_dir": "the engine writes a stage's checkpoints into its own folder of the workspace",
    "overwrite_output_dir": "the engine writes a stage's checkpoints into its own folder of the workspace",
    "logging_dir": "the engine writes a stage's logs into the store",
    "report_to": "set `report_to` on the stage itself: the engine sends the metrics it stores to those trackers",
    "log_with": "set `report_to` on the stage itself: the engine sends the metrics it stores to those trackers",
    "project_dir": "the engine writes a stage's files into its own folder of the workspace",
    "disable_tqdm": _STAGE_REPORTS,
    "log_level": _STAGE_REPORTS,
    "log_level_replica": _STAGE_REPORTS,
    "log_on_each_node": _STAGE_REPORTS,
    "log_completions": "it prints tables into the stage's log; the stage stores samples itself (samples_per_step)",
    "logging_strategy": _STRATEGY,
    "save_strategy": _STRATEGY,
    "eval_strategy": _STRATEGY,
    "evaluation_strategy": _STRATEGY,
    "save_only_model": "a checkpoint must hold the optimizer state to resume from",
    "save_on_each_node": "the engine writes each checkpoint once, on the main machine",
    "enable_jit_checkpoint": "the engine writes checkpoints itself (at save_every, and when a stage is cancelled)",
    "resume_from_checkpoint": _RESUME,
    "ignore_data_skip": _RESUME,
    "restore_callback_states_from_checkpoint": _RESUME,
    "push_to_hub": _PUBLISH,
    "load_best_model_at_end": "a stage keeps its final weights, and the engine its newest checkpoints",
    "metric_for_best_model": "a stage keeps its final weights, and the engine its newest checkpoints",
    "greater_is_better": "a stage keeps its final weights, and the engine its newest checkpoints",
    "do_train": "the Trainer ignores it: the stage decides what runs",
    "do_eval": "the Trainer ignores it: the stage decides what runs",
    "do_predict": "the Trainer ignores it: the stage decides what runs",
    "local_rank": "the launcher sets each process's rank",
    "deepspeed": _SHARDING,
    "fsdp": _SHARDING,
    "fsdp_config": _SHARDING,
    "accelerator_config": _SHARDING,
    "parallelism_config": _SHARDING,
    "auto_find_batch_size": "it would change batch_size behind the spec's back: set batch_size",
    "remove_unused_columns": _PREPARES_DATA,
    "assistant_only_loss": "the stage decides it from the data and completion_only_loss",
    "model_init_kwargs": "the stage loads the model itself (set precision, quantization, device on the stage)",
    # LoraConfig's: the stage decides what it adapts and for which head.
    "task_type": "the stage sets it (CAUSAL_LM; SEQ_CLS for a reward model)",
    "peft_type": "a [lora] table makes LoRA adapters",
    "base_model_name_or_path": "the stage names the model it adapts (`from`)",
    "revision": "the stage names the model it adapts (`from`)",
    "inference_mode": "the stage trains the adapters",
}
_ENGINE_OWNED_PREFIXES = {"hub_": _PUBLISH}

_EVERY_STEP = "an online stage logs every step, so that its figures line up with PPO's updates"
#: settings the engine fixes for one kind only
KIND_OWNED: dict[str, dict[str, str]] = {
    kind: {"logging_steps": _EVERY_STEP, "logging_first_step": _EVERY_STEP,
           "eval_steps": "an online stage has no held-out loss: its eval prompts are answered every sample_every steps"}
    for kind in ("grpo", "rloo", "online_dpo")
}


def engine_reason(key: str) -> str | None:
    """Why the engine keeps `key` to itself, or None."""
    if key in ENGINE_OWNED:
        return ENGINE_OWNED[key]
    return next((why for prefix, why in _ENGINE_OWNED_PREFIXES.items() if key.startswith(prefix)), None)


def spec_field_for(key: str, spec_fields: Collection[str]) -> str | None:
    """The stage field that holds what library setting `key` sets, if the kind has one."""
    if key in spec_fields:
        return key
    return next((f for f in HF_NAMES.get(key, ()) if f in spec_fields), None)


# -- checking a table -----------------------------------------------------------------


def check_trainer(kind: str, table: Mapping[str, Any], spec_fields: Collection[str]) -> list[tuple[str, str]]:
    """(key, problem) for each key of a [trainer] table a `kind` stage refuses; [] when all pass.
    `spec_fields`: the TOML keys of the kind's own fields (they own their settings)."""
    config = KIND_CONFIGS.get(kind)
    if config is None:
        return [(key, f"a {kind} stage builds no library config: it has no [trainer] settings") for key in table]
    fields = _ppo_fields() if config == "PPO" else CONFIGS[config]
    return [(key, problem) for key, value in table.items()
            if (problem := _check_key(key, value, config, fields, spec_fields, table="trainer", kind=kind))
            is not None]


def check_lora_extras(table: Mapping[str, Any], lora_fields: Collection[str]) -> list[tuple[str, str]]:
    """(key, problem) for each extra key of a [lora] table (beyond r, alpha, dropout, target_modules)."""
    return [(key, problem) for key, value in table.items()
            if (problem := _check_key(key, value, "LoraConfig", CONFIGS["LoraConfig"], lora_fields,
                                      table="lora")) is not None]


def _check_key(key: str, value: Any, config: str, fields: Mapping[str, tuple[tuple[str, ...], tuple[str, ...]]],
               spec_fields: Collection[str], *, table: str, kind: str = "") -> str | None:
    problem = _check_name(key, config, fields, spec_fields, table=table, kind=kind)
    if problem is not None:
        return problem
    kinds, choices = fields[key]
    return _check_value(value, kinds, choices)


def _check_name(key: str, config: str, fields: Mapping[str, tuple[tuple[str, ...], tuple[str, ...]]],
                spec_fields: Collection[str], *, table: str, kind: str = "") -> str | None:
    """Why `key` cannot be set in the table, or None when it is a field it may set."""
    ours = spec_field_for(key, spec_fields)
    if ours is not None:
        where = "on the stage itself" if table == "trainer" else "in the [lora] table itself"
        if ours == key:
            return f"set `{key}` {where}, not in its [{table}] table: the spec owns it"
        why = HF_NOTES.get(key) or f"it is this spec's name for {key}"
        return f"set `{ours}` {where}: {why}"
    known_elsewhere = table == "trainer" and any(key in CONFIGS[c] for c in ("TrainingArguments", "Accelerator"))
    reason = engine_reason(key)
    if reason is not None and (key in fields or known_elsewhere):
        return f"not settable here: {reason}"
    if key in KIND_OWNED.get(kind, {}):
        return f"not settable here: {KIND_OWNED[kind][key]}"
    if key not in fields:
        if config == "PPO" and (known_elsewhere or key in CONFIGS["AdamW"]):
            return (f"PPO is this project's own loop, not a Trainer: its [trainer] table takes only "
                    f"{', '.join(fields)}")
        if table == "lora":  # the nearest of what the table takes: its own fields, then LoraConfig's others
            takes = [*spec_fields, *(f for f in fields
                                     if _check_name(f, config, fields, spec_fields, table=table) is None)]
            return f"unknown field for a lora table{did_you_mean(key, takes)}"
        return f"not a setting of {LIBRARY_NAMES[config]}{did_you_mean(key, fields)}"
    return None


def _check_value(value: Any, kinds: tuple[str, ...], choices: tuple[str, ...]) -> str | None:
    if "any" in kinds:
        return None
    kind = _toml_kind(value)
    if kind not in kinds:
        return f"expected {_words(kinds)}, got {_describe(value)}"
    # (choice.lower(): the Accelerator upper-cases what it is given, dynamo_backend = "inductor" included)
    if kind == "str" and choices and not any(_matches(value, choice) for choice in choices):
        shown = ", ".join(choices) if len(choices) <= 12 else ", ".join(choices[:12]) + ", ..."
        return f"expected one of {shown}; got {value!r}{did_you_mean(value, choices)}"
    return None


def _matches(value: str, choice: str) -> bool:
    # peft writes a family of values as one: "pissa_niter_[number of iters]" takes pissa_niter_16.
    if "[" in choice:
        prefix = choice[: choice.index("[")]
        return value.startswith(prefix) and len(value) > len(prefix)
    return value in (choice, choice.lower())


def did_you_mean(word: str, choices: Collection[str]) -> str:
    matches = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {matches[0]!r}?" if matches else ""


def _toml_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, dict):
        return "table"
    return type(value).__name__


_KIND_WORDS = {"bool": "true or false", "int": "an integer", "float": "a number", "str": "a string",
               "array": "an array", "table": "a table"}


def _words(kinds: tuple[str, ...]) -> str:
    shown = [_KIND_WORDS[k] for k in kinds if k in _KIND_WORDS and not (k == "int" and "float" in kinds)]
    return " or ".join(shown) if shown else "another type"


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return f"the boolean {'true' if value else 'false'}"
    kind = _toml_kind(value)
    if kind in ("int", "float"):
        return f"the number {value!r}"
    if kind == "str":
        return f"the string {value!r}"
    return {"array": "an array", "table": "a table"}.get(kind, f"a {kind}")


# -- hints at the stage level -------------------------------------------------------------


def stage_level_hint(kind: str, key: str, spec_fields: Collection[str]) -> str | None:
    """For an unknown key of a [stages.NAME] table that is a library's name: what to write
    instead (`; here it is save_every`), or None when it is no library's name we know."""
    ours = spec_field_for(key, spec_fields)
    if ours is not None and ours != key:
        if key in HF_NOTES:
            return f"; {HF_NOTES[key]}: `{ours}`"
        return f"; `{key}` is the Trainer's name: this spec calls it `{ours}`"
    config = KIND_CONFIGS.get(kind)
    if config is None:
        return None
    fields = _ppo_fields() if config == "PPO" else CONFIGS[config]
    if key in fields and _check_name(key, config, fields, spec_fields, table="trainer", kind=kind) is None:
        return f"; `{key}` is a setting of {LIBRARY_NAMES[config]}: put it in the stage's [trainer] table"
    reason = engine_reason(key) or KIND_OWNED.get(kind, {}).get(key)
    if reason is not None and (key in fields or key in CONFIGS["TrainingArguments"]):
        return f"; `{key}` is a library setting the engine controls: {reason}"
    return None
