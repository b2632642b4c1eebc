"""One process of tests/stages/test_distributed_generation.py, under torchrun (gloo).

Arguments: SHARDING (fsdp2, fsdp1 or zero3) and WHO (alone: only rank 0 generates;
uneven: every rank generates, rank 1 four times as many tokens; all: every rank the
same). Shards a tiny Llama, generates greedily inside full_weights_for_generation,
then trains one step; prints one JSON line: whether the tokens equal those of an
unsharded copy, and the loss next to the copy's.
"""

from __future__ import annotations

import copy
import functools
import json
import sys

import torch
import torch.distributed as dist
from transformers import LlamaConfig, LlamaForCausalLM

from engine.stages.common.distributed import full_weights_for_generation


def tiny_llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=256, eos_token_id=None, pad_token_id=0)
    return LlamaForCausalLM(config)


def shard(model: LlamaForCausalLM, sharding: str) -> torch.nn.Module:
    """The model as the strategy wraps it."""
    if sharding == "fsdp2":
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh("cpu", (dist.get_world_size(),))
        for layer in model.model.layers:
            fully_shard(layer, mesh=mesh)
        return fully_shard(model, mesh=mesh)
    if sharding == "fsdp1":
        from torch.distributed.fsdp import FullyShardedDataParallel
        from torch.distributed.fsdp.wrap import transformer_auto_wrap_policy
        from transformers.models.llama.modeling_llama import LlamaDecoderLayer

        policy = functools.partial(transformer_auto_wrap_policy, transformer_layer_cls={LlamaDecoderLayer})
        return FullyShardedDataParallel(model, auto_wrap_policy=policy, device_id=torch.device("cpu"),
                                        use_orig_params=True)
    import deepspeed

    config = {"train_micro_batch_size_per_gpu": 1, "zero_allow_untested_optimizer": True,
              "zero_optimization": {"stage": 3, "stage3_param_persistence_threshold": 0}}
    engine, *_ = deepspeed.initialize(model=model, optimizer=torch.optim.AdamW(model.parameters()), config=config)
    return engine


def main() -> None:
    sharding, who = sys.argv[1:]
    if sharding == "zero3":
        import deepspeed

        deepspeed.init_distributed("gloo")
    else:
        dist.init_process_group("gloo")
    rank = dist.get_rank()
    model = tiny_llama()
    reference = copy.deepcopy(model)
    wrapped = shard(model, sharding)
    prompts = torch.randint(1, 256, (2, 5), generator=torch.Generator().manual_seed(1))
    tokens = {"alone": 6, "uneven": 3 if rank == 0 else 12, "all": 6}[who]

    def greedy(m: torch.nn.Module) -> torch.Tensor:
        return m.generate(input_ids=prompts, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False)

    same = None
    with full_weights_for_generation(wrapped):
        if who != "alone" or rank == 0:
            # The module the stage loaded generates, as PPO's rollouts and eval answers do.
            same = torch.equal(greedy(model), greedy(reference))
    dist.barrier()
    loss = wrapped(input_ids=prompts, labels=prompts).loss  # sharded again: training goes on
    print(json.dumps({"rank": rank, "same_tokens": same, "loss": loss.item(),
                      "reference_loss": reference(input_ids=prompts, labels=prompts).loss.item()}), flush=True)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
