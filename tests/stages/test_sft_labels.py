"""Which tokens carry the loss, for every data format: the trainer the sft
stage builds is asked for its prepared rows, and the labels are decoded.

No training here: building the trainer tokenises the data and stops."""

from __future__ import annotations

import json
from pathlib import Path

from engine.stages.common import setup as runtime
from engine.stages.common.context import Source
from engine.stages.common.generation import format_prompt
from engine.stages.common.tokenizer import CHAT_TEMPLATE, load_tokenizer
from engine.stages.sft import stage as sft
from engine.stages.sft.spec import SFTSpec

CPU = runtime.choose_runtime("cpu")
END = "<|end|>"


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def prepared(make_context, data: Path, **fields) -> tuple[list[tuple[str, str]], object]:
    """(whole sequence, the tokens that carry loss) for every training row."""
    spec = SFTSpec(from_="builtin:llama-1m", data=f"path:{data}", eval_fraction=0.2,
                   eval_prompt_count=0, **fields)
    trainer, _ = sft.build_trainer(make_context(spec), CPU)
    tokenizer = trainer.processing_class
    rows = []
    for row in trainer.train_dataset:
        learned = [t for t, label in zip(row["input_ids"], row["labels"]) if label != -100]
        assert [label for label in row["labels"] if label != -100] == learned  # labels are the inputs
        rows.append((tokenizer.decode(row["input_ids"]), tokenizer.decode(learned)))
    return rows, tokenizer


QA = [(f"What is {a} + {a}?", str(2 * a)) for a in range(1, 6)]


def test_prompt_completion_learns_the_completion_and_its_end(tmp_path: Path, make_context) -> None:
    data = write_jsonl(tmp_path / "pc.jsonl", [{"prompt": q, "completion": a} for q, a in QA])
    rows, tokenizer = prepared(make_context, data)
    assert len(rows) == 4  # one of five prompts held out for the eval loss
    for whole, learned in rows:
        question, answer = next((q, a) for q, a in QA if q in whole)
        # The prompt is wrapped exactly as generation wraps it later.
        assert whole == format_prompt(tokenizer, question) + answer + END
        assert learned == answer + END


def test_completion_only_loss_off_learns_every_token(tmp_path: Path, make_context) -> None:
    data = write_jsonl(tmp_path / "pc.jsonl", [{"prompt": q, "completion": a} for q, a in QA])
    rows, _ = prepared(make_context, data, completion_only_loss=False)
    assert all(whole == learned for whole, learned in rows)


def test_alpaca_learns_the_output(tmp_path: Path, make_context) -> None:
    data = write_jsonl(tmp_path / "alpaca.jsonl", [
        {"instruction": "Double the number.", "input": str(i), "output": str(2 * i)} for i in range(5)
    ])
    rows, tokenizer = prepared(make_context, data)
    for whole, learned in rows:
        number = whole.split("\n\n")[1].split(END)[0]
        assert whole == format_prompt(tokenizer, f"Double the number.\n\n{number}") + str(2 * int(number)) + END
        assert learned == str(2 * int(number)) + END


def conversation(i: int) -> list[dict]:
    return [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": f"Name {i}?"},
        {"role": "assistant", "content": f"first answer {i}"},
        {"role": "user", "content": "And again?"},
        {"role": "assistant", "content": f"second answer {i}"},
    ]


def test_messages_learn_every_assistant_turn_and_nothing_else(tmp_path: Path, make_context) -> None:
    data = write_jsonl(tmp_path / "chat.jsonl", [{"messages": conversation(i)} for i in range(5)])
    rows, tokenizer = prepared(make_context, data)
    for whole, learned in rows:
        i = int(whole.split("Name ")[1][0])
        assert whole == tokenizer.apply_chat_template(conversation(i), tokenize=False)
        assert learned == f"first answer {i}{END}second answer {i}{END}"


def test_messages_without_generation_markers_learn_the_last_answer(
    tmp_path: Path, make_context, shared_cache: Path
) -> None:
    # A tokenizer whose template lacks {% generation %} markers, and that TRL cannot patch.
    tokenizer = load_tokenizer(Source("builtin", "bpe-4k"), shared_cache)
    tokenizer.chat_template = CHAT_TEMPLATE.replace("{% generation %}", "").replace("{% endgeneration %}", "")
    tokenizer.save_pretrained(tmp_path / "plain-template")
    data = write_jsonl(tmp_path / "chat.jsonl", [{"messages": conversation(i)} for i in range(5)])
    rows, _ = prepared(make_context, data, tokenizer=f"path:{tmp_path / 'plain-template'}")
    for whole, learned in rows:
        i = int(whole.split("Name ")[1][0])
        assert learned == f"second answer {i}{END}"


def test_text_learns_every_token_and_the_end(tmp_path: Path, make_context) -> None:
    texts = [f"Document number {i} says hello." for i in range(5)]
    data = write_jsonl(tmp_path / "text.jsonl", [{"text": t} for t in texts])
    rows, _ = prepared(make_context, data)
    for whole, learned in rows:
        assert whole in {t + END for t in texts}  # no chat template around plain text
        assert learned == whole
