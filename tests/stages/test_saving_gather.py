"""final/ under sharded weights (DeepSpeed ZeRO-3, FSDP), checked without a
GPU (engine/stages/common/saving.py).

Under ZeRO-3 each process's copy of the model holds empty placeholders between
forward passes, under FSDP a shard; the whole weights exist only once gathered,
through accelerate's `get_state_dict`.

- Fast, one process, no DeepSpeed: the trained model is a tiny real one whose
  parameters are emptied as ZeRO-3 leaves them, and a stand-in accelerator's
  gather returns the weights of another model, which final/ must then hold
  (saving the trained model as it is would write empty tensors).
- Slow, two processes over gloo (this file is also their script): real FSDP2
  and (with deepspeed installed) ZeRO-3 shards, gathered by accelerate's
  own get_state_dict; final/ must equal the unsharded model's.

A whole stage under ZeRO-3 is in test_strategies_on_cpu.py (deepspeed only)."""

from __future__ import annotations

import copy
import importlib.util
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
import torch.distributed as dist
from accelerate import Accelerator
from accelerate.utils import DistributedType, extract_model_from_parallel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, LlamaForSequenceClassification
from transformers.models.llama.modeling_llama import LlamaDecoderLayer

from engine.runtime.launcher import child_env, free_port
from engine.stages.common.saving import save_final, save_trained, whole_for_saving
from engine.stages.pretrain.spec import PretrainSpec
from tests.tiny_models import tiny_model, tiny_tokenizer

REPO = Path(__file__).resolve().parents[2]
#: what the two processes save, sharded and not
CASES = ("causal-lm", "lora-reward-model")


