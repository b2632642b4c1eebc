"""[stages.NAME.trainer] and [stages.NAME.lora] extras, checked at spec validation
(torch-free, before anything trains), and the hints for Hugging Face names at the stage level."""

from __future__ import annotations

import pytest

from engine.spec import parse_spec
from engine.spec.library_fields import CONFIGS
from engine.spec.pass_through import KIND_CONFIGS, PPO_ACCELERATOR_KEYS, PPO_OPTIMIZER_KEYS, split_ppo_settings
from engine.spec.pipeline import stage_spec_from_dict

SFT = """
[stages.sft]
kind = "sft"
"""
PPO = """
[stages.ppo]
kind = "ppo"
from = "./policy"
reward_model = "./reward"
prompts = "./prompts.jsonl"
"""


@pytest.fixture(autouse=True)
def model_and_data_files(specs) -> None:
    """What the specs below name: model folders and data files (references must exist)."""
    for folder in ("model", "policy", "reward", "m", "r"):
        (specs.root / folder).mkdir()
    for name in ("prefs.jsonl", "prompts.jsonl", "p.jsonl"):
        (specs.root / name).write_text('{"prompt": "hi"}\n', encoding="utf-8")


def _problems(specs, text: str) -> list[str]:
    """The problem lines, with the spec file named as `pipeline.toml` (not its temporary folder)."""
    return [line.removeprefix(f"{specs.root}/") for line in specs.problems(text)]


def _problem(specs, text: str) -> str:
    problems = _problems(specs, text)
    assert len(problems) == 1, problems
    return problems[0]


def test_trainer_settings_are_kept_in_the_spec_and_its_stored_form(specs) -> None:
    spec = specs.load(SFT + """
[stages.sft.trainer]
optim = "adafactor"
neftune_noise_alpha = 5
torch_compile = false
dataloader_num_workers = 1
""")
    stage = spec.stages["sft"]
    assert stage.trainer == {"optim": "adafactor", "neftune_noise_alpha": 5, "torch_compile": False,
                             "dataloader_num_workers": 1}
    # The worker rebuilds the spec from the stored row: the table goes with it.
    assert stage_spec_from_dict(spec.to_dict()["sft"]).trainer == stage.trainer


def test_a_misspelt_key_is_named_with_the_nearest_setting(specs) -> None:
    assert _problem(specs, SFT + "[stages.sft.trainer]\noptimm = \"adafactor\"\n") == (
        "pipeline.toml: stage 'sft', field 'trainer.optimm': not a setting of trl's SFTConfig; "
        "did you mean 'optim'?"
    )


def test_every_bad_key_gets_its_own_line_in_file_order(specs) -> None:
    problems = _problems(specs, """
[stages.pre]
kind = "pretrain"
[stages.pre.trainer]
learning_rate = 0.01
save_steps = 10
output_dir = "/tmp/x"
report_to = "wandb"
torch_compile = "yes"
optim = "adamw_torch_fusd"
tf32 = true
""")
    assert problems == [
        "pipeline.toml: stage 'pre', field 'trainer.learning_rate': set `learning_rate` on the stage itself, "
        "not in its [trainer] table: the spec owns it",
        "pipeline.toml: stage 'pre', field 'trainer.save_steps': set `save_every` on the stage itself: "
        "it is this spec's name for save_steps",
        "pipeline.toml: stage 'pre', field 'trainer.output_dir': not settable here: the engine writes a stage's "
        "checkpoints into its own folder of the workspace",
        "pipeline.toml: stage 'pre', field 'trainer.report_to': set `report_to` on the stage itself, "
        "not in its [trainer] table: the spec owns it",
        "pipeline.toml: stage 'pre', field 'trainer.torch_compile': expected true or false, got the string 'yes'",
        f"pipeline.toml: stage 'pre', field 'trainer.optim': expected one of "
        f"{', '.join(CONFIGS['TrainingArguments']['optim'][1][:12])}, ...; got 'adamw_torch_fusd'; "
        "did you mean 'adamw_torch_fused'?",
    ]


