"""The preference-optimisation family beside DPO (kto, orpo, cpo/SimPO) and
DPO's loss variants: each trains on the tiny model and its loss falls, each
reports what DPO reports; KTO reads the judgements that make no pair (both
bad, a KTO file's single thumbs); the specs refuse what their losses cannot use."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from transformers import AutoModelForCausalLM

from engine.demo import task as demo_task
from engine.errors import SpecError, UserInputError
from engine.spec import parse_spec
from engine.stages import registry
from engine.stages.common.unpaired_feedback import load_unpaired
from engine.stages.cpo.spec import CPOSpec
from engine.stages.kto.spec import KTOSpec
from tests.tiny_models import save_tiny_model


def separable_pairs(path: Path, count: int = 40) -> Path:
    """Demo-task prompts, each with its right answer chosen over a refusal."""
    tasks = demo_task.generate_tasks(count, seed=5)
    path.write_text("".join(json.dumps({"prompt": t.prompt, "chosen": t.reference, "rejected": "I do not know."})
                            + "\n" for t in tasks))
    return path


#: kind, the settings that pick its loss; each a few steps on the ~100k-parameter model
RUNS = [
    ("dpo", {"loss_type": "robust", "label_smoothing": 0.1}),
    ("kto", {}),
    ("orpo", {}),
    ("cpo", {"loss_type": "simpo", "cpo_alpha": 0.0, "beta": 2.0}),
]


@pytest.mark.slow
@pytest.mark.parametrize(("kind", "objective"), RUNS, ids=[f"{k}-{o.get('loss_type', k)}" for k, o in RUNS])
def test_each_kind_trains_and_reports_what_dpo_reports(kind: str, objective: dict[str, Any], make_context,
                                                       workspace, tmp_path) -> None:
    parent = save_tiny_model(tmp_path / "parent", train_steps=5)
    pairs = separable_pairs(tmp_path / "pairs.jsonl", count=24)
    entry = registry.stage_kind(kind)
    assert entry is not None
    spec = entry.spec.model_validate({
        "from": f"path:{parent}", "preferences": f"path:{pairs}", "max_steps": 6, "batch_size": 4,
        "learning_rate": 2e-3, "warmup_steps": 0, "eval_every": 6, "save_every": 100, "eval_prompt_count": 0,
        "eval_fraction": 0.25, "max_length": 64, **objective,
    })
    ctx = make_context(spec)
    module = __import__(entry.module, fromlist=["run"])
    module.run(ctx)

    def series(key: str) -> list[float]:
        return [p.value for p in workspace.store.metric_series(stage_id=ctx.stage_id, key=key)]

    loss = series("train/loss")
    assert len(loss) == 6 and sum(loss[-2:]) < sum(loss[:2]), loss
    # The held-out log-prob margin, measured the same way for every kind, at the start and the end.
    assert [p.step for p in workspace.store.metric_series(stage_id=ctx.stage_id, key="eval/logp_margin")] == [0, 6]
    keys = set(workspace.store.stage_metric_keys(stage_id=ctx.stage_id))
    assert {"eval/loss", "train/rewards/chosen", "eval/rewards/chosen"} <= keys, keys
    assert "eval/perplexity" not in keys
    AutoModelForCausalLM.from_pretrained(ctx.final_dir)  # a plain model folder


def judged_pairs(store: Any, outcomes: list[str]) -> int:
    """One prompt per outcome, two answers each (`good i` shown first), judged by `ann`."""
    ids = store.add_prompts([{"text": f"question {i}"} for i in range(len(outcomes))])
    batch = store.create_sample_batch(name="b", settings={}, sources=["m"])
    store.add_samples([{"prompt_id": pid, "batch_id": batch.id, "response": f"{word} {i}"}
                       for i, pid in enumerate(ids) for word in ("good", "poor")])
    feedback = store.feedback
    feedback.items_from_batch(batch_id=batch.id, needed=1)
    while (item := feedback.next_item(batch_id=batch.id, annotator="ann")) is not None:
        shown = sorted(item.shown)  # the "good" answer (added first) as A
        feedback.judge(item_id=item.id, annotator="ann", outcome=outcomes[ids.index(item.prompt_id)], shown=shown)
    return batch.id


def test_kto_reads_both_bad_and_single_thumbs(make_context, workspace, tmp_path) -> None:
    judged_pairs(workspace.store, ["a_better", "both_bad", "tie"])
    thumbs = tmp_path / "thumbs.jsonl"
    thumbs.write_text(json.dumps({"prompt": "q", "completion": "fine", "label": True}) + "\n"
                      + json.dumps({"prompt": "r", "completion": "rude", "label": False}) + "\n")
    spec = KTOSpec.model_validate({"from": "hub:org/m", "batches": ["b"], "preferences": f"path:{thumbs}",
                                   "eval_fraction": 0})
    data = load_unpaired(make_context(spec), spec)

    found = sorted((e.completion, e.label) for e in data.train)
    # A better: its A good, its B bad; both bad: both bad; the tie: nothing; the file: one thumb each.
    words = {text.split()[0] if isinstance(text, str) else "" for text, _ in found}
    assert len(found) == 6 and words == {"good", "poor", "fine", "rude"}, found
    assert data.summary["both_bad_judgements"] == 1
    assert (data.summary["desirable"], data.summary["undesirable"]) == (2, 4)
    assert data.summary["annotators"] == {"ann": 2, "import:thumbs.jsonl": 2}  # the tie made no verdict
    both_bad = [e for e in data.train if isinstance(e.completion, str) and e.completion.endswith(" 1")]
    assert [e.label for e in both_bad] == [False, False]


def test_kto_with_nothing_good_or_bad_says_so(make_context, workspace) -> None:
    judged_pairs(workspace.store, ["tie"])
    spec = KTOSpec.model_validate({"from": "hub:org/m", "batches": ["b"]})
    with pytest.raises(UserInputError, match=r"no judgements to learn from: .* \(ties and skips mark none\)"):
        load_unpaired(make_context(spec), spec)


def stage_problems(table: str) -> list[str]:
    text = f'[stages.s]\nfrom = "org/model"\npreferences = "rank"\n{table}\n[stages.rank]\nkind = "rank"\nbatch = "b"\n'
    with pytest.raises(SpecError) as info:
        parse_spec(text, source="t.toml", base_dir=Path.cwd())
    return info.value.problems


@pytest.mark.parametrize(("table", "expected"), [
    ('kind = "kto"\nbatch_size = 1', "field 'batch_size'"),
    ('kind = "kto"\nloss_type = "sigmoid"', "field 'loss_type'"),
    ('kind = "cpo"\nloss_type = "alphapo"', "field 'loss_type'"),
    ('kind = "cpo"\nsimpo_gamma = 1.0', 'simpo_gamma is read only by loss_type = "simpo"'),
    ('kind = "cpo"\nloss_type = "hinge"\nlabel_smoothing = 0.1', "read only by the sigmoid and simpo losses"),
    ('kind = "orpo"\nbeta = 0', "field 'beta'"),
    ('kind = "orpo"\n[stages.s.trainer]\nbeta = 0.2', "set `beta` on the stage itself"),
])
def test_settings_the_new_kinds_cannot_use_are_refused(table: str, expected: str) -> None:
    [line] = stage_problems(table)
    assert expected in line, line


def test_simpo_is_cpo_with_the_simpo_loss() -> None:
    spec = parse_spec('[stages.s]\nkind = "cpo"\nfrom = "org/m"\npreferences = "rank"\nloss_type = "simpo"\n'
                      'cpo_alpha = 0\n[stages.s.trainer]\ndataloader_num_workers = 1\n'
                      '[stages.rank]\nkind = "rank"\nbatch = "b"\n', source="t.toml", base_dir=Path.cwd())
    stage = spec.stages["s"]
    assert isinstance(stage, CPOSpec) and (stage.loss_type, stage.cpo_alpha) == ("simpo", 0.0)
    assert list(spec.dependencies["s"]) == ["rank"]
