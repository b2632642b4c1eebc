"""Small judgements for the feedback tests."""

from __future__ import annotations

from engine.feedback import Judgement, Response


def ranked(prompt_key: str, texts: list[str], ranking, *, annotator: str | None = None,
           models: list[str] | None = None, prompt: str | None = None) -> Judgement:
    """A ranking judgement whose response ids are the texts."""
    models = models or [None] * len(texts)
    return Judgement(prompt_key, prompt or f"prompt {prompt_key}",
                     tuple(Response(t, t, m) for t, m in zip(texts, models)), "ranking", ranking,
                     annotator=annotator)


def pairwise(prompt_key: str, a: str, b: str, outcome: str, *, annotator: str | None = None,
             models: tuple[str | None, str | None] = (None, None)) -> Judgement:
    """A pairwise judgement of responses A=a, B=b (ids are the texts)."""
    return Judgement(prompt_key, f"prompt {prompt_key}", (Response(a, a, models[0]), Response(b, b, models[1])),
                     outcome, annotator=annotator)
