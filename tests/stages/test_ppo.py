"""The ppo stage end to end on tiny models, against a real store.

The policy is a tiny Llama taught (in a fixture, a few seconds) to answer
"Say some words." with 2 to 8 words drawn evenly from eight, then its
end-of-turn token. The reward model is built by hand, weights set so that
its score is the share of the word "for" among the tokens it reads (one
attention layer averaging a "for" feature over the sequence). A few PPO
updates should teach the policy to say "for" more often, which a person can
check by reading the samples, and the numbers say exactly how.
"""

from __future__ import annotations

import json
import random
import subprocess
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    LlamaConfig,
    LlamaForSequenceClassification,
    PreTrainedTokenizerBase,
)

from engine.errors import StageCancelled, StageFailed
from engine.recipe.provenance import read_provenance
from engine.runtime.launcher import child_env, find_resume_checkpoint, worker_command
from engine.spec.fields import LoraSpec
from engine.stages.common.context import StageContext
from engine.stages.common.generation import SamplingSettings, format_prompt
from engine.stages.common.tokenizer import train_bpe
from engine.stages.ppo import stage as ppo
from engine.stages.ppo.spec import PPOSpec
from store import NewStage, StageStatus
from tests.tiny_models import tiny_model, tiny_tokenizer

pytestmark = pytest.mark.slow  # every test trains PPO on `models`, a policy trained for 150 steps

WORDS = ["for", "is", "in", "or", "it", "an", "as", "on"]  # one token each, with and without a space
REWARDED = "for"
PROMPTS = ["Say some words.", "Say a few words.", "Give me some words.", "Words, please."]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These models are tiny: on a busy 2-core machine two threads mostly wait
    for each other (measured 20x slower than one)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --- the models ---------------------------------------------------------------------