class StandInAccelerator:
    """What save_trained asks of accelerate's Accelerator; `get_state_dict`
    answers as accelerate's gather does: the whole weights on the main
    process, nothing on the others."""

    def __init__(self, gathered: dict[str, torch.Tensor], *, kind: DistributedType = DistributedType.FSDP,
                 zero_stage: int = 3, main: bool = True) -> None:
        self.distributed_type = kind
        self.deepspeed_config = {"zero_optimization": {"stage": zero_stage}}
        self.is_main_process = main
        self.gathered = gathered
        self.gathers = 0

    def get_state_dict(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        self.gathers += 1
        return self.gathered if self.is_main_process else {}

    def unwrap_model(self, model: torch.nn.Module) -> torch.nn.Module:
        return model.module if isinstance(model, StandInEngine) else model


class StandInEngine(torch.nn.Module):
    """A DeepSpeed engine as far as saving sees it: the model in `.module`, the
    config's gather-on-save switch, and ZeRO-3's own consolidation."""

    def __init__(self, module: torch.nn.Module, gathered: dict[str, torch.Tensor], *, gathers_on_save: bool) -> None:
        super().__init__()
        self.module = module
        self.gathered = gathered
        self.gathers_on_save = gathers_on_save
        self.consolidations = 0

    def zero_gather_16bit_weights_on_model_save(self) -> bool:
        return self.gathers_on_save

    def _zero3_consolidated_16bit_state_dict(self) -> dict[str, torch.Tensor]:
        self.consolidations += 1
        return self.gathered


def as_zero3_leaves_it(model: torch.nn.Module) -> torch.nn.Module:
    """Every parameter an empty placeholder, as on a ZeRO-3 process between forward passes."""
    for parameter in model.parameters():
        parameter.data = torch.empty(0, dtype=parameter.dtype)
    return model


def cloned(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A model's state dict as a gather hands it over: tensors of its own."""
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def save_as_a_stage_ends(make_context, accelerator: Any, wrapped: torch.nn.Module, tokenizer: Any) -> Path:
    trainer = SimpleNamespace(accelerator=accelerator, model=accelerator.unwrap_model(wrapped), model_wrapped=wrapped,
                              processing_class=tokenizer, is_world_process_zero=lambda: accelerator.is_main_process)
    ctx = make_context(PretrainSpec())
    ctx.is_main_process = accelerator.is_main_process
    save_trained(trainer, ctx, 4)  # type: ignore[arg-type]  # a stand-in Trainer
    return ctx.final_dir


def assert_same_tensors(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert sorted(actual) == sorted(expected)
    for name, tensor in expected.items():
        assert torch.equal(actual[name], tensor), name


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return tiny_tokenizer()


def test_a_sharded_model_is_saved_from_the_gathered_weights(make_context, tokenizer) -> None:
    trained = tiny_model(tokenizer, seed=1)
    expected = cloned(tiny_model(tokenizer, seed=2))
    accelerator = StandInAccelerator(cloned(tiny_model(tokenizer, seed=2)))

    final = save_as_a_stage_ends(make_context, accelerator, as_zero3_leaves_it(trained), tokenizer)

    assert accelerator.gathers == 1
    # Plain transformers loads it, with the gathered weights; the tied output
    # embedding is stored once, as save_pretrained always stores it.
    loaded = AutoModelForCausalLM.from_pretrained(final)
    assert_same_tensors(cloned(loaded), expected)
    assert_same_tensors(load_file(final / "model.safetensors"),
                        {name: t for name, t in expected.items() if name != "lm_head.weight"})
    assert loaded.config.use_cache and (final / "tokenizer.json").is_file()


def test_only_the_main_process_writes_but_every_process_gathers(make_context, tokenizer) -> None:
    accelerator = StandInAccelerator({}, main=False)
    final = save_as_a_stage_ends(make_context, accelerator, as_zero3_leaves_it(tiny_model(tokenizer)), tokenizer)
    assert accelerator.gathers == 1  # a collective: the main process would wait for this one forever
    assert not final.exists() and not final.parent.exists()


@pytest.mark.parametrize("gathers_on_save", [True, False])
def test_zero3_gathers_through_the_engine_even_without_the_gather_on_save_switch(
        make_context, tokenizer, gathers_on_save: bool) -> None:
    expected = cloned(tiny_model(tokenizer, seed=2))
    engine = StandInEngine(as_zero3_leaves_it(tiny_model(tokenizer, seed=1)), expected,
                           gathers_on_save=gathers_on_save)

    class ThroughEngine(StandInAccelerator):
        def get_state_dict(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
            # accelerate's own: refuses without the switch, else the engine's consolidation
            assert isinstance(model, StandInEngine) and model.zero_gather_16bit_weights_on_model_save()
            return model._zero3_consolidated_16bit_state_dict()

    accelerator = ThroughEngine({}, kind=DistributedType.DEEPSPEED, zero_stage=3)
    final = save_as_a_stage_ends(make_context, accelerator, engine, tokenizer)
    assert engine.consolidations == 1
    assert_same_tensors(cloned(AutoModelForCausalLM.from_pretrained(final)), expected)


@pytest.mark.parametrize(("kind", "zero_stage"), [(DistributedType.NO, 0), (DistributedType.MULTI_GPU, 0),
                                                  (DistributedType.DEEPSPEED, 2)])
def test_whole_weights_are_saved_as_they_are_without_a_gather(make_context, tokenizer, kind, zero_stage) -> None:
    trained = tiny_model(tokenizer, seed=1)
    expected = cloned(trained)

    class NeverGathers(StandInAccelerator):
        def get_state_dict(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
            raise AssertionError("gathered whole weights: a second copy of the model for nothing")

    final = save_as_a_stage_ends(make_context, NeverGathers({}, kind=kind, zero_stage=zero_stage), trained,
                                 tokenizer)
    assert_same_tensors(cloned(AutoModelForCausalLM.from_pretrained(final)), expected)


def lora_reward_model(tokenizer: Any, *, seed: int) -> Any:
    """A tiny reward model with LoRA adapters, its score head trained in full (peft's
    modules_to_save), as the reward stage builds one with a [lora] table."""
    from peft import LoraConfig, get_peft_model

    config = copy.deepcopy(tiny_model(tokenizer).config)
    config.num_labels = 1
    torch.manual_seed(seed)
    model = LlamaForSequenceClassification(config)
    # init_lora_weights=False: a fresh adapter is the identity, which would hide a missing merge.
    return get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="SEQ_CLS",
                                            init_lora_weights=False))


def test_a_sharded_lora_reward_model_saves_its_adapter_head_and_merged_weights(make_context, tokenizer) -> None:
    from peft import get_peft_model_state_dict

    reference = lora_reward_model(tokenizer, seed=2)
    expected_adapter = {name: t.clone() for name, t in get_peft_model_state_dict(reference).items()}
    assert any("score" in name for name in expected_adapter)  # the head is trained in full, saved with it
    gathered = cloned(reference)
    expected_merged = cloned(copy.deepcopy(reference).merge_and_unload())
    accelerator = StandInAccelerator(gathered)

    final = save_as_a_stage_ends(make_context, accelerator, as_zero3_leaves_it(lora_reward_model(tokenizer, seed=1)),
                                 tokenizer)

    assert accelerator.gathers == 1
    assert_same_tensors(load_file(final / "adapter" / "adapter_model.safetensors"), expected_adapter)
    loaded = AutoModelForSequenceClassification.from_pretrained(final, num_labels=1)
    merged = cloned(loaded)
    assert sorted(merged) == sorted(expected_merged)
    for name, tensor in expected_merged.items():
        # merged here and in the reference with the same sums: equal to rounding
        assert torch.allclose(merged[name], tensor, rtol=0, atol=1e-6), name
    assert not (final / "adapter_config.json").exists()  # final/ is a plain model


# --- real sharding: two processes over gloo -----------------------------------------------------


# FSDP1 is left out: on a CPU process group torch 2.13 segfaults inside its own full-state-dict hook
# (the clone after gathering, with offload_to_cpu as accelerate asks), before any code of ours runs.
@pytest.mark.slow  # two processes start torch and transformers: 20-70 s each on 2 busy cores
@pytest.mark.timeout(300)
@pytest.mark.parametrize("sharding", [
    "fsdp2",
    pytest.param("zero3", marks=pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None,
                                                   reason="deepspeed is not installed")),
])
def test_really_sharded_models_save_as_the_unsharded_ones(sharding: str, tmp_path: Path) -> None:
    """Two torchrun processes shard a tiny causal LM and a tiny LoRA reward model
    (FSDP2 with torch alone, ZeRO-3 with DeepSpeed's CPU accelerator);
    accelerate's own get_state_dict gathers them (on a stand-in for the
    Accelerator: accelerate turns FSDP on only for GPU process groups), and
    final/ must hold exactly what saving the same model unsharded writes."""
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
         "--module", "tests.stages.test_saving_gather", sharding, str(tmp_path)],
        # child_env puts the repository first on PYTHONPATH (tests is a package there), keeping the rest
        env=child_env({"OMP_NUM_THREADS": "1"}), capture_output=True, text=True, timeout=240, cwd=REPO,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for case in CASES:
        final, unsharded = tmp_path / f"{case}-final", tmp_path / f"{case}-unsharded"
        assert_same_tensors(load_file(final / "model.safetensors"), load_file(unsharded / "model.safetensors"))
        if case == "lora-reward-model":
            assert_same_tensors(load_file(final / "adapter" / "adapter_model.safetensors"),
                                load_file(unsharded / "adapter" / "adapter_model.safetensors"))
        assert not list(tmp_path.glob(".*.tmp"))


class AsAccelerateSetsUp:
    """accelerate's Accelerator as `accelerate launch` sets it up for SHARDING,
    with accelerate's own get_state_dict and unwrapping."""

    get_state_dict = Accelerator.get_state_dict

    def __init__(self, sharding: str, deepspeed_config: dict[str, Any]) -> None:
        self.distributed_type = DistributedType.DEEPSPEED if sharding == "zero3" else DistributedType.FSDP
        self.is_fsdp2 = sharding == "fsdp2"
        self.deepspeed_config = deepspeed_config
        self.is_main_process = dist.get_rank() == 0

    def unwrap_model(self, model: torch.nn.Module) -> torch.nn.Module:
        return extract_model_from_parallel(model)


def shard(model: torch.nn.Module, sharding: str, deepspeed_config: dict[str, Any]) -> torch.nn.Module:
    """The model as the strategy wraps it: each decoder layer a unit, then the rest."""
    if sharding == "fsdp2":
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh("cpu", (dist.get_world_size(),))
        for layer in [m for m in model.modules() if isinstance(m, LlamaDecoderLayer)]:
            fully_shard(layer, mesh=mesh)
        return fully_shard(model, mesh=mesh)
    import deepspeed

    trainable = [p for p in model.parameters() if p.requires_grad]  # LoRA: the adapters and the head

    engine, *_ = deepspeed.initialize(model=model, model_parameters=trainable, config=deepspeed_config,
                                      optimizer=torch.optim.AdamW(trainable))
    return engine


def sharded_process(sharding: str, folder: Path) -> None:
    """One of the two processes: each case saved unsharded (before sharding) and
    sharded (through whole_for_saving), by the main process."""
    deepspeed_config = {"train_micro_batch_size_per_gpu": 1, "zero_allow_untested_optimizer": True,
                        "zero_optimization": {"stage": 3, "stage3_param_persistence_threshold": 0,
                                              "stage3_gather_16bit_weights_on_model_save": True}}
    if sharding == "zero3":
        import deepspeed

        deepspeed.init_distributed("gloo")
    else:
        dist.init_process_group("gloo")
    tokenizer = tiny_tokenizer()
    accelerator = AsAccelerateSetsUp(sharding, deepspeed_config)
    for case in CASES:
        model = tiny_model(tokenizer, seed=1) if case == "causal-lm" else lora_reward_model(tokenizer, seed=1)
        if accelerator.is_main_process:
            save_final(copy.deepcopy(model), tokenizer, folder / f"{case}-unsharded")
        wrapped = shard(model, sharding, deepspeed_config)
        whole = whole_for_saving(accelerator, wrapped)  # type: ignore[arg-type]  # the stand-in
        if accelerator.is_main_process:
            assert whole is not None and whole is not model
            save_final(whole, tokenizer, folder / f"{case}-final")
        else:
            assert whole is None
        dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    sharded_process(sys.argv[1], Path(sys.argv[2]))
