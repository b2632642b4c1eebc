"""`rlhf generate`'s engine side: a one-stage sample pipeline built from a
checkpoint and prompts, run by the engine like any other, read back."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from engine import Engine, RunFinished, SpecError, UserInputError
from engine.runtime.jobs import arena_spec, generate_spec, generated_answers, generated_samples, rank_spec, score_spec
from engine.stages.sample.spec import SampleSpec


@pytest.fixture
def model_dirs(tmp_path: Path) -> list[Path]:
    # Only folders are needed to build a spec; test_generate_runs_... writes real models.
    folders = [tmp_path / "a", tmp_path / "b"]
    for folder in folders:
        folder.mkdir()
    return folders


def test_generate_spec_is_a_one_stage_sample_pipeline(model_dirs: list[Path], tmp_path: Path) -> None:
    prompts = ['Say "hi"\n', "Ünïcode \\ and a tab\t"]
    spec = generate_spec("a", prompts, k=3, temperature=0.5, top_p=0.9, max_new_tokens=20, seed=4,
                         base_dir=tmp_path)
    assert spec.name == "generate" and list(spec.stages) == ["generate"]
    stage = spec.stages["generate"]
    assert isinstance(stage, SampleSpec)
    assert stage.models == [f"path:{model_dirs[0]}"]
    assert stage.prompt_texts == prompts  # quotes, escapes and non-ASCII survive the TOML
    assert (stage.responses_per_prompt, stage.temperature, stage.top_p, stage.max_new_tokens, stage.seed) == (
        3, 0.5, 0.9, 20, 4)

    side_by_side = generate_spec([str(d) for d in model_dirs], ["x"], k=2, base_dir=tmp_path)
    stage = side_by_side.stages["generate"]
    assert stage.models == [f"path:{d}" for d in model_dirs]
    assert stage.responses_per_prompt == 4  # k from each


def test_generate_spec_rejects_bad_input(model_dirs: list[Path], tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="5 responses from each of 2 checkpoints make 10 per prompt; at most 9"):
        generate_spec(["a", "b"], ["x"], k=5, base_dir=tmp_path)
    with pytest.raises(UserInputError, match="k must be a whole number of responses, at least 1, got 0"):
        generate_spec("a", ["x"], k=0, base_dir=tmp_path)
    with pytest.raises(UserInputError, match="at least one prompt"):
        generate_spec("a", [], base_dir=tmp_path)
    with pytest.raises(SpecError) as caught:
        generate_spec("./missing", ["x"], base_dir=tmp_path)
    assert caught.value.problems == [
        f"rlhf generate: stage 'generate', field 'from': no such file or folder: {tmp_path / 'missing'} "
        f"(relative paths start at {tmp_path})"
    ]
    with pytest.raises(SpecError, match="field 'temperature': 0 \\(greedy\\)"):
        generate_spec("a", ["x"], k=2, temperature=0, base_dir=tmp_path)
    for value in ("nan", "inf"):
        with pytest.raises(SpecError, match=f"field 'top_p': expected a finite number, got {value}"):
            generate_spec("a", ["x"], top_p=float(value), base_dir=tmp_path)


def test_job_specs_keep_awkward_text_and_leave_unset_fields_out(model_dirs: list[Path], tmp_path: Path) -> None:
    prompts = ["DEL \x7f, escape \x1b, emoji 🦙", "'''", "line\r\nbreak", "[stages.x]"]
    assert generate_spec("a", prompts, base_dir=tmp_path).stages["generate"].prompt_texts == prompts
    people = rank_spec(3, judge=None)
    assert people.stages["rank"].judge is None and people.stages["rank"].batch == "3"
    judged = arena_spec(["a", "b"], prompts="builtin:demo-prompts", judge="demo", temperature=1e-5,
                        base_dir=tmp_path)
    assert judged.stages["rank"].judge == "demo" and judged.stages["sample"].temperature == 1e-5
    # A user's checkpoints are compared on the user's prompts: nothing falls back to the demo's.
    with pytest.raises(SpecError, match="prompts"):
        arena_spec(["a", "b"], judge="demo", base_dir=tmp_path)
    assert score_spec("a", 5, base_dir=tmp_path).stages["score"].batch == "5"


@pytest.fixture
def engine(tmp_path: Path, offline_cpu_env: None, open_engine: Callable[[Path], Engine]) -> Engine:
    return open_engine(tmp_path / "ws")


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_generate_runs_as_an_engine_job_side_by_side(engine: Engine, tmp_path: Path) -> None:
    from tests.tiny_models import save_tiny_model

    a = save_tiny_model(tmp_path / "a", seed=0)
    b = save_tiny_model(tmp_path / "b", seed=1)
    prompts = ["What does zip do?", "Sort a list."]
    run = await engine.submit(generate_spec([str(a), str(b)], prompts, k=2, max_new_tokens=8))
    updates = [u async for u in engine.follow(run.id, poll_seconds=0.2)]
    finished = updates[-1]
    assert isinstance(finished, RunFinished) and finished.status == "succeeded", finished

    answers = await generated_answers(engine, run.id)
    assert [(x.prompt, x.checkpoint) for x in answers] == [
        (p, str(m)) for p in prompts for m in (a, b) for _ in range(2)
    ]
    assert all(0 <= x.tokens <= 8 and isinstance(x.response, str) for x in answers)
    samples = await generated_samples(engine, run.name)
    assert sorted(s.id for s in samples) == [s.id for s in samples] and len(samples) == 8
    (batch,) = engine.store.list_sample_batches(run_id=run.id)
    assert batch.settings["responses_per_prompt"] == 4 and batch.sources == [str(a), str(b)]
