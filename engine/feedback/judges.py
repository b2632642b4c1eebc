"""Automatic annotators: a judge that ranks a batch the way a person would.

A judge is any callable `judge(prompt, responses) -> scores`: one number per
response, higher is better. It is named in a spec or on the command line as

- `demo`: the built-in rule-based judge of the demo task (engine/demo/task.py,
  rubric in the README), which also says "both bad" when every response of a
  pair scores 0;
- `module:function`: your own callable, imported from your Python path (a
  reward model, an LLM-as-judge, a regex). It is your code, run as you asked.

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

from engine.errors import UserInputError

Scorer = Callable[[str, Sequence[str]], Sequence[float]]

_CALLABLE = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", re.ASCII)


@dataclass(frozen=True)
class Judge:
    name: str  # as written: demo, or module:function
    score: Scorer
    #: scores at or below this mean "bad": a pair where both are is judged both_bad
    bad_at_or_below: float | None = None

    @property
    def annotator(self) -> str:
        return f"judge:{self.name}"


def _demo_scores(prompt: str, responses: Sequence[str]) -> list[float]:
    from engine.demo.task import judge_score

    return [judge_score(prompt, response) for response in responses]


def load_judge(name: str) -> Judge:
    """The judge called `name`; UserInputError saying what was expected otherwise."""
    if name == "demo":
        return Judge("demo", _demo_scores, bad_at_or_below=0.0)
    if not _CALLABLE.fullmatch(name):
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
