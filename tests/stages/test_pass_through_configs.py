"""A [trainer] table and [lora] extras reach the library objects the stages build
(no model is trained: the configs are built as the stages build them)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import TrainingArguments
from trl import DPOConfig, GRPOConfig, RewardConfig, RLOOConfig, SFTConfig

from engine.spec import parse_spec
from engine.spec.fields import LoraSpec
from engine.spec.pass_through import split_ppo_settings
from engine.stages.common import setup as runtime
from engine.stages.ppo.stage import build_optimizer

CPU = runtime.choose_runtime("cpu", "fp32")


@pytest.fixture(autouse=True)
def model_and_data_files(tmp_path: Path) -> None:
    """What the specs below name (references must exist): model folders and a data file."""
    for folder in ("m", "r"):
        (tmp_path / folder).mkdir()
    (tmp_path / "p.jsonl").write_text('{"prompt": "hi"}\n', encoding="utf-8")


def _stage(text: str, tmp_path: Path):
    return next(iter(parse_spec(text, source="pipeline.toml", base_dir=tmp_path).stages.values()))


#: each kind, its config class (as its stage.py builds it), and a setting only the [trainer] table can give
KINDS = [
    ("pretrain", TrainingArguments, "", "optim", "adafactor"),
    ("sft", SFTConfig, "", "neftune_noise_alpha", 5.0),
    ("reward", RewardConfig, 'from = "./m"\npreferences = "./p.jsonl"\n', "center_rewards_coefficient", 0.01),
    ("dpo", DPOConfig, 'from = "./m"\npreferences = "./p.jsonl"\n', "discopop_tau", 0.1),
    ("grpo", GRPOConfig, 'from = "./m"\njudges = "demo"\nprompts = "./p.jsonl"\n', "num_iterations", 2),
    ("rloo", RLOOConfig, 'from = "./m"\njudges = "demo"\nprompts = "./p.jsonl"\n', "mask_truncated_completions",
     True),
]


@pytest.mark.parametrize(("kind", "config_class", "fields", "key", "value"), KINDS, ids=[k[0] for k in KINDS])
def test_a_trainer_key_changes_the_config_the_stage_builds(kind, config_class, fields, key, value, tmp_path) -> None:
    toml_value = str(value).lower() if isinstance(value, bool) else repr(value)
    spec = _stage(f'[stages.s]\nkind = "{kind}"\n{fields}[stages.s.trainer]\n{key} = {toml_value}\n'
                  "dataloader_num_workers = 1\n", tmp_path)
    plain = _stage(f'[stages.s]\nkind = "{kind}"\n{fields}', tmp_path)

    args = runtime.library_config(config_class, spec, **runtime.training_kwargs(spec, CPU, tmp_path))
    default = runtime.library_config(config_class, plain, **runtime.training_kwargs(plain, CPU, tmp_path))
    assert getattr(args, key) == value != getattr(default, key)
    # A key the engine also sets, but leaves to people, is overridden by the table.
    assert (args.dataloader_num_workers, default.dataloader_num_workers) == (1, 0)
    # The spec's own settings are still the spec's.
    assert args.max_steps == spec.max_steps and args.output_dir == str(tmp_path)


def test_dora_and_rslora_reach_loraconfig(tmp_path) -> None:
    spec = _stage('[stages.s]\nkind = "sft"\n[stages.s.lora]\nr = 4\nuse_dora = true\nuse_rslora = true\n', tmp_path)
    config = runtime.lora_config(spec.lora, "CAUSAL_LM")
    assert (config.r, config.use_dora, config.use_rslora, config.task_type) == (4, True, True, "CAUSAL_LM")
    plain = runtime.lora_config(LoraSpec(), "SEQ_CLS")
    assert (plain.use_dora, plain.use_rslora, plain.lora_alpha) == (False, False, 32)


def test_ppo_trainer_table_sets_adamw_and_leaves_the_rest_to_the_spec(tmp_path) -> None:
    spec = _stage('[stages.p]\nkind = "ppo"\nfrom = "./m"\nreward_model = "./r"\nprompts = "./p.jsonl"\n'
                  "weight_decay = 0.01\n"
                  "[stages.p.trainer]\nadam_beta1 = 0.8\nadam_beta2 = 0.95\nadam_epsilon = 1e-6\n"
                  'dynamo_backend = "no"\n', tmp_path)
    optimizer_settings, accelerator_settings = split_ppo_settings(spec.trainer)
    assert accelerator_settings == {"dynamo_backend": "no"}
    optimizer = build_optimizer(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1), spec, optimizer_settings)
    group = optimizer.param_groups[0]
    assert (group["betas"], group["eps"], group["weight_decay"], group["lr"]) == ((0.8, 0.95), 1e-6, 0.01,
                                                                                 spec.learning_rate)
    default = build_optimizer(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1), spec, {})
    assert default.param_groups[0]["betas"] == (0.9, 0.999)


@pytest.mark.slow  # builds a real SFT trainer on builtin:llama-1m (tokenizer, demo data, LoRA): 26 s measured here
def test_the_sft_stage_builds_its_trainer_with_the_table_and_the_lora_extras(make_context) -> None:
    from engine.stages.sft import stage as sft
    from engine.stages.sft.spec import SFTSpec

    spec = SFTSpec(from_="builtin:llama-1m", data="builtin:demo-instructions",
                   max_steps=2, batch_size=4, eval_prompt_count=0,
                   lora=LoraSpec(r=4, use_dora=True), trainer={"optim": "adafactor", "neftune_noise_alpha": 5.0})
    trainer, _ = sft.build_trainer(make_context(spec), runtime.choose_runtime("cpu"))
    assert (trainer.args.optim, trainer.args.neftune_noise_alpha) == ("adafactor", 5.0)
    assert trainer.model.peft_config["default"].use_dora
