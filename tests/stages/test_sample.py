"""The sample stage against a real store: K responses per prompt from several
models in one batch with its settings and provenance, the round-robin plan,
cancelling between generate calls, and resuming to the same responses."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from engine.errors import StageCancelled
from engine.stages.common.context import StageContext
from engine.stages.sample import stage as sample
from engine.stages.sample.spec import SampleSpec
from tests.tiny_models import MAX_POSITIONS, save_lora_adapter, save_tiny_model

# --- the plan (no model) -------------------------------------------------------------


@pytest.mark.parametrize(("k", "models"), [(4, 1), (4, 2), (3, 2), (2, 3), (9, 4)])
def test_round_robin_gives_each_prompt_k_responses(k: int, models: int) -> None:
    prompts = 7
    plans = [sample.plan_calls(prompts, k, models, m, batch_size=5, seed=0) for m in range(models)]
    per_prompt = Counter()
    for plan in plans:
        for call in plan:
            assert len(call.prompts) * call.k <= 5 or len(call.prompts) == 1  # batch_size responses a call
            for p in call.prompts:
                per_prompt[p] += call.k
    assert per_prompt == {p: k for p in range(prompts)}
    # Shared evenly: over the prompts no model writes more than one response more than another.
    written = [sum(len(c.prompts) * c.k for c in plan) for plan in plans]
    assert max(written) - min(written) <= prompts
    if k % models == 0:
        assert all(c.k == k // models for plan in plans for c in plan)
    seeds = [c.seed for plan in plans for c in plan]
    assert len(set(seeds)) == len(seeds)  # no two calls draw the same random numbers


# --- the stage ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    base = save_tiny_model(root / "base", seed=0)
    return {
        "base": base,
        "other": save_tiny_model(root / "other", seed=1),
        "adapter": save_lora_adapter(base, root / "adapter"),
    }


@pytest.mark.slow
def test_k_responses_from_two_checkpoints_land_in_one_batch(make_context, workspace, models, tmp_path) -> None:
    prompts = ["Return the sum of a list.", "What does zip do?", "Sort a dict by value.",
               "What does zip do?",  # repeated: answered once
               "word " * MAX_POSITIONS,  # no room left for a response: left out
               "Open a file for reading."]
    data = tmp_path / "prompts.jsonl"
    data.write_text("".join(json.dumps({"question": p, "reference": f"ref {i}"}) + "\n"
                            for i, p in enumerate(prompts)))
    spec = SampleSpec(
        from_=[f"path:{models['base']}", f"path:{models['adapter']}"], prompts=f"path:{data}",
        prompt_field="question", responses_per_prompt=4, temperature=0.9, top_p=0.9, max_new_tokens=12,
        seed=7, batch_size=4, batch_name="ranking-1",
    )
    ctx = make_context(spec)
    sample.run(ctx)
    store = workspace.store

    (batch,) = store.list_sample_batches(run_id=ctx.run_id)
    assert batch.name == "ranking-1" and batch.stage_id == ctx.stage_id
    assert batch.settings == {"temperature": 0.9, "top_p": 0.9, "max_new_tokens": 12, "seed": 7,
                              "responses_per_prompt": 4}
    assert batch.sources == [str(models["base"]), str(models["adapter"])]

    samples = store.list_samples(batch_id=batch.id)
    kept = ["Return the sum of a list.", "What does zip do?", "Sort a dict by value.", "Open a file for reading."]
    assert Counter(s.prompt for s in samples) == {p: 4 for p in kept}
    # Two models, K = 4: each writes two responses to every prompt.
    assert Counter((s.prompt, s.checkpoint) for s in samples) == {
        (p, str(m)): 2 for p in kept for m in (models["base"], models["adapter"])
    }
    for s in samples:
        assert (s.run_id, s.stage_id, s.batch_id, s.step) == (ctx.run_id, ctx.stage_id, batch.id, None)
        assert set(s.meta) == {"tokens", "finished", "seconds", "seed", "call"}
        assert 0 <= s.meta["tokens"] <= 12 and s.meta["seconds"] > 0
    assert len({s.response for s in samples}) > 10  # sampled, not one answer repeated
    (prompt,) = store.get_prompts([samples[0].prompt_id])
    assert (prompt.text, prompt.source, prompt.reference) == (kept[0], f"path:{data}", "ref 0")

    stage = store.get_stage(stage_id=ctx.stage_id)
    assert (stage.step, stage.total) == (16, 16)
    assert stage.config["settings"]["responses_per_prompt"] == 4
    assert [m["responses"] for m in stage.config["models"]] == [8, 8]
    keys = {key for _, key in store.metric_keys(run_id=ctx.run_id)}
    assert {"sample/tokens_per_second", "sample/mean_length", "sample/finished_fraction"} <= keys
    logs = [line.message for line in store.logs_since(run_id=ctx.run_id)]
    assert any(line.startswith("prompts: 1 left out, too long") for line in logs)

    # The output folder: the batch for people and other tools.
    lines = [json.loads(line) for line in (ctx.final_dir / "samples.jsonl").read_text().splitlines()]
    assert [(r["prompt"], r["response"], r["checkpoint"]) for r in lines] == [
        (s.prompt, s.response, s.checkpoint) for s in samples
    ]
    assert lines[0]["settings"] == batch.settings
    manifest = json.loads((ctx.final_dir / "manifest.json").read_text())
    assert (manifest["prompts"], manifest["responses"], manifest["batch_id"]) == (4, 16, batch.id)
    assert manifest["tokens"] == sum(s.meta["tokens"] for s in samples) and manifest["tokens_per_second"] > 0


class StopAfterFirstCall(StageContext):
    """A cancel that arrives once the first generate call's responses are stored."""

    def log_samples(self, samples, **kwargs) -> None:
        super().log_samples(samples, **kwargs)
        self.request_stop()


