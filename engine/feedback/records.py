"""The records of human feedback, as small frozen dataclasses.

A `Judgement` is what one person said about one prompt's responses; the
other modules turn judgements into what trainers and reports need:
`PreferencePair` (reward model, DPO), `UnpairedExample` (KTO).

Records accept lists and `{"role", "content"}` dicts for convenience but store
tuples and `Message`s, so they are hashable and a record read back from a file
compares equal to the one that was written. Ids are strings (ints are turned
into strings) so they survive a CSV file unchanged.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

from engine.errors import FeedbackFormatError

#: What one judgement of a prompt's responses can say. The pairwise ones
#: (`a_better` ... `both_bad`) name the responses by their place in
#: `Judgement.responses`: A is the first, B the second.
Outcome = Literal["a_better", "b_better", "tie", "both_bad", "ranking", "skipped"]
OUTCOMES: tuple[str, ...] = get_args(Outcome)
PAIRWISE_OUTCOMES: tuple[str, ...] = ("a_better", "b_better", "tie", "both_bad")


@dataclass(frozen=True)
class Message:
    """One turn of a conversation, as chat templates and TRL spell it."""

    role: str
    content: str


#: a conversation: messages in order
Conversation = tuple[Message, ...]
#: a prompt or a response: plain text, or a conversation (TRL's "conversational" form)
Text = str | Conversation
#: a ranking, best first: tiers of indices into the responses; a tier of several is a tie
Ranking = tuple[tuple[int, ...], ...]


def as_text(value: Any) -> Text:
    """`value` as a `Text`: a string stays a string; a sequence of `Message`s or
    of `{"role": str, "content": str}` mappings becomes a tuple of `Message`s
    (other keys of a mapping are dropped). Raises ValueError saying what was
    expected otherwise."""
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        if not value:
            raise ValueError("is an empty conversation; expected a string or a non-empty list of messages")
        messages = []
        for index, item in enumerate(value):
            if isinstance(item, Message):
                messages.append(item)
            elif (
                isinstance(item, Mapping)
                and isinstance(item.get("role"), str)
                and isinstance(item.get("content"), str)
            ):
                messages.append(Message(item["role"], item["content"]))
            else:
                raise ValueError(
                    f"message {index} is {_describe(item)}; expected {{role: str, content: str}}"
                )
        return tuple(messages)
    raise ValueError(f"is {_describe(value)}; expected a string or a list of {{role, content}} messages")


def is_conversation(text: Text) -> bool:
    return not isinstance(text, str)


def text_to_json(text: Text) -> str | list[dict[str, str]]:
    """The JSON (and parquet) shape of a `Text`: a string, or a list of
    `{"role", "content"}` objects."""
    if isinstance(text, str):
        return text
    return [{"role": message.role, "content": message.content} for message in text]


def as_conversation(text: Text, role: str) -> Conversation:
    """`text` as a conversation: plain text becomes one message from `role`
    (prompts are the user's, responses the assistant's)."""
    return (Message(role, text),) if isinstance(text, str) else text


def content_key(text: Text) -> str:
    """A short stable key for a prompt or response, from its content.

    Imported data has no prompt ids, so its pairs are grouped by this key: the
    same prompt (same text, or same messages) gets the same key in every file.
    """
    encoded = json.dumps(text_to_json(text), ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(encoded.encode("utf-8")).hexdigest()[:16]


def as_ranking(value: Any, count: int) -> Ranking:
    """`value` as a full `Ranking` of `count` responses: a sequence, best first,
    whose entries are an index or a list of indices tied with each other;
    every index 0..count-1 exactly once. Raises ValueError otherwise."""
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Sequence) or not value:
        raise ValueError(f"ranking is {_describe(value)}; expected a non-empty list of indices, best first")
    tiers: list[tuple[int, ...]] = []
    for entry in value:
        members = entry if isinstance(entry, (list, tuple)) else [entry]
        if not members:
            raise ValueError("ranking has an empty tie group; expected an index or a list of tied indices")
        for index in members:
            # bool is an int in Python; True as an index is always a mistake
            if isinstance(index, bool) or not isinstance(index, int):
                raise ValueError(f"ranking holds {_describe(index)}; expected response indices (integers)")
            if not 0 <= index < count:
                raise ValueError(f"ranking names response {index}; expected indices 0..{count - 1}")
        tiers.append(tuple(members))
    listed = [index for tier in tiers for index in tier]
    if len(listed) != len(set(listed)):
        raise ValueError("ranking names a response more than once; expected each response exactly once")
    if len(listed) != count:
        missing = sorted(set(range(count)) - set(listed))
        raise ValueError(f"ranking leaves out response(s) {missing}; expected a full order of all {count}")
    return tuple(tiers)


def ranking_to_json(ranking: Ranking) -> list[int | list[int]]:
    """A ranking as written in files: an index per tier, a list for a tie."""
    return [tier[0] if len(tier) == 1 else list(tier) for tier in ranking]


def _describe(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:40]}{'...' if len(text) > 40 else ''}"


def _as_id(value: Any, what: str, *, optional: bool) -> str | None:
    if value is None and optional:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str) and value:
        return value
    raise ValueError(f"{what} is {_describe(value)}; expected a non-empty string")


@dataclass(frozen=True)
class Response:
    """One response shown to the annotator.

    `id` names the response itself (a sample id), not its place on the screen:
    agreement between annotators who saw the responses in different orders is
    computed on ids. `model` is the checkpoint that wrote it, for the arena.
    """

    id: str
    text: Text
    model: str | None = None

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "id", _as_id(self.id, "response id", optional=False))
            object.__setattr__(self, "text", as_text(self.text))
            object.__setattr__(self, "model", _as_id(self.model, "response model", optional=True))
        except ValueError as error:
            raise FeedbackFormatError([f"response {self.id!r}: {error}"]) from None


@dataclass(frozen=True)
class Judgement:
    """What one annotator said about one prompt's responses (a live judgement:
    the caller has already dropped the ones undone or edited since).

    - pairwise outcomes (`a_better`, `b_better`, `tie`, `both_bad`): exactly two
      responses, A first;
    - `ranking`: two or more responses and `ranking`, their full order best
      first (tiers of tied indices allowed, e.g. `[2, [0, 3], 1]`);
    - `skipped`: any responses, no ranking; it yields nothing anywhere.
    """

    prompt_key: str
    prompt: Text
    responses: tuple[Response, ...]
    outcome: Outcome
    ranking: Ranking | None = None
    annotator: str | None = None
    id: str | None = None

    def __post_init__(self) -> None:
        where = f"judgement {self.id}" if self.id is not None else "judgement"
        try:
            object.__setattr__(self, "id", _as_id(self.id, "id", optional=True))
            object.__setattr__(self, "prompt_key", _as_id(self.prompt_key, "prompt_key", optional=False))
            object.__setattr__(self, "annotator", _as_id(self.annotator, "annotator", optional=True))
            object.__setattr__(self, "prompt", as_text(self.prompt))
            responses = tuple(
                r if isinstance(r, Response) else Response(**r) if isinstance(r, Mapping) else r
                for r in self.responses
            )
            if not all(isinstance(r, Response) for r in responses):
                raise ValueError("responses must be Response records or {id, text, model} mappings")
            object.__setattr__(self, "responses", responses)
            if self.outcome not in OUTCOMES:
                raise ValueError(f"outcome {self.outcome!r}; expected one of {', '.join(OUTCOMES)}")
            ids = [r.id for r in responses]
            if len(set(ids)) != len(ids):
                raise ValueError(f"response ids repeat ({ids}); expected distinct responses")
            if self.outcome in PAIRWISE_OUTCOMES and len(responses) != 2:
                raise ValueError(f"outcome {self.outcome} with {len(responses)} responses; expected 2")
            if self.outcome == "ranking":
                if len(responses) < 2:
                    raise ValueError(f"a ranking of {len(responses)} response(s); expected 2 or more")
                if self.ranking is None:
                    raise ValueError("outcome ranking without a ranking; expected the order, best first")
                object.__setattr__(self, "ranking", as_ranking(self.ranking, len(responses)))
            else:
                if not responses:
                    raise ValueError("no responses; expected the responses that were shown")
                if self.ranking is not None:
                    raise ValueError(f"a ranking with outcome {self.outcome}; expected none (or outcome ranking)")
        except (ValueError, TypeError) as error:
            raise FeedbackFormatError([f"{where}: {error}"]) from None

    def tiers(self) -> Ranking | None:
        """The judgement as tiers of response indices, best first, or None
        when it orders nothing (`both_bad`, `skipped`). A pairwise preference
        is a ranking of two; a tie is one tier of two."""
        if self.outcome == "ranking":
            return self.ranking
        return {
            "a_better": ((0,), (1,)),
            "b_better": ((1,), (0,)),
            "tie": ((0, 1),),
        }.get(self.outcome)


@dataclass(frozen=True)
class PreferencePair:
    """One preference: `chosen` over `rejected` for `prompt`, the row of a TRL
    preference dataset. `group` keeps a prompt's pairs together (the
    judgement's prompt key; for imported data, `content_key(prompt)`), so a
    trainer can put all C(K,2) pairs of a ranking in one batch as InstructGPT
    did. `margin` is None under the `drop` tie policy."""

    group: str
    prompt: Text
    chosen: Text
    rejected: Text
    margin: float | None = None

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "group", _as_id(self.group, "group", optional=False))
            for name in ("prompt", "chosen", "rejected"):
                object.__setattr__(self, name, as_text(getattr(self, name)))
            if self.margin is not None:
                object.__setattr__(self, "margin", float(self.margin))
        except (ValueError, TypeError) as error:
            raise FeedbackFormatError([f"preference pair: {error}"]) from None


@dataclass(frozen=True)
class UnpairedExample:
    """One row of KTO's unpaired format: a completion marked desirable (True)
    or undesirable (False) for its prompt."""

    group: str
    prompt: Text
    completion: Text
    label: bool

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "group", _as_id(self.group, "group", optional=False))
            object.__setattr__(self, "prompt", as_text(self.prompt))
            object.__setattr__(self, "completion", as_text(self.completion))
            if not isinstance(self.label, bool):
                raise ValueError(f"label is {_describe(self.label)}; expected true or false")
        except ValueError as error:
            raise FeedbackFormatError([f"unpaired example: {error}"]) from None


#: who a judgement may come from: people (any annotator not `judge:` or `import:`),
#: judges (`judge:NAME`), imported files (`import:FILE`), or everyone
AnnotatorKind = Literal["all", "people", "judges", "imported"]
AUTOMATIC_PREFIXES = ("judge:", "import:")


def is_person(annotator: str) -> bool:
    """A person's judgement, not a judge's (`judge:NAME`) or an imported file's (`import:FILE`)."""
    return not annotator.startswith(AUTOMATIC_PREFIXES)
