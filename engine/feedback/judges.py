"""Automatic annotators: a judge that ranks a batch the way a person would.

A judge is any callable `judge(prompt, responses) -> scores`: one number per
response, higher is better. It is named in a spec or on the command line as

- `demo`: the built-in rule-based judge of the demo task (engine/demo/task.py,
  rubric in the README), which also says "both bad" when every response of a
  pair scores 0;
- `module:function`: your own callable, imported from your Python path (a
  reward model, an LLM-as-judge, a regex). It is your code, run as you asked.

A judge may say which prompts it can score (`Judge.reads`): the demo judge
scores only prompts of the demo families, since a score for any other prompt
would be made up; a callable judge is asked about every prompt.

A judge's judgements are recorded as annotator `judge:NAME`, so human and AI
feedback stay apart and every later stage can select either (RLAIF).

The judge sees responses in the same randomised order a person would, so a
judge with a position bias shows it in the store like a person's would.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from engine.errors import UserInputError

Scorer = Callable[[str, Sequence[str]], Sequence[float]]
#: what a judge reads in a prompt (kept in the prompt's meta), or None for a prompt it cannot score
PromptReader = Callable[[str], dict[str, Any] | None]

_CALLABLE = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", re.ASCII)


@dataclass(frozen=True)
class Judge:
    name: str  # as written: demo, or module:function
    score: Scorer
    #: scores at or below this mean "bad": a pair where both are is judged both_bad
    bad_at_or_below: float | None = None
    #: None: the judge scores every prompt and reads nothing in it
    read_prompt: PromptReader | None = None

    @property
    def annotator(self) -> str:
        return f"judge:{self.name}"

    def reads(self, prompt: str) -> dict[str, Any] | None:
        """What the judge makes of `prompt` (the demo judge: {"kind": its task
        family}), or None when it cannot score it."""
        return {} if self.read_prompt is None else self.read_prompt(prompt)


def _demo_scores(prompt: str, responses: Sequence[str]) -> list[float]:
    from engine.demo.task import judge_score

    return [judge_score(prompt, response) for response in responses]


def _demo_reads(prompt: str) -> dict[str, Any] | None:
    from engine.demo.task import parse_task

    task = parse_task(prompt)
    return {"kind": task.kind} if task is not None else None


def is_judge_name(name: str) -> bool:
    """Whether `name` is spelled as a judge: `demo`, or module:function (not
    whether that module imports: that is the stage process's business)."""
    return name == "demo" or _CALLABLE.fullmatch(name) is not None


def load_judge(name: str) -> Judge:
    """The judge called `name`; UserInputError saying what was expected otherwise."""
    if name == "demo":
        return Judge("demo", _demo_scores, bad_at_or_below=0.0, read_prompt=_demo_reads)
    if not is_judge_name(name):
        raise UserInputError(f"judge {name!r}: expected `demo` or a Python callable written module:function")
    module_name, _, function_name = name.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UserInputError(f"judge {name!r}: cannot import module {module_name!r} ({exc})") from exc
    function = getattr(module, function_name, None)
    if not callable(function):
        raise UserInputError(f"judge {name!r}: module {module_name!r} has no callable {function_name!r}")
    return Judge(name, function)
