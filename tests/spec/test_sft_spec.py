"""The sft stage's spec: defaults, the nested [stages.NAME.lora] table, and
one-line rejections that name nested fields by their path (`lora.r`)."""

from __future__ import annotations

import json

from engine.spec import stage_spec_from_dict
from engine.spec.fields import LoraSpec
from engine.stages.sft.spec import SFTSpec


def test_defaults_train_the_demo_but_evaluate_on_held_out_data_without_a_judge(specs) -> None:
    spec = specs.load('[stages.sft]\nkind = "sft"\n')
    stage = spec.stages["sft"]
    assert isinstance(stage, SFTSpec)
    assert stage.data == "builtin:demo-instructions"
    # Eval answers are to prompts held out of the stage's own data, and no judge scores them unless named.
    assert stage.eval_prompts is None and stage.eval_judge is None
    assert stage.from_ == "builtin:llama-4m"
    assert stage.lora is None and stage.quantization == "none"
    assert stage.completion_only_loss and stage.format == "auto"
    assert stage.sample_temperature == 0.0  # greedy answers to the eval prompts


def test_every_field_has_a_description() -> None:
    for model in (SFTSpec, LoraSpec):
        missing = [name for name, f in model.model_fields.items() if name != "kind" and not f.description]
        assert not missing, (model.__name__, missing)


def test_a_pipeline_with_lora_from_a_pretrain_stage(specs) -> None:
    prompts = specs.root / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": "What is 1 + 1?"}) + "\n")
    spec = specs.load(
        """
        [stages.sft]
        kind = "sft"
        from = "pretrain"
        eval_prompts = "prompts.jsonl"
        learning_rate = 2e-3
        [stages.sft.lora]
        r = 8
        target_modules = ["q_proj", "v_proj"]
        [stages.pretrain]
        kind = "pretrain"
        """
    )
    assert list(spec.stages) == ["pretrain", "sft"]  # dependencies first
    stage = spec.stages["sft"]
    assert stage.from_ == "stage:pretrain"
    assert stage.eval_prompts == f"path:{prompts}"
    assert stage.lora == LoraSpec(r=8, target_modules=["q_proj", "v_proj"])
    assert stage.lora.alpha == 32 and stage.lora.dropout == 0.0
    assert spec.parents == {"pretrain": None, "sft": "pretrain"}
    # What the run row stores rebuilds the same spec in a worker.
    assert stage_spec_from_dict(json.loads(json.dumps(spec.to_dict()["sft"]))) == stage


def test_an_empty_lora_table_takes_the_defaults(specs) -> None:
    spec = specs.load('[stages.sft]\nkind = "sft"\nfrom = "org/base"\ndata = "org/data"\nquantization = "4bit"\n'
                      '[stages.sft.lora]\n')
    assert spec.stages["sft"].lora == LoraSpec()
    assert spec.stages["sft"].lora.target_modules == "all-linear"


def test_nested_fields_are_named_by_their_path(specs) -> None:
    path = specs.write(
        """
        [stages.sft]
        kind = "sft"
        formt = "alpaca"
        format = "alpacca"
        [stages.sft.lora]
        r = 0
        dropuot = 0.1
        dropout = 1.5
        alpha = 1.5
        target_modules = []
        """
    )
    problems = specs.problems(path.read_text())
    where = f"{path}: stage 'sft', field"
    assert problems == [
        f"{where} 'formt': unknown field for a sft stage; did you mean 'format'?",
        f"{where} 'format': expected 'auto', 'prompt_completion', 'messages', 'alpaca' or 'text', "
        "got the string 'alpacca'; did you mean 'alpaca'?",
        f"{where} 'lora.r': must be at least 1, got 0",
        f"{where} 'lora.alpha': expected an integer, got the number 1.5",
        f"{where} 'lora.dropout': must be less than 1, got 1.5",
        f"{where} 'lora.target_modules': expected \"all-linear\" or a non-empty array of module names "
        "such as [\"q_proj\", \"v_proj\"], got an array",
        f"{where} 'lora.dropuot': unknown field for a lora table; did you mean 'dropout'?",
    ]


def test_lora_must_be_a_table(specs) -> None:
    line = specs.problem('[stages.sft]\nkind = "sft"\nlora = true\n')
    assert line.endswith("stage 'sft', field 'lora': expected a table ([stages.NAME.lora]), got the boolean true")


def test_quantization_needs_lora(specs) -> None:
    line = specs.problem('[stages.sft]\nkind = "sft"\nquantization = "4bit"\n')
    assert line.endswith(
        "stage 'sft', field 'quantization': quantization (QLoRA) trains adapters on a frozen quantized "
        "model: add a [stages.NAME.lora] table, got the string '4bit'"
    )


def test_eval_prompts_is_a_checked_reference(specs) -> None:
    line = specs.problem('[stages.sft]\nkind = "sft"\neval_prompts = "builtin:llama-1m"\n')
    assert "field 'eval_prompts': builtin:llama-1m is a model" in line
    line = specs.problem('[stages.sft]\nkind = "sft"\neval_prompts = "./missing.jsonl"\n')
    assert "field 'eval_prompts': no such file or folder" in line


def test_bounds(specs) -> None:
    for setting, message in [
        ("eval_prompt_count = -1", "field 'eval_prompt_count': must be at least 0, got -1"),
        ("sample_every = 0", "field 'sample_every': must be at least 1, got 0"),
        ("max_length = 4", "field 'max_length': must be at least 8, got 4"),
        ("eval_fraction = 1.0", "field 'eval_fraction': must be less than 1, got 1"),
    ]:
        assert specs.problem(f'[stages.sft]\nkind = "sft"\n{setting}\n').endswith(message)