@pytest.mark.parametrize(("key", "value", "expected"), [
    ("save_total_limit", "3", "set `keep_checkpoints` on the stage itself"),
    ("per_device_train_batch_size", "4", "set `batch_size` on the stage itself"),
    ("bf16", "true", "set `precision` on the stage itself"),
    ("max_length", "64", "set `max_length` on the stage itself"),
    ("hub_model_id", '"me/model"', "a stage does not publish while it trains"),
    ("eval_strategy", '"no"', "the engine counts logging, evaluation and checkpoints in steps"),
])
def test_keys_the_spec_or_the_engine_own_are_refused_saying_where_they_go(specs, key, value, expected) -> None:
    line = _problem(specs, SFT + f"[stages.sft.trainer]\n{key} = {value}\n")
    assert line.startswith(f"pipeline.toml: stage 'sft', field 'trainer.{key}': ")
    assert expected in line


def test_each_trl_stage_checks_against_its_own_config(specs) -> None:
    # center_rewards_coefficient is RewardConfig's: a DPO stage does not take it.
    specs.load("""
[stages.reward]
kind = "reward"
from = "./model"
preferences = "./prefs.jsonl"
[stages.reward.trainer]
center_rewards_coefficient = 0.01
""")
    line = _problem(specs, """
[stages.dpo]
kind = "dpo"
from = "./model"
preferences = "./prefs.jsonl"
[stages.dpo.trainer]
center_rewards_coefficient = 0.01
""")
    assert line.startswith("pipeline.toml: stage 'dpo', field 'trainer.center_rewards_coefficient': "
                           "not a setting of trl's DPOConfig")


def test_online_stages_keep_their_every_step_logging(specs) -> None:
    line = _problem(specs, """
[stages.grpo]
kind = "grpo"
from = "./policy"
judges = "demo"
prompts = "./prompts.jsonl"
[stages.grpo.trainer]
logging_steps = 10
""")
    assert "field 'trainer.logging_steps': not settable here: an online stage logs every step" in line


def test_ppo_takes_its_optimizer_and_accelerator_settings_and_refuses_the_rest(specs) -> None:
    spec = specs.load(PPO + "[stages.ppo.trainer]\nadam_beta2 = 0.95\nadam_epsilon = 1e-6\nfused = false\n")
    assert split_ppo_settings(spec.stages["ppo"].trainer) == ({"betas": (0.9, 0.95), "eps": 1e-6, "fused": False}, {})
    problems = _problems(specs, PPO + "[stages.ppo.trainer]\noptim = \"adafactor\"\nweight_decay = 0.1\n"
                                    "mixed_precision = \"bf16\"\nadam_beta3 = 0.9\n")
    assert problems == [
        "pipeline.toml: stage 'ppo', field 'trainer.optim': PPO is this project's own loop, not a Trainer: its "
        "[trainer] table takes only adam_beta1, adam_beta2, adam_epsilon, amsgrad, fused, foreach, dynamo_backend",
        "pipeline.toml: stage 'ppo', field 'trainer.weight_decay': set `weight_decay` on the stage itself, "
        "not in its [trainer] table: the spec owns it",
        "pipeline.toml: stage 'ppo', field 'trainer.mixed_precision': set `precision` on the stage itself: "
        "it is this spec's name for mixed_precision",
        "pipeline.toml: stage 'ppo', field 'trainer.adam_beta3': not a setting of the PPO stage's AdamW and "
        "Accelerator; did you mean 'adam_beta2'?",
    ]


def test_ppo_keys_exist_in_the_libraries_they_go_to() -> None:
    assert {"betas", "eps", "amsgrad", "fused", "foreach"} <= set(CONFIGS["AdamW"])
    assert set(PPO_OPTIMIZER_KEYS) - {"adam_beta1", "adam_beta2", "adam_epsilon"} <= set(CONFIGS["AdamW"])
    assert set(PPO_ACCELERATOR_KEYS) <= set(CONFIGS["Accelerator"])
    assert set(KIND_CONFIGS.values()) - {"PPO"} <= set(CONFIGS)


def test_a_stage_without_a_library_config_takes_no_trainer_table(specs) -> None:
    line = _problem(specs, """
[stages.s]
kind = "sample"
from = "./model"
prompts = "./prompts.jsonl"
[stages.s.trainer]
optim = "adafactor"
""")
    assert line == ("pipeline.toml: stage 's', field 'trainer.optim': a sample stage builds no library config: "
                    "it has no [trainer] settings")


def test_an_empty_trainer_table_is_fine(specs) -> None:
    assert specs.load(SFT + "[stages.sft.trainer]\n").stages["sft"].trainer == {}


# -- [lora] extras ----------------------------------------------------------------------