@pytest.mark.slow
def test_cancel_between_calls_keeps_what_was_stored_and_resume_finishes_the_same(
    make_context, workspace, models, tmp_path
) -> None:
    data = tmp_path / "prompts.txt"  # one prompt a paragraph
    data.write_text("First prompt\n\nSecond prompt,\nin two lines\n\nThird prompt\n\nFourth prompt\n\nFifth prompt\n")
    spec = SampleSpec(from_=[f"path:{models['base']}", f"path:{models['other']}"], prompts=f"path:{data}",
                      responses_per_prompt=3, max_new_tokens=8, batch_size=4, seed=3)
    first_call = sample.plan_calls(5, 3, 2, 0, batch_size=4, seed=3)[0]
    assert len(first_call.prompts) * first_call.k == 4  # prompts 1 and 3, two responses each

    reference = make_context(spec)
    sample.run(reference)
    expected = sorted((s.prompt, s.checkpoint, s.response)
                      for s in workspace.store.list_samples(stage_id=reference.stage_id))
    assert len(expected) == 15

    first = make_context(spec, context_class=StopAfterFirstCall)
    with pytest.raises(StageCancelled, match="stopped after 4 of 15 responses"):
        sample.run(first)
    (batch,) = [b for b in workspace.store.list_sample_batches() if b.stage_id == first.stage_id]
    assert len(workspace.store.list_samples(batch_id=batch.id)) == 4  # the first call's
    assert not first.final_dir.exists()

    # Resumed (a fresh context for the same stage): the same batch, the rest
    # of the responses, and the very responses an uninterrupted run wrote.
    resumed = make_context(spec, like=first)
    sample.run(resumed)
    assert [b.id for b in workspace.store.list_sample_batches() if b.stage_id == first.stage_id] == [batch.id]
    got = sorted((s.prompt, s.checkpoint, s.response) for s in workspace.store.list_samples(batch_id=batch.id))
    assert got == expected
    assert workspace.store.get_stage(stage_id=first.stage_id).step == 15
    assert len((first.final_dir / "samples.jsonl").read_text().splitlines()) == 15


@pytest.mark.slow
def test_inline_prompts_and_one_answer(make_context, workspace, models) -> None:
    spec = SampleSpec(from_=f"path:{models['base']}", prompts=["Hi", "Hello", "Hi"], responses_per_prompt=1,
                      temperature=0, max_new_tokens=5)
    ctx = make_context(spec)
    sample.run(ctx)
    samples = workspace.store.list_samples(stage_id=ctx.stage_id)
    assert [s.prompt for s in samples] == ["Hi", "Hello"]
    assert {p.source for p in workspace.store.get_prompts([s.prompt_id for s in samples])} == {"inline:pretrain"}
    assert "prompts: 1 repeated prompts left out" in [x.message for x in workspace.store.logs_since(run_id=ctx.run_id)]
