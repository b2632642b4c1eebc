"""The demo's data is a default only for the demo's models (issue 13).

A stage whose model is a built-in preset (directly, or through the stages it
comes from) may leave its data, prompts and eval prompts out and gets the
demo task's; a stage on a model of the user's own must name its data, and
its eval answers are to prompts held out of that data, judged only by a
judge it names.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from engine import SpecError, parse_spec
from engine.stages.common.data_loading import held_out_prompts, hold_out_prompts


def load(text: str, root: Path):
    (root / "rm").mkdir(exist_ok=True)  # a reward model's folder (the spec only checks that it exists)
    (root / "mine").mkdir(exist_ok=True)  # a model of the user's own
    return parse_spec(text, source="p.toml", base_dir=root)


def problems(text: str, root: Path) -> list[str]:
    (root / "rm").mkdir(exist_ok=True)
    (root / "mine").mkdir(exist_ok=True)
    with pytest.raises(SpecError) as caught:
        load(text, root)
    return caught.value.problems


def test_a_demo_model_gets_the_demo_data_through_its_stages(tmp_path: Path) -> None:
    spec = load('[stages.sft]\nkind = "sft"\n\n[stages.ppo]\nkind = "ppo"\nfrom = "sft"\nreward_model = "./rm"\n'
                '\n[stages.answers]\nkind = "sample"\nfrom = ["sft", "ppo"]\n', tmp_path)
    assert spec.stages["sft"].data == "builtin:demo-instructions"
    assert spec.stages["ppo"].prompts == "builtin:demo-instructions"
    assert spec.stages["answers"].prompts == "builtin:demo-prompts"
    # Eval answers: held out of the stage's data, no judge, unless named (even on the demo).
    assert spec.stages["sft"].eval_prompts is None and spec.stages["sft"].eval_judge is None


@pytest.mark.parametrize(("table", "field"), [
    ('kind = "sft"\nfrom = "./mine"', "data"),
    ('kind = "pretrain"\nfrom = "org/model"', "data"),
    ('kind = "ppo"\nfrom = "./mine"\nreward_model = "./rm"', "prompts"),
    ('kind = "rloo"\nfrom = "./mine"\nreward_model = "./rm"', "prompts"),
    ('kind = "grpo"\nfrom = "./mine"\njudges = ["demo"]', "prompts"),
    ('kind = "sample"\nfrom = ["builtin:llama-4m", "./mine"]', "prompts"),
], ids=["sft", "pretrain", "ppo", "rloo", "grpo", "sample-with-one-own-model"])
def test_a_model_of_your_own_must_name_its_data(tmp_path: Path, table: str, field: str) -> None:
    [line] = problems(f"[stages.s]\n{table}\n", tmp_path)
    assert line.startswith(f"p.toml: stage 's', field '{field}': required for a model of your own: ")


def test_a_wrong_from_is_reported_alone(tmp_path: Path) -> None:
    # No "required" beside it: whether the model is the demo's cannot be told.
    assert problems('[stages.s]\nkind = "ppo"\nfrom = "nostage"\nreward_model = "./rm"\n', tmp_path) == [
        "p.toml: stage 's', field 'from': unknown stage 'nostage' (stages in this file: s)"]


@pytest.mark.parametrize("judge", ["demo", "my_pkg.judges:score"])
def test_eval_judge_names_a_judge(tmp_path: Path, judge: str) -> None:
    spec = load(f'[stages.sft]\nkind = "sft"\neval_judge = "{judge}"\n', tmp_path)
    assert spec.stages["sft"].eval_judge == judge


def test_a_judge_spelled_wrong_is_one_line(tmp_path: Path) -> None:
    assert problems('[stages.sft]\nkind = "sft"\neval_judge = "my judge"\n', tmp_path) == [
        "p.toml: stage 'sft', field 'eval_judge': expected `demo` or a Python callable written module:function, "
        "got the string 'my judge'"]


def test_held_out_prompts_are_the_users_questions_once_each() -> None:
    examples = [
        {"prompt": [{"role": "user", "content": "What colour is a plum?"}],
         "completion": [{"role": "assistant", "content": "Purple."}]},
        {"prompt": [{"role": "user", "content": "What colour is a plum?"}],
         "completion": [{"role": "assistant", "content": "Dark purple."}]},
        {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "And a lime?"},
                      {"role": "assistant", "content": "Green."}]},
        {"text": "plain text asks nothing"},
    ]
    assert held_out_prompts(examples, source="path:/data/chats.jsonl") == [
        {"text": "What colour is a plum?", "source": "path:/data/chats.jsonl", "reference": "Purple."},
        {"text": "And a lime?", "source": "path:/data/chats.jsonl", "reference": None},
    ]


def test_an_online_stage_holds_out_at_most_a_tenth_and_never_practises_on_it() -> None:
    rows = [{"text": f"q{i}"} for i in range(50)]
    practice, held = hold_out_prompts(rows, 8, seed=0)
    assert len(held) == 5 and len(practice) == 45
    assert not {r["text"] for r in held} & {r["text"] for r in practice}
    assert hold_out_prompts(rows, 8, seed=0) == (practice, held)  # the seed decides, so a resume agrees
    assert hold_out_prompts(rows[:1], 8, seed=0) == (rows[:1], [])  # one prompt: nothing to spare
    assert hold_out_prompts(rows, 0, seed=0) == (rows, [])  # eval_prompt_count = 0: none
