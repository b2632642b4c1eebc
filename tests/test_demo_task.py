"""The demo task: deterministic generation, disjoint splits, and the judge's
rubric on hand-computed cases (engine/demo/task.py's docstring)."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

import pytest

from engine.demo import task as demo_task
from engine.demo.task import (
    KINDS,
    Task,
    demo_instructions,
    demo_prompts,
    generate_tasks,
    judge_compare,
    judge_rank,
    judge_score,
    parse_task,
    split_of,
)

# --- generating -------------------------------------------------------------------


def test_generation_is_deterministic_and_seeded() -> None:
    assert generate_tasks(50, seed=3) == generate_tasks(50, seed=3)
    assert generate_tasks(50, seed=3) != generate_tasks(50, seed=4)
    assert generate_tasks(20, seed=3) == generate_tasks(50, seed=3)[:20]  # a prefix is a prefix


def test_families_take_turns() -> None:
    tasks = generate_tasks(7 * 20)
    assert [t.kind for t in tasks[:7]] == list(KINDS)
    assert set(Counter(t.kind for t in tasks).values()) == {20}


def test_train_and_heldout_never_share_a_prompt() -> None:
    train = {t.prompt for t in generate_tasks(4000, split="train")}
    heldout = {t.prompt for t in generate_tasks(200, split="heldout")}
    assert not train & heldout
    assert all(split_of(p) == "train" for p in train)
    assert all(split_of(p) == "heldout" for p in heldout)


def test_heldout_prompts_are_distinct_and_every_family_has_some() -> None:
    heldout = generate_tasks(200, split="heldout")
    assert len({t.prompt for t in heldout}) == 200
    assert min(Counter(t.kind for t in heldout).values()) >= 15
    everything = sum(split_of(p) == "heldout" for f in demo_task.FAMILIES for p, _ in f.enumerate())
    assert len(generate_tasks(everything, split="heldout")) == everything
    with pytest.raises(ValueError, match=f"holds {everything} distinct prompts"):
        generate_tasks(everything + 1, split="heldout")
    # Training data repeats a family once it is used up, as epochs do, and stays balanced.
    train = generate_tasks(4000)
    assert len({t.prompt for t in train}) < 4000
    assert set(Counter(t.kind for t in train[:7 * 500]).values()) == {500}


def test_the_split_is_about_one_in_five() -> None:
    prompts = [p for family in demo_task.FAMILIES for p, _ in family.enumerate()]
    share = sum(split_of(p) == "heldout" for p in prompts) / len(prompts)
    assert 0.17 < share < 0.23


def test_builtin_data_sets() -> None:
    rows = demo_instructions()
    assert len(rows) == demo_task.DEMO_INSTRUCTIONS == 4000
    assert set(rows[0]) == {"prompt", "completion", "kind"}
    prompts = demo_prompts()
    assert len(prompts) == demo_task.DEMO_PROMPTS
    assert set(prompts[0]) == {"prompt", "reference", "kind"}  # for asking, not for training
    assert not {r["prompt"] for r in rows} & {p["prompt"] for p in prompts}


def test_some_demonstrations_add_small_talk_that_the_judge_marks_down() -> None:
    rows = demo_instructions(2000)
    scores = [judge_score(r["prompt"], r["completion"]) for r in rows]
    chatty = [r for r, score in zip(rows, scores) if score != 1.0]
    # Every demonstration is right; a share of them (the same on every machine)
    # say more than the answer, and only those lose points, all the same 0.8.
    assert abs(len(chatty) / len(rows) - demo_task.CHATTY_SHARE) < 0.05
    assert {score for score in scores if score != 1.0} == {0.8}
    by_prompt = {t.prompt: t.reference for t in generate_tasks(2000)}
    assert all(r["completion"].startswith(by_prompt[r["prompt"]]) for r in chatty)  # the answer comes first
    assert demo_instructions(2000) == rows
    assert all(judge_score(r["prompt"], r["completion"]) == 1.0 for r in demo_instructions(200, chatty_share=0))


def test_generated_answers_are_right() -> None:
    by_prompt = {t.prompt: t for t in generate_tasks(7 * 60) + generate_tasks(7 * 15, split="heldout")}
    examples = {
        "What is 3 + 5?": "8",
        "Write c a t in capital letters.": "C A T",
        "Write cat in capital letters.": "CAT",
        "Reverse the letters: c a t": "t a c",
        "What month comes after December?": "January",
        "What day comes after Sunday?": "Monday",
        "How many letters are in the word house?": "5",
        "Sort these numbers: 7, 2, 5": "2, 5, 7",
        "Say dog 3 times.": "dog dog dog",
        "How much is 2 plus 2?": "4",
        "Name the day that comes after Friday.": "Saturday",
        "How many letters does garden have?": "6",
        "Write the word owl 2 times.": "owl owl",
        "Put o w l in reverse order.": "l w o",
        "Turn c a t into capital letters.": "C A T",
    }
    for prompt, answer in examples.items():
        task = parse_task(prompt)
        assert task is not None and task.reference == answer, prompt
    for task in by_prompt.values():
        assert parse_task(task.prompt) == task, task


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="split"):
        generate_tasks(3, split="test")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        generate_tasks(-1)


def test_module_is_torch_free() -> None:
    code = ("import sys, engine.demo.task; "
            "print([m for m in ('torch', 'transformers', 'trl', 'datasets') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --- parsing prompts it did not generate ----------------------------------------------


@pytest.mark.parametrize(
    ("prompt", "reference", "kind"),
    [
        ("What is 123 + 456?", "579", "add"),
        ("what is 2+2", "4", "add"),
        ("Add 40 and 2.", "42", "add"),
        ("Uppercase: banana", "BANANA", "uppercase"),
        ("Write h e l l o in upper case.", "H E L L O", "uppercase"),
        ("Reverse the letters: h e l l o", "o l l e h", "reverse"),
        ("Spell hello backwards.", "olleh", "reverse"),
        ("What letter comes after Q?", "R", "next"),
        ("Which number follows 999?", "1000", "next"),
        ("Count the letters in elephant.", "8", "count"),
        ("Sort these numbers: 12, 3, 45, 6", "3, 6, 12, 45", "sort"),
        ("Repeat hello 7 times.", "hello hello hello hello hello hello hello", "repeat"),
    ],
)
def test_parses_prompts_of_the_families(prompt: str, reference: str, kind: str) -> None:
    assert parse_task(prompt) == Task(prompt, reference, kind)


@pytest.mark.parametrize(
    "prompt", ["Tell me a joke.", "What letter comes after z?", "Say hi 500 times.", "Sort these numbers: 3", ""]
)
def test_other_prompts_are_not_tasks_and_score_zero(prompt: str) -> None:
    assert parse_task(prompt) is None
    assert judge_score(prompt, "anything") == 0.0


def test_a_given_reference_judges_any_prompt() -> None:
    assert judge_score("Tell me a joke.", "ha ha", reference="ha ha") == 1.0
    assert judge_score("Tell me a joke.", "", reference="ha ha") == 0.0


# --- the rubric, by hand ---------------------------------------------------------------

ADD = "What is 3 + 5?"


@pytest.mark.parametrize(
    ("prompt", "response", "score"),
    [
        # exact, after trimming spaces, quotes and one trailing period
        (ADD, "8", 1.0),
        (ADD, " 8. ", 1.0),
        (ADD, '"8"', 1.0),
        ("What month comes after March?", "april", 1.0),  # case is not the point here
        # written differently
        (ADD, "eight", 0.9),
        ("Reverse the letters: c a t", "tac", 0.9),
        ("Sort these numbers: 7, 2, 5", "2 5 7", 0.9),
        ("Say dog 3 times.", "dog, dog, dog", 0.9),
        # right answer plus other words: up to 4 words 0.8, more 0.6
        (ADD, "The answer is 8.", 0.8),
        ("Write cat in capital letters.", "The word is CAT", 0.8),
        ("Write c a t in capital letters.", "The answer is C A T", 0.8),
        (ADD, "I think that the answer must be 8", 0.6),
        # hedging between candidates
        (ADD, "8 or 9", 0.4),
        (ADD, "3 + 5 = 8", 0.4),
        ("What month comes after March?", "April or May", 0.4),
        # numbers: off by one 0.5, by two 0.25, else 0.1
        (ADD, "9", 0.5),
        (ADD, "7", 0.5),
        (ADD, "10", 0.25),
        (ADD, "12", 0.1),
        # uppercase: letters compared without spaces; not in capitals 0.5; capitals in
        # the wrong order 0.4 (0.2 not in capitals); others 0.3 x similarity
        ("Write c a t in capital letters.", "CAT", 0.9),
        ("Write c a t in capital letters.", "c a t", 0.5),
        ("Write cat in capital letters.", "Cat", 0.5),
        ("Write c a t in capital letters.", "T A C", 0.4),
        ("Write c a t in capital letters.", "t a c", 0.2),
        ("Write cat in capital letters.", "CAR", 0.2),  # similarity 2/3
        # sequences: the item itself or the one after the answer 0.3, another 0.1
        ("What letter comes after c?", "c", 0.3),
        ("What letter comes after c?", "e", 0.3),
        ("What letter comes after c?", "x", 0.1),
        # items in the wrong order: 0.3 + 0.3 x share in place (c a t vs t a c: 'a' in place)
        ("Reverse the letters: c a t", "c a t", 0.4),
        ("Sort these numbers: 7, 2, 5", "7, 2, 5", 0.3),
        # some of the items: 0.3 x common / longer (2 of 3 -> 0.2; 3 of 4 -> 0.225)
        ("Sort these numbers: 7, 2, 5", "2, 5", 0.2),
        ("Sort these numbers: 7, 2, 5", "2, 5, 7, 9", 0.225),
        # repeat: 0.6 x (1 - |k - n| / n)
        ("Say dog 3 times.", "dog dog", 0.4),
        ("Say dog 3 times.", "dog dog dog dog", 0.4),
        ("Say dog 3 times.", "dog", 0.2),
        ("Say dog 3 times.", "cat cat cat", 0.0),
        # nothing
        (ADD, "", 0.0),
        (ADD, "   ", 0.0),
        (ADD, "cat", 0.0),
    ],
)
def test_rubric(prompt: str, response: str, score: float) -> None:
    assert judge_score(prompt, response) == pytest.approx(score, abs=1e-4)


def test_repeating_the_prompt_halves_the_score() -> None:
    # "What is 3 + 5?" holds 3 and 5 (two numbers, the answer not among them): 0.1, halved
    assert judge_score(ADD, "What is 3 + 5?") == pytest.approx(0.05)
    # The whole prompt back: 3 of its 6 items are the answer's (0.3 x 3/6), halved.
    assert judge_score("Reverse the letters: c a t", "Reverse the letters: c a t") == pytest.approx(0.075)
    assert judge_score("Reverse the letters: c a t", "Reverse the letters: c a t") < judge_score(
        "Reverse the letters: c a t", "c a t")


def test_rambling_halves_the_score() -> None:
    long = "well " * 20 + "8"  # the answer, plus 20 words: 0.6, halved
    assert judge_score(ADD, long) == pytest.approx(0.3)


def test_scores_stay_in_range_on_odd_input() -> None:
    for response in ["\n\n", "8" * 500, "🙂", "-8", "8.5", "CAT" * 100, "<|end|>"]:
        for task in generate_tasks(14):
            assert 0.0 <= judge_score(task.prompt, response) <= 1.0


def test_every_reference_scores_one_and_beats_a_wrong_answer() -> None:
    for task in generate_tasks(7 * 10) + generate_tasks(7 * 10, split="heldout"):
        assert judge_score(task.prompt, task.reference) == 1.0
        assert judge_score(task.prompt, task.reference + " and more words here") < 1.0


# --- ranking --------------------------------------------------------------------------


def test_rank_orders_best_first_and_keeps_ties_in_order() -> None:
    responses = ["12", "8", "9", "", "The answer is 8", "cat", "7"]
    # scores:    0.1  1.0  0.5  0    0.8                0      0.5
    assert judge_rank(ADD, responses) == [1, 4, 2, 6, 0, 3, 5]
    assert judge_rank(ADD, []) == []


def test_compare() -> None:
    assert judge_compare(ADD, "8", "9") == "a"
    assert judge_compare(ADD, "9", "8") == "b"
    assert judge_compare(ADD, "9", "7") == "tie"
    assert judge_compare("Tell me a joke.", "x", "y") == "tie"