def test_dora_and_rslora_are_lora_extras_kept_for_the_stage(specs) -> None:
    spec = specs.load(SFT + "[stages.sft.lora]\nr = 8\nuse_dora = true\nuse_rslora = true\n"
                            'init_lora_weights = "gaussian"\n')
    lora = spec.stages["sft"].lora
    assert lora is not None and lora.r == 8
    assert lora.model_extra == {"use_dora": True, "use_rslora": True, "init_lora_weights": "gaussian"}
    assert stage_spec_from_dict(spec.to_dict()["sft"]).lora.model_extra == lora.model_extra


def test_bad_lora_extras_are_named_with_the_nearest_field(specs) -> None:
    problems = _problems(specs, SFT + "[stages.sft.lora]\nuse_dorra = true\nlora_alpha = 16\ntask_type = \"SEQ_CLS\"\n"
                                    'init_lora_weights = "gausian"\n')
    assert problems == [
        "pipeline.toml: stage 'sft', field 'lora.use_dorra': unknown field for a lora table; "
        "did you mean 'use_dora'?",
        "pipeline.toml: stage 'sft', field 'lora.lora_alpha': set `alpha` in the [lora] table itself: "
        "it is this spec's name for lora_alpha",
        "pipeline.toml: stage 'sft', field 'lora.task_type': not settable here: the stage sets it "
        "(CAUSAL_LM; SEQ_CLS for a reward model)",
        problems[3],
    ]
    assert problems[3].startswith("pipeline.toml: stage 'sft', field 'lora.init_lora_weights': expected one of ")
    assert problems[3].endswith("did you mean 'gaussian'?")


# -- Hugging Face names at the stage level ------------------------------------------------


@pytest.mark.parametrize(("key", "ours"), [
    ("save_steps", "save_every"),
    ("per_device_train_batch_size", "batch_size"),
    ("logging_steps", "log_every"),
    ("save_total_limit", "keep_checkpoints"),
    ("eval_steps", "eval_every"),
    ("lr_scheduler_type", "lr_scheduler"),
    ("gradient_checkpointing", "activation_checkpointing"),
])
def test_a_trainer_name_at_the_stage_level_is_told_ours(specs, key, ours) -> None:
    line = _problem(specs, SFT + f"{key} = 1\n")
    assert line == (f"pipeline.toml: stage 'sft', field '{key}': unknown field for a sft stage; "
                    f"`{key}` is the Trainer's name: this spec calls it `{ours}`")


def test_epochs_are_told_that_this_spec_counts_steps(specs) -> None:
    line = _problem(specs, SFT + "num_train_epochs = 3\n")
    assert line.endswith("unknown field for a sft stage; this spec counts training in optimizer steps: "
                         "`max_steps`")


def test_a_library_setting_at_the_stage_level_is_sent_to_the_trainer_table(specs) -> None:
    line = _problem(specs, SFT + 'optim = "adafactor"\n')
    assert line == ("pipeline.toml: stage 'sft', field 'optim': unknown field for a sft stage; `optim` is a "
                    "setting of trl's SFTConfig: put it in the stage's [trainer] table")


def test_other_unknown_keys_still_get_difflibs_guess(specs) -> None:
    assert _problem(specs, SFT + "max_stepz = 3\n").endswith("unknown field for a sft stage; did you mean 'max_steps'?")


def test_the_loader_is_what_spec_validation_uses(tmp_path) -> None:
    # parse_spec (what `rlhf validate` and the console's form call) checks the same way.
    from engine.errors import SpecError

    with pytest.raises(SpecError) as info:
        parse_spec(SFT + "[stages.sft.trainer]\noptimm = 1\n", source="form", base_dir=tmp_path)
    assert info.value.exit_code == 2
    assert info.value.problems[0].startswith("form: stage 'sft', field 'trainer.optimm': ")


def test_rlhf_run_refuses_a_bad_trainer_key_with_exit_2_and_records_nothing(tmp_path, capsys) -> None:
    from console import cli
    from store import reads

    spec = tmp_path / "pipeline.toml"
    spec.write_text(SFT + "[stages.sft.trainer]\noptimm = \"adafactor\"\n", encoding="utf-8")
    workspace = tmp_path / "ws"
    assert cli.main(["-w", str(workspace), "run", str(spec)]) == 2
    err = capsys.readouterr().err
    assert "stage 'sft', field 'trainer.optimm': not a setting of trl's SFTConfig; did you mean 'optim'?" in err
    assert len(err.strip().splitlines()) == 1
    db = workspace / "rlhf.db"
    assert not db.exists() or reads.list_runs(db) == []
