"""What every training stage decides the same way: device, precision, quiet
libraries, and the TrainingArguments that follow from a spec.

Import this module before transformers, datasets or trl: tqdm reads
`TQDM_DISABLE` once, when it is first imported, so the variable has to be
set before any library imports tqdm.
"""

from __future__ import annotations

import os

# Set at import, before the imports below can load tqdm (see the module docstring).
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from engine.errors import StageFailed
from engine.spec.fields import StageSpec


def silence_libraries() -> None:
    """No progress bars, no info chatter: a worker's output goes to a log file,
    and metrics reach people through the store."""
    import datasets
    import transformers

    transformers.utils.logging.set_verbosity_warning()
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_warning()


@dataclass(frozen=True)
class Runtime:
    """Where and how a stage computes."""

    device: str  # "cpu" or "cuda"
    bf16: bool
    fp16: bool
    world_size: int

    @property
    def precision(self) -> str:
        return "bf16" if self.bf16 else "fp16" if self.fp16 else "fp32"

    def describe(self) -> str:
        """For people: e.g. `cuda (NVIDIA H100, bf16)` or `cpu × 2 processes (fp32)`."""
        if self.device == "cuda":
            where = f"cuda ({torch.cuda.get_device_name()}, {self.precision})"
        else:
            where = f"cpu ({self.precision})"
        if self.world_size > 1:
            where += f" × {self.world_size} processes"
        return where


def choose_runtime(device: str = "auto", precision: str = "auto") -> Runtime:
    """Resolve a spec's `device` and `precision` against the hardware.

    auto = the GPU when one is visible, with bf16 autocast if it supports it;
    otherwise the CPU in fp32. Asking for what the hardware cannot do fails
    with one line rather than falling back silently."""
    has_cuda = torch.cuda.is_available()
    if device == "cuda" and not has_cuda:
        raise StageFailed("device = 'cuda' but no CUDA GPU is visible")
    on_cuda = device == "cuda" or (device == "auto" and has_cuda)

    bf16 = fp16 = False
    if precision == "auto":
        bf16 = on_cuda and torch.cuda.is_bf16_supported()
    elif precision == "bf16":
        if on_cuda and not torch.cuda.is_bf16_supported():
            raise StageFailed("precision = 'bf16' but this GPU does not support bf16; use fp16 or fp32")
        bf16 = True  # on the CPU too: autocast works there, if slowly
    elif precision == "fp16":
        if not on_cuda:
            # The Trainer would silently train in fp32 on the CPU.
            raise StageFailed("precision = 'fp16' needs a CUDA GPU; use bf16 or fp32 on the CPU")
        fp16 = True
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    return Runtime(device="cuda" if on_cuda else "cpu", bf16=bf16, fp16=fp16, world_size=world_size)


#: models from this size up recompute activations on a GPU when a stage says "auto"
CHECKPOINTING_PARAMETERS = 100_000_000


def activation_checkpointing(setting: str, runtime: Runtime, parameters: int, *, quantized: bool = False) -> bool:
    """Whether to recompute activations in the backward pass. "auto": on a GPU
    for models of 100M+ parameters (or quantized ones), where memory is what
    runs out; never on the CPU, where it only costs time (about 30% on tiny
    models, which is why TRL's default of "on" is not ours)."""
    if setting == "auto":
        return runtime.device == "cuda" and (parameters >= CHECKPOINTING_PARAMETERS or quantized)
    return setting == "on"


def lora_config(lora: Any, task_type: str) -> Any:  # (LoraSpec, "CAUSAL_LM" | "SEQ_CLS") -> peft.LoraConfig
    """peft's LoraConfig for a stage's [lora] table (peft is imported only when one is used)."""
    from peft import LoraConfig

    # The table's other keys (use_dora, use_rslora, ...) were checked against LoraConfig's fields
    # when the spec was validated (engine/spec/pass_through.py); they go in as they are.
    return LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                      target_modules=lora.target_modules, task_type=task_type, **(lora.model_extra or {}))


def library_config(config_class: type[Any], spec: StageSpec, /, **kwargs: Any) -> Any:
    """`config_class(**kwargs)` with the stage's [trainer] table laid over the keywords.

    The table was checked against config_class's fields at spec validation, and keys the
    spec or the engine own were refused there; what is left may override the engine's
    other defaults (dataloader_num_workers, pad_to_multiple_of, ...), so it goes last."""
    return config_class(**{**kwargs, **(spec.trainer or {})})


def training_kwargs(spec: StageSpec, runtime: Runtime, output_dir: Path) -> dict[str, Any]:
    """TrainingArguments keywords shared by every Trainer-based stage.

    Reads the schedule fields the training specs share (max_steps, batch_size,
    gradient_accumulation_steps, learning_rate, weight_decay, warmup_steps,
    lr_scheduler, max_grad_norm, eval_every, save_every, keep_checkpoints,
    log_every, seed). Works for transformers' TrainingArguments and for TRL's
    configs, which subclass it."""
    s: Any = spec  # the fields above are not on StageSpec itself
    return {
        "output_dir": str(output_dir),
        # Device and precision. TRL configs default to bf16=True, which fails on
        # the CPU unless use_cpu and bf16 are both given.
        "use_cpu": runtime.device == "cpu",
        "bf16": runtime.bf16,
        "fp16": runtime.fp16,
        # Schedule.
        "max_steps": s.max_steps,
        "per_device_train_batch_size": s.batch_size,
        "per_device_eval_batch_size": s.batch_size,
        "gradient_accumulation_steps": s.gradient_accumulation_steps,
        "learning_rate": s.learning_rate,
        "weight_decay": s.weight_decay,
        "warmup_steps": s.warmup_steps,
        "lr_scheduler_type": s.lr_scheduler,
        "max_grad_norm": s.max_grad_norm,
        "seed": s.seed,
        "data_seed": s.seed,
        # Evaluation, logging and checkpoints, all counted in optimizer steps.
        "eval_strategy": "steps",
        "eval_steps": s.eval_every,
        "logging_strategy": "steps",
        "logging_steps": s.log_every,
        "logging_first_step": True,  # the chart starts at step 1, not at log_every
        "save_strategy": "steps",
        "save_steps": s.save_every,
        # How many checkpoints the stage keeps. The pruning is checkpoint_writing's (via
        # attach_stage_callback): the Trainer's own rotation only ever sees the staging
        # folder, which holds just the checkpoint being written, and so deletes nothing.
        "save_total_limit": s.keep_checkpoints,
        # A NaN loss is worth seeing; the filter also costs a device sync per step on GPUs.
        "logging_nan_inf_filter": False,
        # Quiet: our callback reports to the store, and the store's tap (StageContext.flush) to the
        # trackers the spec's report_to names; the library's own reporting would send a second series.
        "report_to": "none",
        "disable_tqdm": True,
        "log_level": "warning",
        # Data already sits in memory: worker processes would only add start-up
        # time and copies. Pinned memory speeds host-to-GPU copies only.
        "dataloader_num_workers": 0,
        "dataloader_pin_memory": runtime.device == "cuda",
        # All parameters get gradients in these models; the search for unused
        # ones costs a graph traversal every step.
        "ddp_find_unused_parameters": False,
    }
