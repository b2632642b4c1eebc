"""Memory that fits one GPU: QLoRA bases and quantized frozen models in every
training stage, and activation checkpointing without dropout.

This machine has no CUDA GPU and no bitsandbytes, so what is tested here is
everything short of loading 4-bit weights: the specs (quantization needs a
LoRA table and pretrained weights), the one-line refusal each stage gives
when it starts (in process, and once through the engine's worker), the
BitsAndBytesConfig each setting builds and the arguments the loaders pass
to transformers, moving trained adapters onto a full-precision base, and
the dropout and checkpointing helpers PPO's training mode relies on.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForSequenceClassification, LlamaConfig, LlamaForCausalLM

from engine.errors import SpecError, StageFailed
from engine.runtime.launcher import child_env, worker_command
from engine.spec import parse_spec
from engine.spec.fields import LoraSpec, StageSpec
from engine.stages.common import online_rl, quantized
from engine.stages.common.context import Source
from engine.stages.common.models import enable_activation_checkpointing, without_dropout
from engine.stages.common.saving import save_final
from engine.stages.common.setup import Runtime
from engine.stages.dpo import stage as dpo
from engine.stages.dpo.spec import DPOSpec
from engine.stages.grpo import stage as grpo
from engine.stages.grpo.spec import GRPOSpec
from engine.stages.ppo import stage as ppo
from engine.stages.ppo.spec import PPOSpec
from engine.stages.reward import stage as reward
from engine.stages.reward.spec import RewardSpec
from engine.stages.rloo import stage as rloo
from engine.stages.rloo.spec import RLOOSpec
from engine.stages.sft import stage as sft
from engine.stages.sft.spec import SFTSpec
from store import NewStage, StageStatus
from tests.tiny_models import save_tiny_model, tiny_tokenizer

BF16_GPU = Runtime(device="cuda", bf16=True, fp16=False, world_size=1)
CPU = Runtime(device="cpu", bf16=False, fp16=False, world_size=1)
HAS_BITSANDBYTES = importlib.util.find_spec("bitsandbytes") is not None

# -- the specs -------------------------------------------------------------------------

#: every kind that offers quantization, as a table after `[stages.sft]` (from org/base, data org/data)
KIND_TABLES = {
    "sft": 'kind = "sft"\nfrom = "org/base"\ndata = "org/data"\n',
    "reward": 'kind = "reward"\nfrom = "sft"\nbatches = ["b"]\n',
    "dpo": 'kind = "dpo"\nfrom = "sft"\nbatches = ["b"]\n',
    "ppo": 'kind = "ppo"\nfrom = "sft"\nreward_model = "org/rm"\nprompts = "org/prompts"\n',
    "rloo": 'kind = "rloo"\nfrom = "sft"\njudges = "demo"\nprompts = "org/prompts"\n',
    "grpo": 'kind = "grpo"\nfrom = "sft"\nreward_model = "org/rm"\nprompts = "org/prompts"\n',
}


def parse(table: str, tmp_path: Path) -> dict[str, StageSpec]:
    text = f'[stages.sft]\nkind = "sft"\nfrom = "org/base"\ndata = "org/data"\n\n[stages.it]\n{table}'
    return parse_spec(text, source="p.toml", base_dir=tmp_path).stages


def problems(table: str, tmp_path: Path) -> list[str]:
    with pytest.raises(SpecError) as info:
        parse(table, tmp_path)
    assert info.value.exit_code == 2
    return info.value.problems


@pytest.mark.parametrize("kind", list(KIND_TABLES))
def test_quantization_needs_a_lora_table_and_is_accepted_with_one(kind: str, tmp_path: Path) -> None:
    assert problems(KIND_TABLES[kind] + 'quantization = "4bit"\n', tmp_path) == [
        "p.toml: stage 'it', field 'quantization': quantization (QLoRA) trains adapters on a frozen quantized "
        "model: add a [stages.NAME.lora] table, got the string '4bit'"
    ]
    for bits in ("4bit", "8bit"):
        stage = parse(KIND_TABLES[kind] + f'quantization = "{bits}"\n[stages.it.lora]\nr = 8\n', tmp_path)["it"]
        assert stage.quantization == bits and stage.lora == LoraSpec(r=8)  # type: ignore[attr-defined]
    assert parse(KIND_TABLES[kind], tmp_path)["it"].quantization == "none"  # type: ignore[attr-defined]


def test_quantization_of_a_preset_is_refused_naming_the_field(tmp_path: Path) -> None:
    # A preset is a random init: nothing worth quantizing, and nothing to merge the adapters back into.
    [line] = problems('kind = "sft"\nfrom = "builtin:llama-1m"\nquantization = "8bit"\n[stages.it.lora]\n', tmp_path)
    assert line == (
        "p.toml: stage 'it', field 'quantization': quantization needs pretrained weights to quantize, and "
        "builtin:llama-1m is a random init: name a stage, a folder or a hub id in `from`, got the string '8bit'"
    )


@pytest.mark.parametrize("kind", ["ppo", "rloo", "grpo"])
def test_the_frozen_models_quantize_with_or_without_lora(kind: str, tmp_path: Path) -> None:
    stage = parse(KIND_TABLES[kind] + 'frozen_quantization = "4bit"\n', tmp_path)["it"]
    assert stage.frozen_quantization == "4bit" and stage.lora is None  # type: ignore[attr-defined]
    [line] = problems(KIND_TABLES[kind] + 'frozen_quantization = "2bit"\n', tmp_path)
    assert line.startswith("p.toml: stage 'it', field 'frozen_quantization': ")


def test_dpo_and_sft_have_no_frozen_models_to_quantize(tmp_path: Path) -> None:
    for kind in ("sft", "dpo"):
        [line] = problems(KIND_TABLES[kind] + 'frozen_quantization = "4bit"\n', tmp_path)
        assert "field 'frozen_quantization'" in line


# -- the refusal when a stage starts -------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("quantization") / "model")


def stage_spec(kind: str, folder: Path, **settings: Any) -> tuple[Any, StageSpec]:
    """A `kind` stage's module, and a spec of it on `folder` (with data that is
    never read: the refusal comes first)."""
    model, data = f"path:{folder}", f"path:{folder / 'config.json'}"
    specs = {
        "sft": lambda: (sft, SFTSpec(from_=model, data=data, **settings)),
        "reward": lambda: (reward, RewardSpec(from_=model, batches=["b"], **settings)),
        "dpo": lambda: (dpo, DPOSpec(from_=model, batches=["b"], **settings)),
        "ppo": lambda: (ppo, PPOSpec(from_=model, reward_model=model, prompts=data, **settings)),
        "rloo": lambda: (rloo, RLOOSpec(from_=model, judges=["demo"], prompts=data, **settings)),
        "grpo": lambda: (grpo, GRPOSpec(from_=model, reward_model=model, prompts=data, **settings)),
    }
    return specs[kind]()


def missing_here(device: str) -> str:
    where = "(device = 'cpu')" if device == "cpu" else "(no CUDA GPU is visible)"
    bnb = "" if HAS_BITSANDBYTES else " and the bitsandbytes package is not installed (pip install bitsandbytes)"
    return f"this stage runs on the CPU {where}{bnb}"


@pytest.mark.parametrize("kind", ["sft", "reward", "dpo", "ppo", "rloo", "grpo"])
@pytest.mark.parametrize("device", ["cpu", "auto"])
def test_qlora_stops_with_one_line_saying_what_this_machine_lacks(kind: str, device: str, tiny_folder: Path,
                                                                  make_context) -> None:
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is visible")
    module, spec = stage_spec(kind, tiny_folder, quantization="4bit", lora=LoraSpec(), device=device)
    with pytest.raises(StageFailed) as info:
        module.run(make_context(spec))
    assert str(info.value) == (
        f"quantization = '4bit' (QLoRA) needs a CUDA GPU and bitsandbytes, but {missing_here(device)}; "
        "set quantization = 'none' to train LoRA adapters on the unquantized model"
    )


@pytest.mark.parametrize("kind", ["ppo", "rloo", "grpo"])
def test_quantized_frozen_models_stop_with_one_line_too(kind: str, tiny_folder: Path, make_context) -> None:
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is visible")
    module, spec = stage_spec(kind, tiny_folder, frozen_quantization="8bit", device="cpu")
    with pytest.raises(StageFailed) as info:
        module.run(make_context(spec))
    assert str(info.value) == (
        f"frozen_quantization = '8bit' needs a CUDA GPU and bitsandbytes, but {missing_here('cpu')}; "
        "set frozen_quantization = 'none' to hold the frozen models in the compute precision instead"
    )


@pytest.mark.slow  # a worker process imports torch, transformers and trl: ~10 s
def test_the_worker_records_the_refusal_as_the_stage_error(tiny_folder: Path, workspace) -> None:
    """Through the engine's worker, as `rlhf run` starts a stage: the stage
    fails with the one line as its error, and no traceback."""
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is visible")
    _, spec = stage_spec("dpo", tiny_folder, quantization="4bit", lora=LoraSpec(), device="cpu")
    run = workspace.store.create_run(
        name="qlora", spec_text="", spec={"stages": {"dpo": spec.model_dump(by_alias=True, mode="json")}},
        spec_path=None, stages=[NewStage(name="dpo", kind="dpo", position=0, parent=None, config={})])
    stage_id = workspace.store.list_stages(run_id=run.id)[0].id
    command = worker_command(workspace_root=workspace.root, stage_id=stage_id, device_kind="cpu", resume_from=None)
    env = child_env({"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"})
    done = subprocess.run(command, env=env, timeout=300, capture_output=True, text=True,
                          cwd=Path(__file__).parents[2])
    assert done.returncode == 1, done.stderr
    stage = workspace.store.get_stage(stage_id=stage_id)
    assert stage.status == StageStatus.FAILED
    assert stage.error == (
        f"quantization = '4bit' (QLoRA) needs a CUDA GPU and bitsandbytes, but {missing_here('cpu')}; "
        "set quantization = 'none' to train LoRA adapters on the unquantized model"
    )
    assert "Traceback" not in done.stderr


# -- what the loaders ask transformers for ---------------------------------------------------


def test_4bit_is_qloras_nf4_with_double_quantization_computing_in_bf16() -> None:
    config = quantized.bnb_config("4bit", torch.bfloat16)
    assert config.load_in_4bit and not config.load_in_8bit
    assert config.bnb_4bit_quant_type == "nf4"
    assert config.bnb_4bit_use_double_quant is True
    assert config.bnb_4bit_compute_dtype == torch.bfloat16
    assert quantized.bnb_config("4bit", torch.float16).bnb_4bit_compute_dtype == torch.float16


def test_8bit_is_llm_int8() -> None:
    config = quantized.bnb_config("8bit", torch.bfloat16)
    assert config.load_in_8bit and not config.load_in_4bit
    with pytest.raises(ValueError, match="not a quantization"):
        quantized.bnb_config("none", torch.bfloat16)


class Recorded(Exception):
    """Raised by a stand-in for from_pretrained, carrying its arguments."""


def record_from_pretrained(monkeypatch: pytest.MonkeyPatch, auto_class: type) -> None:
    def from_pretrained(where: str, **kwargs: Any) -> Any:
        raise Recorded(where, kwargs)

    monkeypatch.setattr(auto_class, "from_pretrained", from_pretrained)


def test_a_quantized_model_loads_onto_this_processs_gpu_computing_in_the_stages_precision(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """bitsandbytes cannot load here, so transformers' loader is stood in
    for: what matters is what it is asked for."""
    record_from_pretrained(monkeypatch, quantized.AutoModelForCausalLM)
    monkeypatch.setenv("LOCAL_RANK", "3")  # accelerate's process on the fourth GPU
    with pytest.raises(Recorded) as info:
        quantized.load_causal_lm(Source("path", "/models/base"), "4bit", BF16_GPU)
    where, kwargs = info.value.args
    assert where == "/models/base"
    assert kwargs["device_map"] == {"": 3} and kwargs["dtype"] == torch.bfloat16 and kwargs["use_safetensors"]
    assert kwargs["quantization_config"].to_dict() == quantized.bnb_config("4bit", torch.bfloat16).to_dict()

    record_from_pretrained(monkeypatch, quantized.AutoModelForSequenceClassification)
    with pytest.raises(Recorded) as info:
        quantized.load_scoring_body(Source("hub", "org/rm"), "8bit", BF16_GPU)
    where, kwargs = info.value.args
    assert where == "org/rm" and kwargs["num_labels"] == 1 and kwargs["device_map"] == {"": 3}
    assert kwargs["quantization_config"].load_in_8bit


def test_a_frozen_reward_model_is_held_in_the_compute_precision_or_quantized(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    folder = tmp_path / "rm"
    tokenizer = tiny_tokenizer()
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, num_labels=1,
                         pad_token_id=tokenizer.pad_token_id)
    AutoModelForSequenceClassification.from_config(config).save_pretrained(folder)
    cpu_model = quantized.load_frozen_classifier(str(folder), "none", CPU)
    assert cpu_model.dtype == torch.float32 and not cpu_model.training
    assert not any(p.requires_grad for p in cpu_model.parameters())
    bf16_model = quantized.load_frozen_classifier(str(folder), "none", BF16_GPU)  # (loaded on the CPU here)
    assert bf16_model.dtype == torch.bfloat16

    from engine.stages.common import models

    record_from_pretrained(monkeypatch, models.AutoModelForSequenceClassification)
    with pytest.raises(StageFailed) as info:  # (what any loading error becomes)
        quantized.load_frozen_classifier(str(folder), "4bit", BF16_GPU)
    assert isinstance(info.value.__cause__, Recorded)
    _, kwargs = info.value.__cause__.args
    assert kwargs["quantization_config"].bnb_4bit_quant_type == "nf4" and kwargs["device_map"] == {"": 0}


def test_trl_loads_the_reference_copy_frozen_in_the_compute_precision_or_quantized() -> None:
    spec = RLOOSpec(from_="hub:org/policy", judges=["demo"], prompts="hub:org/prompts")
    assert online_rl.frozen_reference_kwargs(spec, BF16_GPU) == {
        "model_init_kwargs": {"dtype": "bfloat16"}, "held_as": "bfloat16"}
    assert online_rl.frozen_reference_kwargs(spec, CPU)["model_init_kwargs"] == {"dtype": "float32"}
    quantized_spec = spec.model_copy(update={"frozen_quantization": "4bit"})
    kwargs = online_rl.frozen_reference_kwargs(quantized_spec, BF16_GPU)
    assert kwargs["held_as"] == "4bit" and kwargs["quantization_config"].load_in_4bit
    assert kwargs["quantization_config"].bnb_4bit_compute_dtype == torch.bfloat16
    json.dumps(kwargs["model_init_kwargs"])  # it goes into the resolved config with trl's arguments


# -- merging QLoRA adapters into full-precision weights --------------------------------------


def test_adapters_move_onto_a_full_precision_base_with_their_score_head(tmp_path: Path) -> None:
    """What a QLoRA reward model's final/ is made of: its adapters and score
    head on the `from` body in fp32, merged. Here the trained model is not
    quantized (no bitsandbytes), which changes nothing about the move."""
    tokenizer = tiny_tokenizer()
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, num_labels=1,
                         pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    body = AutoModelForSequenceClassification.from_config(config)
    body.save_pretrained(tmp_path / "body")
    trained = get_peft_model(
        AutoModelForSequenceClassification.from_pretrained(tmp_path / "body"),
        LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="SEQ_CLS", init_lora_weights=False))
    with torch.no_grad():
        trained.base_model.model.score.modules_to_save["default"].weight.normal_()  # a trained head
    ids = torch.tensor([[5, 17, 42, 99, 7]])
    expected = trained.eval()(input_ids=ids).logits

    moved = quantized.adapters_on(trained, AutoModelForSequenceClassification.from_pretrained(tmp_path / "body"))
    assert torch.allclose(moved.eval()(input_ids=ids).logits, expected, atol=1e-6)
    save_final(moved, tokenizer, tmp_path / "final")
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "final").eval()
    assert torch.allclose(reloaded(input_ids=ids).logits, expected, atol=1e-5)
    assert (tmp_path / "final" / "adapter" / "adapter_config.json").is_file()


# -- activation checkpointing in training mode, without dropout --------------------------------


def test_training_mode_without_dropout_checkpoints_and_computes_what_eval_mode_does() -> None:
    """PPO compares the policy with the one that sampled: training mode (which
    transformers needs to checkpoint a layer) must change nothing else."""
    tokenizer = tiny_tokenizer()
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, attention_dropout=0.5, pad_token_id=tokenizer.pad_token_id))
    ids = torch.randint(0, len(tokenizer), (2, 12))
    with torch.no_grad():
        reference = model.eval()(input_ids=ids).logits
        noisy = model.train()(input_ids=ids).logits
    assert not torch.allclose(noisy, reference)  # the attention dropout is on in training mode

    enable_activation_checkpointing(model)
    without_dropout(model).train()
    assert all(layer.gradient_checkpointing for layer in model.model.layers)
    loss = model(input_ids=ids, labels=ids).loss
    assert torch.allclose(model(input_ids=ids).logits, reference, atol=1e-6)
    loss.backward()
    checkpointed = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model.eval()(input_ids=ids, labels=ids).loss.backward()  # no checkpointing in eval mode: the same gradients
    for a, b in zip(checkpointed, (p.grad for p in model.parameters())):
        assert torch.allclose(a, b, atol=1e-6)
