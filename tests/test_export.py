"""`rlhf export`'s engine side: a folder plain transformers loads, with the same
logits; LoRA adapters merged or kept; bad input refused in one line naming the path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from engine.errors import UserInputError
from engine.runtime.export_job import (
    inspect_checkpoint,
    run_export,
)
from tests.tiny_models import save_lora_adapter, save_tiny_model

PICKLES = (".bin", ".pt", ".pth", ".pkl")


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("export-models")
    trained = save_tiny_model(root / "trained", seed=0, train_steps=3)
    # A Trainer checkpoint: the model plus pickled training state, which an export leaves behind.
    checkpoint = save_tiny_model(root / "checkpoint-3", seed=0, train_steps=3)
    for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth", "training_args.bin"):
        (checkpoint / name).write_bytes(b"not for export")
    return {
        "trained": trained,
        "checkpoint": checkpoint,
        "adapter": save_lora_adapter(trained, root / "adapter"),
    }


def logits(model: torch.nn.Module, tokenizer) -> torch.Tensor:
    text = tokenizer.apply_chat_template([{"role": "user", "content": "Return the sum."}], tokenize=False,
                                         add_generation_prompt=True)
    with torch.no_grad():
        return model.eval()(**tokenizer(text, return_tensors="pt")).logits


@pytest.mark.slow
def test_export_loads_with_plain_transformers_and_gives_identical_logits(models, tmp_path) -> None:
    result = run_export(models["checkpoint"], tmp_path / "out")
    out = tmp_path / "out"
    assert (result.out, result.kind, result.merged, result.notes) == (out, "model", False, [])
    assert result.message == f"exported {out}"
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
            "tokenizer_config.json", "chat_template.jinja"} <= names
    assert not [n for n in names if n.endswith(PICKLES)], names
    assert sorted(result.files) == sorted(names)
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["use_cache"] is True

    original = AutoModelForCausalLM.from_pretrained(models["checkpoint"])
    exported = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer.chat_template == AutoTokenizer.from_pretrained(models["checkpoint"]).chat_template
    assert torch.equal(logits(exported, tokenizer), logits(original, tokenizer))


@pytest.mark.slow
def test_lora_adapter_merged_or_kept(models, tmp_path) -> None:
    from peft import PeftModel

    merged = run_export(models["adapter"], tmp_path / "merged", merge_lora=True)
    assert (merged.kind, merged.merged, merged.base) == ("model", True, str(models["trained"]))
    assert "the adapter merged into its base model" in merged.message
    assert not (tmp_path / "merged" / "adapter_config.json").exists()
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "merged")  # the base's, saved with it
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(models["trained"]), models["adapter"])
    base = AutoModelForCausalLM.from_pretrained(models["trained"])
    expected = logits(adapted, tokenizer)
    assert torch.allclose(logits(plain, tokenizer), expected, atol=1e-5)
    assert not torch.allclose(logits(base, tokenizer), expected, atol=1e-3)  # the adapter does change it

    kept = run_export(models["adapter"], tmp_path / "kept")
    assert (kept.kind, kept.merged) == ("adapter", False)
    assert f"it needs its base model {models['trained']}" in kept.message
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json"} <= set(kept.files)
    reloaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(models["trained"]), tmp_path / "kept")
    assert torch.allclose(logits(reloaded, tokenizer), expected, atol=1e-6)


def test_bad_input_is_one_line_naming_the_path(models, tmp_path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(UserInputError, match=f"^{missing}: no such folder$"):
        run_export(missing, tmp_path / "out")

    a_file = tmp_path / "model.safetensors"
    a_file.write_bytes(b"")
    with pytest.raises(UserInputError, match=f"^{a_file}: is a file; expected a model folder"):
        run_export(a_file, tmp_path / "out")

    stage_dir = tmp_path / "stage"
    (stage_dir / "final").mkdir(parents=True)
    (stage_dir / "final" / "config.json").write_text("{}")
    with pytest.raises(UserInputError) as caught:
        run_export(stage_dir, tmp_path / "out")
    assert str(caught.value) == (
        f"{stage_dir}: not a model folder: no config.json (a model) or adapter_config.json (a LoRA adapter); "
        f"did you mean {stage_dir / 'final'}?"
    )

    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text("{}")
    (pickled / "pytorch_model.bin").write_bytes(b"a pickle")
    with pytest.raises(UserInputError, match=f"^{pickled}: has only pickled weights \\(pytorch_model.bin\\)"):
        run_export(pickled, tmp_path / "out")

    adapter = tmp_path / "pickled-adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "org/base"}))
    (adapter / "adapter_model.bin").write_bytes(b"a pickle")
    with pytest.raises(UserInputError, match=f"^{adapter}: has only pickled weights"):
        run_export(adapter, tmp_path / "out")

    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    with pytest.raises(UserInputError, match=f"^{taken}: exists and is not empty"):
        run_export(models["trained"], taken)
    assert [p.name for p in taken.iterdir()] == ["keep.txt"]

    with pytest.raises(UserInputError, match="is inside the checkpoint"):
        run_export(models["trained"], models["trained"] / "export")


def test_inspect_tells_models_from_adapters(models) -> None:
    assert inspect_checkpoint(models["trained"]).kind == "model"
    info = inspect_checkpoint(models["adapter"])
    assert (info.kind, info.base) == ("adapter", str(models["trained"]))


def test_an_adapter_whose_base_is_gone_is_refused_before_loading(models, tmp_path) -> None:
    adapter = tmp_path / "orphan"
    adapter.mkdir()
    config = json.loads((models["adapter"] / "adapter_config.json").read_text())
    orphaned = {**config, "base_model_name_or_path": str(tmp_path / "gone")}
    (adapter / "adapter_config.json").write_text(json.dumps(orphaned))
    (adapter / "adapter_model.safetensors").write_bytes((models["adapter"] / "adapter_model.safetensors").read_bytes())
    with pytest.raises(UserInputError, match=f"^{adapter}: its base model {tmp_path / 'gone'} does not exist$"):
        run_export(adapter, tmp_path / "out", merge_lora=True)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_corrupt_weights_fail_in_one_line_and_leave_nothing(models, tmp_path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    for file in models["trained"].iterdir():
        data = file.read_bytes()
        (broken / file.name).write_bytes(data[:1000] if file.suffix == ".safetensors" else data)
    with pytest.raises(UserInputError, match=f"^cannot load a causal language model from {broken}: "):
        run_export(broken, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]  # no half-written folder


def test_the_wrapper_imports_no_torch() -> None:
    code = ("import sys, engine.runtime.export_job, engine.runtime.jobs\n"
            "print(sorted(m for m in ('torch', 'transformers', 'peft', 'trl', 'accelerate') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip() == "[]"