def word_policy(folder: Path, *, steps: int = 150) -> Path:
    """A tiny chat model answering with 2-8 random WORDS, then <|end|>."""
    tokenizer = tiny_tokenizer()
    model = tiny_model(tokenizer, seed=0)
    draw = random.Random(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(steps):
        texts = [tokenizer.apply_chat_template(
            [{"role": "user", "content": draw.choice(PROMPTS)},
             {"role": "assistant", "content": " ".join(draw.choices(WORDS, k=draw.randint(2, 8)))}],
            tokenize=False) for _ in range(16)]
        batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        model(**batch, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def counting_reward_model(folder: Path, tokenizer: PreTrainedTokenizerBase, word: str) -> Path:
    """A LlamaForSequenceClassification whose score grows with the share of
    `word`'s tokens in the sequence (about +0.5 per occurrence in a short chat).

    Every weight is 0 but these: each embedding has a constant 1 in dimension
    2, and the rewarded tokens a 1 in dimension 0; queries and keys are 0, so
    attention averages over the sequence; the value reads dimension 0 and the
    output writes that average to dimension 1, which the score head reads at
    the last token (the chat template's end-of-turn)."""
    rewarded = sorted({ids[0] for ids in (tokenizer(word, add_special_tokens=False)["input_ids"],
                                          tokenizer(" " + word, add_special_tokens=False)["input_ids"])
                       if len(ids) == 1})
    assert rewarded, f"{word!r} is not one token in this tokenizer"
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, num_labels=1,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id)
    model = LlamaForSequenceClassification(config)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            parameter.fill_(1.0 if "norm" in name else 0.0)
        embeddings = model.model.embed_tokens.weight
        embeddings[:, 2] = 1.0
        embeddings[rewarded, 0] = 1.0
        attention = model.model.layers[0].self_attn
        attention.v_proj.weight[0, 0] = 0.05
        attention.o_proj.weight[1, 0] = 1.0
        model.score.weight[0, 1] = 10.0
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def foreign_tokenizer() -> PreTrainedTokenizerBase:
    """Another vocabulary (and chat template) than the policy's: trained on
    other text, with WORDS in it so the rewarded word is one token there too."""
    texts = [" ".join(random.Random(i).choices(WORDS, k=40)) for i in range(50)]
    texts += ["Say some words. Give me a few words, please. Tell me about it."] * 20
    tokenizer = train_bpe(texts, vocab_size=320)
    tokenizer.chat_template = (
        "{%- for message in messages -%}{{ message['role'] | upper }}: {{ message['content'] }}\n"
        "{%- endfor -%}{{ eos_token }}"
    )
    return tokenizer


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ppo-models")
    policy = word_policy(root / "policy")
    prompts = root / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    ptx = root / "ptx.jsonl"
    ptx.write_text("".join(json.dumps({"prompt": p, "completion": "is in or"}) + "\n" for p in PROMPTS))
    return {
        "policy": policy,
        "reward": counting_reward_model(root / "reward", AutoTokenizer.from_pretrained(policy), REWARDED),
        "foreign_reward": counting_reward_model(root / "foreign", foreign_tokenizer(), REWARDED),
        "prompts": prompts,
        "ptx": ptx,
    }


def ppo_spec(models: dict[str, Path], **overrides) -> PPOSpec:
    settings = dict(
        from_=f"path:{models['policy']}", reward_model=f"path:{models['reward']}",
        prompts=f"path:{models['prompts']}", updates=6, rollout_batch_size=16, minibatch_size=8, ppo_epochs=4,
        learning_rate=1e-3, beta=0.02, max_new_tokens=12, sample_every=3, samples_per_update=2,
        eval_prompt_count=2, sample_max_new_tokens=8, save_every=100, device="cpu",
        eval_prompts="builtin:demo-prompts", eval_judge="demo",
    )
    return PPOSpec(**{**settings, **overrides})


def series(workspace, ctx: StageContext, key: str) -> list[float]:
    return [p.value for p in workspace.store.metric_series(stage_id=ctx.stage_id, key=key)]


def steps(workspace, ctx: StageContext, key: str) -> list[int]:
    return [int(p.step) for p in workspace.store.metric_series(stage_id=ctx.stage_id, key=key)]


# --- the probabilities PPO computes ---------------------------------------------------


def test_scoring_sees_the_distribution_generation_sampled_from(models) -> None:
    """The ratio in PPO's loss compares the policy with the one that sampled:
    the forward pass over prompt + response (left padding, position ids,
    temperature) must give the probabilities `generate` drew from."""
    model = AutoModelForCausalLM.from_pretrained(models["policy"]).eval()
    tokenizer = AutoTokenizer.from_pretrained(models["policy"])
    prompts = ["Say some words.", "Give me some words, and then a few more words, please."]  # unequal padding
    settings = SamplingSettings(temperature=0.7, top_p=1.0, max_new_tokens=10, seed=3)
    batch = ppo.rollout(model, tokenizer, prompts, settings)
    padding_side, tokenizer.padding_side = tokenizer.padding_side, "left"
    encoded = tokenizer([format_prompt(tokenizer, p) for p in prompts], return_tensors="pt", padding=True,
                        add_special_tokens=False)
    tokenizer.padding_side = padding_side
    assert torch.equal(encoded["input_ids"], batch.prompt_ids) and batch.prompt_mask[0].min() == 0
    torch.manual_seed(3)
    with torch.no_grad():
        sampled = model.generate(**encoded, do_sample=True, temperature=0.7, top_k=0, top_p=1.0, max_new_tokens=10,
                                 output_logits=True, return_dict_in_generate=True,
                                 pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        length = batch.response_ids.shape[1]
        computed = ppo.response_logits(model, ppo.sequence_inputs(batch, slice(None)), length, 0.7)
    drawn_from = torch.log_softmax(torch.stack(sampled.logits, dim=1)[:, :length] / 0.7, dim=-1)
    difference = (drawn_from - torch.log_softmax(computed, dim=-1)).abs().amax(dim=-1)
    assert (difference * batch.response_mask).max() < 1e-4
    # The same tokens, cut after each response's end.
    assert torch.equal(sampled.sequences[:, encoded["input_ids"].shape[1]:][batch.response_mask == 1],
                       batch.response_ids[batch.response_mask == 1])


# --- the stage ----------------------------------------------------------------------


def test_the_reward_model_score_rises_on_a_kl_leash(make_context, workspace, models) -> None:
    spec = ppo_spec(models)
    ctx = make_context(spec)
    ppo.run(ctx)

    scores = series(workspace, ctx, "ppo/rm_score")
    assert steps(workspace, ctx, "ppo/rm_score") == [1, 2, 3, 4, 5, 6]
    # Measured: 0.30 at the first update, 2.8 and 4.0 at the last two (the policy says "for"
    # more often, and ends a little less often: longer answers hold more of it).
    assert sum(scores[-2:]) / 2 > scores[0] + 1.0, scores
    kl = series(workspace, ctx, "ppo/kl")
    assert kl[0] == pytest.approx(0, abs=1e-5)  # the policy is its reference before any step
    assert kl[-1] > 0.1, kl
    # What PPO maximised, per response: score - penalty for not ending - beta * KL
    # (means over the batch; beta fixed).
    for reward, score, ended, divergence in zip(series(workspace, ctx, "ppo/reward"), scores,
                                                series(workspace, ctx, "ppo/ended_fraction"), kl):
        assert reward == pytest.approx(score - spec.no_eos_penalty * (1 - ended) - spec.beta * divergence, abs=1e-4)
    for key in ("ppo/entropy", "ppo/clip_fraction", "ppo/approx_kl", "ppo/value_loss", "ppo/policy_loss",
                "ppo/response_length", "ppo/ended_fraction", "ppo/value_clip_fraction", "ppo/beta",
                "time/generation", "time/scoring", "time/training"):
        assert len(series(workspace, ctx, key)) == 6, key
    assert all(0 <= f <= 1 for f in series(workspace, ctx, "ppo/clip_fraction"))
    assert all(s > 0 for s in series(workspace, ctx, "time/training"))

    # Rollout samples (2 every 3 updates) with what PPO made of them, and the
    # eval prompts answered at 0, 3 and 6, judged (demo prompts) and scored.
    assert workspace.store.sample_steps(stage_id=ctx.stage_id) == [0, 3, 6]
    rollouts = [s for s in workspace.store.list_samples(stage_id=ctx.stage_id) if s.meta["kind"] == "rollout"]
    assert len(rollouts) == 4
    for sample in rollouts:
        assert {"reward", "rm_score", "kl", "tokens", "finished"} <= set(sample.meta)
        assert sample.prompt in PROMPTS
    assert steps(workspace, ctx, "eval/judge_score") == [0, 3, 6]
    assert steps(workspace, ctx, "eval/rm_score") == [0, 3, 6]

    # final/ is a plain causal LM with its tokenizer and chat template.
    model = AutoModelForCausalLM.from_pretrained(ctx.final_dir)
    tokenizer = AutoTokenizer.from_pretrained(ctx.final_dir)
    assert tokenizer.chat_template and not (ctx.final_dir / "adapter").exists()
    assert model.config.use_cache
    (final,) = [c for c in workspace.store.list_checkpoints(stage_id=ctx.stage_id) if c.is_final]
    assert final.step == 6
    # Its provenance names this run and stage and the SFT folder it started from, like the Trainer's stages.
    record = read_provenance(ctx.final_dir)
    assert record is not None and record["stage"]["name"] == ctx.stage_name and record["run"]["id"] == ctx.run_id
    source = ctx.resolve(ctx.spec.from_)
    assert record["source"] == {"kind": "path", "path": source.value}
    config = workspace.store.get_stage(stage_id=ctx.stage_id).config
    assert config["value"]["starts_from"] == "reward" and config["reward_model"]["shares_policy_tokenizer"]


def test_a_response_that_never_ends_pays_the_penalty(make_context, workspace, models) -> None:
    # One new token: the policy always says a word first, so no response ends.
    spec = ppo_spec(models, updates=1, max_new_tokens=1, no_eos_penalty=2.5, sample_every=1,
                    samples_per_update=4, eval_prompt_count=0)
    ctx = make_context(spec)
    ppo.run(ctx)
    assert series(workspace, ctx, "ppo/ended_fraction") == [0.0]
    [score], [reward], [kl] = (series(workspace, ctx, k) for k in ("ppo/rm_score", "ppo/reward", "ppo/kl"))
    assert reward == pytest.approx(score - 2.5 - spec.beta * kl, abs=1e-5)
    for sample in workspace.store.list_samples(stage_id=ctx.stage_id):
        assert sample.meta["finished"] is False and sample.meta["tokens"] == 1
        assert sample.meta["reward"] == pytest.approx(sample.meta["rm_score"] - 2.5 - spec.beta * sample.meta["kl"],
                                                      abs=1e-3)


def test_cancel_then_resume_replays_the_same_updates(make_context, workspace, models) -> None:
    # Adaptive beta, so the controller's state is part of what must survive.
    spec = ppo_spec(models, updates=4, rollout_batch_size=8, minibatch_size=4, ppo_epochs=2, sample_every=2,
                    adaptive_kl=True, target_kl=0.05, horizon=50, eval_prompt_count=1)
    reference = make_context(spec)
    ppo.run(reference)

    first = make_context(spec, stop_at_step=2)
    with pytest.raises(StageCancelled, match="after update 2 of 4"):
        ppo.run(first)
    saved = workspace.store.list_checkpoints(stage_id=first.stage_id)
    assert [(c.step, c.is_final) for c in saved] == [(2, False)]
    checkpoint = Path(saved[0].path)
    assert {"model.safetensors", "ppo_state.pt", "rng_state_0.pt", "value"} <= {p.name for p in checkpoint.iterdir()}
    assert not first.final_dir.exists()

    resumed = make_context(spec, like=first, resume_from=checkpoint)
    ppo.run(resumed)
    assert workspace.store.get_stage(stage_id=first.stage_id).step == 4
    for key in ("ppo/rm_score", "ppo/kl", "ppo/beta", "ppo/policy_loss", "ppo/value_loss", "ppo/entropy"):
        assert steps(workspace, first, key) == [1, 2, 3, 4], key
        assert series(workspace, first, key) == pytest.approx(series(workspace, reference, key), rel=1e-4,
                                                              abs=1e-6), key
    beta = series(workspace, first, "ppo/beta")
    assert beta[0] == spec.beta and beta[-1] != spec.beta  # the controller moved, and resumed where it was
    # Samples at 0 and 2 before the cancel, 4 after: none twice, the same responses.
    assert workspace.store.sample_steps(stage_id=first.stage_id) == [0, 2, 4]
    assert [s.response for s in workspace.store.list_samples(stage_id=first.stage_id, step=4)] == \
        [s.response for s in workspace.store.list_samples(stage_id=reference.stage_id, step=4)]
    reloaded = AutoModelForCausalLM.from_pretrained(first.final_dir)
    expected = AutoModelForCausalLM.from_pretrained(reference.final_dir)
    for (name, a), (_, b) in zip(reloaded.state_dict().items(), expected.state_dict().items()):
        assert torch.allclose(a, b, atol=1e-6), name


def test_lora_policy_with_ptx(make_context, workspace, models) -> None:
    spec = ppo_spec(models, updates=2, lora=LoraSpec(r=4, alpha=8), learning_rate=1e-2, sample_every=2,
                    ptx_coef=0.5, ptx_data=f"path:{models['ptx']}", eval_prompt_count=0)
    ctx = make_context(spec)
    ppo.run(ctx)
    kl = series(workspace, ctx, "ppo/kl")
    # The reference is the policy with its adapters off: identical before the first step.
    assert kl[0] == pytest.approx(0, abs=1e-5) and kl[1] != pytest.approx(0, abs=1e-4)
    assert len(series(workspace, ctx, "ppo/ptx_loss")) == 2
    config = workspace.store.get_stage(stage_id=ctx.stage_id).config
    assert config["policy"]["reference"] == "the policy with adapters off"
    assert config["policy"]["trainable_parameters"] < config["policy"]["parameters"] / 2

    # final/: the merged model, loadable without peft; final/adapter: the adapter.
    assert json.loads((ctx.final_dir / "adapter" / "adapter_config.json").read_text())["r"] == 4
    merged = AutoModelForCausalLM.from_pretrained(ctx.final_dir)
    start = AutoModelForCausalLM.from_pretrained(models["policy"])
    ids = torch.tensor([[4, 100, 200, 2, 5]])
    with torch.no_grad():
        assert (merged(ids).logits - start(ids).logits).abs().max() > 1e-4  # the adapters were merged in


def keep_models(monkeypatch: pytest.MonkeyPatch) -> list[ppo.Models]:
    """The Models each `ppo.run` loads, to look at them afterwards."""
    kept: list[ppo.Models] = []
    original = ppo.load_models

    def load(*args: Any, **kwargs: Any) -> ppo.Models:
        kept.append(original(*args, **kwargs))
        return kept[-1]

    monkeypatch.setattr(ppo, "load_models", load)
    return kept


def test_activation_checkpointing_trains_in_training_mode_without_dropout(make_context, workspace, models,
                                                                           monkeypatch) -> None:
    """transformers checkpoints a layer only in training mode; PPO's ratio must
    still be 1 at the first step (no dropout), as it is in eval mode."""
    kept = keep_models(monkeypatch)
    spec = ppo_spec(models, activation_checkpointing="on", updates=1, rollout_batch_size=8, minibatch_size=8,
                    ppo_epochs=1, sample_every=1, samples_per_update=0, eval_prompt_count=0)
    ctx = make_context(spec)
    ppo.run(ctx)
    [loaded] = kept
    for model in (loaded.policy, loaded.value.classifier):
        assert model.training and all(layer.gradient_checkpointing for layer in model.base_model.layers)
    assert loaded.reference is not None and not loaded.reference.training
    # One minibatch step per update, taken before any step: the ratio is exactly 1.
    assert series(workspace, ctx, "ppo/clip_fraction") == [0.0]
    assert series(workspace, ctx, "ppo/approx_kl")[0] == pytest.approx(0, abs=1e-6)
    config = workspace.store.get_stage(stage_id=ctx.stage_id).config
    assert config["policy"]["activation_checkpointing"] is True
    assert config["policy"]["reference"] == "a frozen copy (float32)"  # the compute precision on the CPU
    assert config["reward_model"]["held_as"] == "float32"


def test_qlora_wiring_with_a_stand_in_for_bitsandbytes(make_context, workspace, models, monkeypatch) -> None:
    """QLoRA runs on CUDA with bitsandbytes only. Here the quantized loaders
    are stood in for by full-precision ones, to check everything around them:
    the policy and the value network each train adapters on a frozen body
    (the value network its score head too, from zero), a checkpoint holds
    both adapters, a resumed run picks them up, and final/ is merged."""
    from transformers import AutoModelForCausalLM as CausalLM

    monkeypatch.setattr(ppo.quantized, "require", lambda spec, hardware: None)
    monkeypatch.setattr(ppo.quantized, "load_causal_lm",
                        lambda source, setting, hardware, field="quantization": CausalLM.from_pretrained(source.value))
    monkeypatch.setattr(ppo.quantized, "load_scoring_body", lambda source, setting, hardware:
                        AutoModelForSequenceClassification.from_pretrained(source.value, num_labels=1))
    kept = keep_models(monkeypatch)
    spec = ppo_spec(models, lora=LoraSpec(r=4, alpha=8), quantization="4bit", value_from="policy", updates=2,
                    sample_every=2, eval_prompt_count=0, learning_rate=1e-2)
    uninterrupted = make_context(spec)
    ppo.run(uninterrupted)
    kept.clear()
    first = make_context(spec, stop_at_step=1)
    with pytest.raises(StageCancelled, match="after update 1 of 2"):
        ppo.run(first)
    [loaded] = kept
    value = loaded.value.classifier
    trainable = {name for name, p in value.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name or ".score." in name for name in trainable), trainable
    assert any(".score." in name for name in trainable)
    assert loaded.reference is None  # the policy with its adapters off
    assert all("lora_" in name for name, p in loaded.policy.named_parameters() if p.requires_grad)

    [saved] = workspace.store.list_checkpoints(stage_id=first.stage_id)
    value_folder = Path(saved.path) / ppo.VALUE_FOLDER
    assert (value_folder / "adapter_config.json").is_file() and not (value_folder / "model.safetensors").exists()
    assert (Path(saved.path) / "adapter_config.json").is_file()
    head = AutoModelForSequenceClassification.from_pretrained(models["policy"], num_labels=1)
    from peft import PeftModel

    saved_value = PeftModel.from_pretrained(head, str(value_folder))
    assert saved_value.base_model.model.score.modules_to_save["default"].weight.abs().sum() > 0  # it learned

    # Resumed, the second update is the uninterrupted run's: both adapters and the head came back.
    resumed = make_context(spec, like=first, resume_from=Path(saved.path))
    ppo.run(resumed)
    for key in ("ppo/value_loss", "ppo/value_mean", "ppo/policy_loss", "ppo/kl"):
        assert steps(workspace, first, key) == [1, 2], key
        assert series(workspace, first, key) == pytest.approx(series(workspace, uninterrupted, key), rel=1e-4,
                                                              abs=1e-6), key
    assert (resumed.final_dir / "adapter" / "adapter_config.json").is_file()
    AutoModelForCausalLM.from_pretrained(resumed.final_dir)  # merged: plain transformers loads it


def test_a_reward_model_with_its_own_tokenizer(make_context, workspace, models) -> None:
    spec = ppo_spec(models, reward_model=f"path:{models['foreign_reward']}", value_from="policy", updates=1,
                    sample_every=1, samples_per_update=4, eval_prompt_count=0)
    ctx = make_context(spec)
    ppo.run(ctx)
    config = workspace.store.get_stage(stage_id=ctx.stage_id).config
    assert not config["reward_model"]["shares_policy_tokenizer"]

    # Each stored score is what the reward model gives the decoded response,
    # re-tokenised by its own tokenizer in its own chat template.
    tokenizer = AutoTokenizer.from_pretrained(models["foreign_reward"])
    reward_model = AutoModelForSequenceClassification.from_pretrained(models["foreign_reward"])
    samples = workspace.store.list_samples(stage_id=ctx.stage_id)
    assert len(samples) == 4
    for sample in samples:
        text = tokenizer.apply_chat_template([{"role": "user", "content": sample.prompt},
                                              {"role": "assistant", "content": sample.response}], tokenize=False)
        assert text.startswith("USER: ")
        with torch.no_grad():
            expected = reward_model(**tokenizer(text, return_tensors="pt", add_special_tokens=False)).logits.item()
        assert sample.meta["rm_score"] == pytest.approx(expected, abs=1e-3)

    # A value network started from such a reward model would score the wrong tokens.
    with pytest.raises(StageFailed, match="value_from = 'policy'"):
        ppo.run(make_context(ppo_spec(models, reward_model=f"path:{models['foreign_reward']}", updates=1)))


def test_a_causal_lm_is_refused_as_the_reward_model(make_context, models) -> None:
    with pytest.raises(StageFailed, match="not a reward model"):
        ppo.run(make_context(ppo_spec(models, reward_model=f"path:{models['policy']}", value_from="policy")))


@pytest.mark.slow
def test_two_processes_through_accelerate_cancel_and_resume(workspace, models) -> None:
    """The engine's own worker under `accelerate launch` (two gloo processes on
    the CPU): only rank 1 sees the cancel, both stop after the same update
    with one checkpoint (each rank's RNG states in it), and the resumed pair
    finishes. About 40 s: two launches of two processes. (Run by hand, a
    resumed pair's metrics matched an uninterrupted pair's exactly, as the
    single-process test checks.)"""
    spec = ppo_spec(models, updates=3, rollout_batch_size=4, minibatch_size=4, ppo_epochs=2, processes=2,
                    sample_every=3, eval_prompt_count=1)

    def new_stage() -> int:
        run = workspace.store.create_run(
            name="ddp", spec_text="", spec={"stages": {"ppo": spec.model_dump(by_alias=True, mode="json")}},
            spec_path=None, stages=[NewStage(name="ppo", kind="ppo", position=0, parent=None, config={})])
        return workspace.store.list_stages(run_id=run.id)[0].id

    def launch(stage_id: int, *, resume_from: Path | None = None, cancel_rank_1_at: int | None = None) -> None:
        env = child_env({"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"})
        if cancel_rank_1_at is not None:
            env["RLHF_TEST_PPO_CANCEL"] = str(cancel_rank_1_at)
            env["RLHF_STAGE_PLUGINS"] = "tests.stages.ppo_cancel_plugin"  # imported by every rank
        command = worker_command(workspace_root=workspace.root, stage_id=stage_id, processes=2, device_kind="cpu",
                                 resume_from=resume_from)
        subprocess.run(command, env=env, timeout=300, capture_output=True, cwd=Path(__file__).parents[2])

    stopped = new_stage()
    stage_dir = workspace.stage_dir(workspace.store.get_stage(stage_id=stopped).run_id, "ppo")
    launch(stopped, cancel_rank_1_at=1)
    assert workspace.store.get_stage(stage_id=stopped).status == StageStatus.CANCELLED
    checkpoint = find_resume_checkpoint(stage_dir / "checkpoints")  # what `rlhf resume` would pick
    assert checkpoint is not None and checkpoint.name == "checkpoint-1"
    assert {"rng_state_0.pt", "rng_state_1.pt"} <= {p.name for p in checkpoint.iterdir()}
    launch(stopped, resume_from=checkpoint)
    stage = workspace.store.get_stage(stage_id=stopped)
    assert stage.status == StageStatus.SUCCEEDED
    assert stage.config["world_size"] == 2 and stage.config["responses_per_update"] == 8
    for key in ("ppo/rm_score", "ppo/kl", "ppo/policy_loss"):
        assert [int(p.step) for p in workspace.store.metric_series(stage_id=stopped, key=key)] == [1, 2, 3], key
    assert (stage_dir / "final" / "model.safetensors").is_file()

