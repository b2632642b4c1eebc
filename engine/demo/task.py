"""The built-in demo task: short instructions with checkable answers, and a judge.

Torch-free and deterministic: the SFT stage trains on it, the console and
`rlhf rank --auto` rank with the judge, and reward/PPO/DPO use it as an
automatic annotator. A person checks an answer at a glance, and a model of
a few million parameters learns these families in a few hundred steps on a
CPU: the world is small on purpose (24 words, sums of 1..5, three numbers
from 1..5), because a tiny model learns each fact from dozens of examples.
Words are spelled out letter by letter where the task is about letters, so
each letter is its own token.

| kind        | prompt                                      | reference         |
| ----------- | ------------------------------------------- | ----------------- |
| `add`       | What is 3 + 5?                              | 8                 |
| `uppercase` | Write c a t in capital letters.             | C A T             |
| `reverse`   | Reverse the letters: c a t                  | t a c             |
| `next`      | What month comes after March?               | April             |
| `count`     | How many letters are in the word house?     | 5                 |
| `sort`      | Sort these numbers: 4, 1, 3                 | 1, 3, 4           |
| `repeat`    | Say dog 3 times.                            | dog dog dog       |

`generate_tasks(n, seed, split)` draws them: every prompt belongs to exactly
one split, "train" or "heldout" (one in five), decided by a hash of its text,
so a held-out prompt never appears in training data. Held-out means the
exact prompt was never trained on; the same problem may have been seen in
another phrasing ("Add 3 and 5." vs "What is 3 + 5?").

The demonstrations (`builtin:demo-instructions`) are right but uneven, as
people's are: most of them add small talk after the answer ("8. Hope this
helps!", CHATTY_SHARE), which the judge marks down to 0.8. SFT imitates the
demonstrators, small talk included; the rankings are what teach a policy
that the bare answer is better. That is the demo's alignment step: PPO and
DPO learn from preferences something the demonstrations did not show.

The judge is a pure function of (prompt, response): it parses the prompt to
recover the reference answer, so it also judges prompts of these families
that it did not generate ("What is 123 + 456?", "Say hello 7 times.").
A prompt it cannot parse scores 0 unless a reference is given.

Rubric of `judge_score` (a float in [0, 1], higher is better)
--------------------------------------------------------------
Responses are compared after trimming spaces, quotes and one trailing
period; letter case is ignored except in `uppercase` tasks, where it is the
point.

    1.0   the exact answer
    0.9   the right answer written differently: "tac" for "t a c",
          "CAT" for "C A T", "2 5 7" for "2, 5, 7", "dog, dog, dog" for
          "dog dog dog", "five" for "5"
    0.8   the right answer plus up to 4 other words ("The answer is 8")
    0.6   the right answer plus more words than that
    0.5   a number off by one; the right letters not in capitals
    0.4   a hedge: the right answer among other candidates ("8 or 9")
    0.3-0.6 the right items in the wrong order (0.3 + 0.3 x share in place)
    0.4   capitals in the wrong order (uppercase tasks; 0.2 not in capitals)
    0-0.3 other capitals: 0.3 x similarity (0.15 x when not in capitals)
    0.6 x (1 - |k - n| / n)  a word repeated k times instead of n
    0.3   the neighbour of the right item in its sequence (the letter, day
          or month itself, or the one after the right one)
    0.25  a number off by two
    0-0.3 some of the right items (0.3 x share of items in common)
    0.1   an answer of the right kind that is wrong (another number, day...)
    0.0   an empty response, or nothing of the right kind

Two penalties multiply any score below 1:

    x0.5  repeating the prompt (most of its words that are not part of the
          answer appear in the response)
    x0.5  rambling: more than 2 x (words in the answer) + 10 words

`judge_rank(prompt, responses)` orders responses best first (ties keep their
order) and `judge_compare(prompt, a, b)` says which of two is better.
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
import random
import re
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

Split = Literal["train", "heldout"]

#: one prompt in HELDOUT_EVERY is held out (by the hash of its text)
HELDOUT_EVERY = 5


@dataclass(frozen=True)
class Task:
    prompt: str
    reference: str
    kind: str


# --- the families ---------------------------------------------------------------
#
# Each family lists every prompt it can generate (small enough to enumerate),
# in a fixed order, and parses prompts back into a reference answer.

#: Small on purpose: a tiny model learns each fact (a word's letters, a sum)
#: from dozens of examples, so a small world is what it can learn in minutes.
WORDS = (
    "bee", "box", "bus", "cat", "cup", "dog", "egg", "fox", "hat", "owl", "pen", "sun",
    "bird", "book", "fish", "frog", "lamp", "milk", "moon", "rain", "ship", "snow", "star", "tree",
)
#: longer words too, so that letter counts are not always 3 or 4
COUNT_WORDS = (*WORDS, "apple", "green", "house", "water", "garden", "rabbit", "window", "yellow")
ADD_MAX = 5  # add: a + b with a, b in 1..ADD_MAX
SORT_MAX = 5  # sort: three different numbers from 1..SORT_MAX
REPEAT_TIMES = (2, 3)
LETTERS = "abcdefghijklmnopqrstuvwxyz"
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December")

_INT = r"(-?\d{1,9})"
_WORD = r"([A-Za-z]+)"


@dataclass(frozen=True)
class Family:
    kind: str
    enumerate: Callable[[], Iterator[tuple[str, str]]]  # every (prompt, reference), fixed order
    parse: Callable[[str], str | None]  # a cleaned prompt -> its reference, or None


def _templated(
    templates: Sequence[str], params: Sequence[dict], answer: Callable[..., str]
) -> Iterator[tuple[str, str]]:
    for p in params:
        for template in templates:
            yield template.format(**p), answer(**p)


def _first_match(patterns: Sequence[re.Pattern[str]], prompt: str) -> re.Match[str] | None:
    for pattern in patterns:
        found = pattern.fullmatch(prompt)
        if found:
            return found
    return None


def _patterns(*sources: str) -> tuple[re.Pattern[str], ...]:
    return tuple(re.compile(s, re.IGNORECASE) for s in sources)


# add: "What is 3 + 5?" -> "8"

_ADD_TEMPLATES = ("What is {a} + {b}?", "Add {a} and {b}.", "What is the sum of {a} and {b}?",
                  "Compute {a} + {b}.", "How much is {a} plus {b}?", "What do you get when you add {a} and {b}?")
_ADD = _patterns(
    rf"(?:what is |what's |compute |calculate |how much is )?{_INT} ?(?:\+|plus) ?{_INT} ?(?:=|\?)?",
    rf"add {_INT} (?:and|to) {_INT}",
    rf"what is the sum of {_INT} and {_INT}\??",
    rf"what do you get when you add {_INT} (?:and|to) {_INT}\??",
)


def _parse_add(prompt: str) -> str | None:
    found = _first_match(_ADD, prompt)
    return str(int(found[1]) + int(found[2])) if found else None


ADD = Family(
    "add",
    lambda: _templated(
        _ADD_TEMPLATES,
        [{"a": a, "b": b} for a in range(1, ADD_MAX + 1) for b in range(1, ADD_MAX + 1)],
        lambda a, b: str(a + b),
    ),
    _parse_add,
)

# uppercase: "Write cat in capital letters." -> "CAT"

_UPPER_TEMPLATES = ("Write {s} in capital letters.", "Uppercase the letters: {s}", "Capitalize: {s}",
                    "Make {s} uppercase.", "Write {s} in upper case.", "Turn {s} into capital letters.")
_LETTERS = r"([a-z]+(?: [a-z])*)"  # a word, or letters with spaces between them
_UPPER = _patterns(
    rf"write {_LETTERS} in (?:capital letters|upper ?case)",
    rf"(?:uppercase|capitalize)(?: the letters)?:? {_LETTERS}",
    rf"make {_LETTERS} upper ?case",
    rf"turn {_LETTERS} into (?:capital letters|upper ?case)",
)


def _parse_upper(prompt: str) -> str | None:
    found = _first_match(_UPPER, prompt)
    return found[1].upper() if found else None


UPPERCASE = Family(
    "uppercase",
    lambda: _templated(_UPPER_TEMPLATES, [{"s": " ".join(w)} for w in WORDS], lambda s: s.upper()),
    _parse_upper,
)

# reverse: "Reverse the letters: c a t" -> "t a c" (a word without spaces -> reversed word)

_REVERSE_TEMPLATES = ("Reverse the letters: {s}", "Write {s} backwards.", "Spell {s} backwards.",
                      "Reverse: {s}", "Put {s} in reverse order.", "Write the letters {s} in reverse.")
_REVERSE = _patterns(
    r"reverse(?: the letters)?: ?(.+)",
    r"(?:write|spell) (.+) backwards",
    r"put (.+) in reverse order",
    r"write the letters (.+) in reverse(?: order)?",
)


def _parse_reverse(prompt: str) -> str | None:
    found = _first_match(_REVERSE, prompt)
    if not found:
        return None
    items = found[1].split()
    if len(items) == 1:
        return items[0][::-1] if len(items[0]) > 1 else None
    return " ".join(reversed(items))


REVERSE = Family(
    "reverse",
    lambda: _templated(_REVERSE_TEMPLATES, [{"s": " ".join(w)} for w in WORDS],
                       lambda s: " ".join(reversed(s.split()))),
    _parse_reverse,
)

# next: "What letter comes after c?" -> "d" (also day, month, number)

_SEQUENCES: dict[str, tuple[str, ...]] = {
    "letter": tuple(LETTERS),
    "day": DAYS,
    "month": MONTHS,
}
_NEXT_TEMPLATES = ("What {unit} comes after {x}?", "Which {unit} follows {x}?", "What is the {unit} after {x}?",
                   "Name the {unit} that comes after {x}.")
_NEXT = _patterns(
    r"what (letter|day|month|number) comes after (\S+?)\??",
    r"which (letter|day|month|number) (?:follows|comes after) (\S+?)\??",
    r"what is the (letter|day|month|number) after (\S+?)\??",
    r"name the (letter|day|month|number) (?:that comes )?after (\S+?)",
)


def _next_item(unit: str, item: str, step: int = 1) -> str | None:
    """The item `step` places after `item` in its sequence; days and months wrap, letters do not."""
    if unit == "number":
        return str(int(item) + step) if re.fullmatch(r"-?\d{1,9}", item) else None
    sequence = _SEQUENCES[unit]
    lowered = [s.lower() for s in sequence]
    if item.lower() not in lowered:
        return None
    index = lowered.index(item.lower()) + step
    if unit == "letter":
        if not 0 <= index < len(sequence):
            return None
        following = sequence[index]
        return following.upper() if item.isupper() else following
    return sequence[index % len(sequence)]


def _parse_next(prompt: str) -> str | None:
    found = _first_match(_NEXT, prompt)
    return _next_item(found[1].lower(), found[2]) if found else None


def _next_params() -> list[dict]:
    params = [{"unit": "letter", "x": c} for c in LETTERS[:-1]]
    params += [{"unit": "day", "x": d} for d in DAYS]
    params += [{"unit": "month", "x": m} for m in MONTHS]
    return params


NEXT = Family(
    "next",
    lambda: _templated(_NEXT_TEMPLATES, _next_params(), lambda unit, x: _next_item(unit, x) or ""),
    _parse_next,
)

# count: "How many letters are in the word house?" -> "5"

_COUNT_TEMPLATES = ("How many letters are in the word {w}?", "Count the letters in {w}.",
                    "How many letters does {w} have?", "Count the letters of the word {w}.",
                    "What is the number of letters in {w}?")
_COUNT = _patterns(
    rf"how many letters are (?:there )?in(?: the word)? {_WORD}\??",
    rf"count the letters (?:in|of)(?: the word)? {_WORD}",
    rf"how many letters does(?: the word)? {_WORD} have\??",
    rf"what is the number of letters in(?: the word)? {_WORD}\??",
)


def _parse_count(prompt: str) -> str | None:
    found = _first_match(_COUNT, prompt)
    return str(len(found[1])) if found else None


COUNT = Family(
    "count",
    lambda: _templated(_COUNT_TEMPLATES, [{"w": w} for w in COUNT_WORDS], lambda w: str(len(w))),
    _parse_count,
)

# sort: "Sort these numbers: 7, 2, 5" -> "2, 5, 7"

_SORT_TEMPLATES = ("Sort these numbers: {s}", "Sort from smallest to largest: {s}",
                   "Put these numbers in order: {s}")
_SORT = _patterns(
    r"sort (?:these|the) numbers(?: from smallest to largest)?: ?(.+)",
    r"sort from smallest to largest: ?(.+)",
    r"put (?:these|the) numbers in order: ?(.+)",
)


def _parse_sort(prompt: str) -> str | None:
    found = _first_match(_SORT, prompt)
    if not found:
        return None
    items = [t for t in re.split(r"[,\s]+", found[1].strip()) if t]
    if len(items) < 2 or not all(re.fullmatch(r"-?\d{1,9}", t) for t in items):
        return None
    return ", ".join(str(v) for v in sorted(int(t) for t in items))


SORT = Family(
    "sort",
    lambda: _templated(
        _SORT_TEMPLATES,
        [{"s": ", ".join(map(str, p))} for p in itertools.permutations(range(1, SORT_MAX + 1), 3)],
        lambda s: ", ".join(str(v) for v in sorted(int(t) for t in s.split(", "))),
    ),
    _parse_sort,
)

# repeat: "Say dog 3 times." -> "dog dog dog"

_REPEAT_TEMPLATES = ("Say {w} {n} times.", "Repeat {w} {n} times.", "Write {w} {n} times.",
                     "Write the word {w} {n} times.")
_REPEAT = _patterns(rf"(?:say|repeat|write)(?: the word)? {_WORD} (\d{{1,2}}) times")
MAX_REPEAT = 20


def _parse_repeat(prompt: str) -> str | None:
    found = _first_match(_REPEAT, prompt)
    if not found or not 1 <= int(found[2]) <= MAX_REPEAT:
        return None
    return " ".join([found[1]] * int(found[2]))


REPEAT = Family(
    "repeat",
    lambda: _templated(_REPEAT_TEMPLATES, [{"w": w, "n": n} for w in WORDS for n in REPEAT_TIMES],
                       lambda w, n: " ".join([w] * n)),
    _parse_repeat,
)

FAMILIES: tuple[Family, ...] = (ADD, UPPERCASE, REVERSE, NEXT, COUNT, SORT, REPEAT)
KINDS = tuple(f.kind for f in FAMILIES)


# --- generating -------------------------------------------------------------------


def split_of(prompt: str) -> Split:
    """Which split a prompt belongs to, by the hash of its text: the same on every machine."""
    digest = hashlib.sha256(prompt.encode("utf-8")).digest()
    return "heldout" if int.from_bytes(digest[:8], "big") % HELDOUT_EVERY == 0 else "train"


def generate_tasks(n: int, seed: int = 0, split: Split = "train", *, repeat: bool | None = None) -> list[Task]:
    """`n` tasks of one split, the same for the same arguments.

    The families take turns (the first seven tasks are one of each), and
    within a family the prompts come in an order shuffled by `seed`.

    With `repeat` (the default for "train"), a family starts over once its
    prompts are used, so any prefix stays balanced: training data repeats
    its examples as epochs do. Without it (the default for "heldout"), a
    family that runs out leaves the rotation and no prompt appears twice;
    asking for more than the split holds is an error."""
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")
    if n < 0:
        raise ValueError(f"n must be at least 0, got {n}")
    if repeat is None:
        repeat = split == "train"
    pools = []
    for family in FAMILIES:
        pool = [Task(p, r, family.kind) for p, r in family.enumerate() if split_of(p) == split]
        random.Random(f"{seed}:{split}:{family.kind}").shuffle(pool)
        pools.append(pool)
    if repeat:
        cycles = itertools.cycle([itertools.cycle(pool) for pool in pools])
        return [next(next(cycles)) for _ in range(n)]
    available = sum(len(pool) for pool in pools)
    if n > available:
        raise ValueError(f"the {split} split holds {available} distinct prompts; asked for {n}")
    turns = [t for row in itertools.zip_longest(*pools) for t in row if t is not None]
    return turns[:n]


#: sizes of the built-in data sets (engine/spec/catalog.py)
DEMO_INSTRUCTIONS = 4000
DEMO_PROMPTS = 200


#: Demonstrators are uneven, as the people who write SFT data are: this share
#: of the demonstrations add small talk after the right answer ("8. Hope this
#: helps!"), which the judge scores 0.8 against 1.0 for the bare answer. SFT
#: imitates the mix, and the preferences teach what the demonstrations could
#: not: that the bare answer is better. More than half, so that small talk is
#: the SFT model's likeliest continuation after an answer and shows in its
#: low-temperature answers too. It comes after the answer, which still follows
#: the prompt directly (small talk before it made SFT's answers much less
#: often right, measured), and depends on no prompt, so a policy that learns
#: to stop after the answer does so on prompts it never saw too.
CHATTY_SHARE = 0.7
#: the small talk after an answer: at most 4 words, none of them a letter,
#: number, day or month that could compete with the answer itself
CHATTER = (
    "{}. Hope this helps!",
    "{} is the answer.",
    "{}. Easy one!",
    "{}. Anything else?",
    "{}, that is it.",
    "{}. Glad to help!",
)


def chatty(answer: str, rng: random.Random) -> str:
    """The right answer followed by small talk (the judge scores it 0.8)."""
    return rng.choice(CHATTER).format(answer)


def demo_instructions(
    n: int = DEMO_INSTRUCTIONS, seed: int = 0, chatty_share: float = CHATTY_SHARE
) -> list[dict[str, str]]:
    """`builtin:demo-instructions`: prompt/completion pairs of the train split,
    `chatty_share` of them with small talk after the answer."""
    rng = random.Random(f"{seed}:chatter")
    rows = []
    for task in generate_tasks(n, seed, "train"):
        completion = chatty(task.reference, rng) if rng.random() < chatty_share else task.reference
        rows.append({"prompt": task.prompt, "completion": completion, "kind": task.kind})
    return rows


def demo_prompts(n: int = DEMO_PROMPTS, seed: int = 0) -> list[dict[str, str]]:
    """`builtin:demo-prompts`: held-out prompts with their reference answers
    (a `reference` column, not `completion`: they are for asking, not training)."""
    return [{"prompt": t.prompt, "reference": t.reference, "kind": t.kind}
            for t in generate_tasks(n, seed, "heldout")]


def parse_task(prompt: str) -> Task | None:
    """The task a prompt asks for, recovered from its text; None if it is not
    one of the demo families."""
    text = _clean(prompt)
    for family in FAMILIES:
        reference = family.parse(text)
        if reference:
            return Task(prompt, reference, family.kind)
    return None


# --- judging ----------------------------------------------------------------------


def judge_score(prompt: str, response: str, reference: str | None = None) -> float:
    """How good `response` is as an answer to `prompt`, in [0, 1] (rubric above).

    `reference` overrides the answer parsed from the prompt; with neither (a
    prompt of no demo family and no reference) the score is 0."""
    task = parse_task(prompt)
    if reference is None:
        if task is None:
            return 0.0
        reference = task.reference
    kind = task.kind if task is not None else None
    answer, text = _clean(reference), _clean(response)
    if not text:
        return 0.0
    if _same(text, answer, kind):
        return 1.0
    score = max(_closeness(kind, text, answer, prompt), _answer_with_extra_words(kind, text, answer))
    if _repeats_prompt(prompt, text, answer):
        score *= 0.5
    if len(text.split()) > 2 * len(answer.split()) + 10:
        score *= 0.5
    return round(score, 4)


def judge_rank(prompt: str, responses: Sequence[str]) -> list[int]:
    """Indices of `responses`, best first; equal scores keep their order."""
    scores = [judge_score(prompt, r) for r in responses]
    return sorted(range(len(responses)), key=lambda i: -scores[i])


def judge_compare(prompt: str, a: str, b: str) -> Literal["a", "b", "tie"]:
    """Which of two responses the judge prefers."""
    score_a, score_b = judge_score(prompt, a), judge_score(prompt, b)
    if score_a == score_b:
        return "tie"
    return "a" if score_a > score_b else "b"


def _clean(text: str) -> str:
    """Trimmed, single-spaced, without surrounding quotes or one trailing period."""
    text = " ".join(text.split())
    text = text.strip("\"'`")
    if text.endswith(".") and not text.endswith(".."):
        text = text[:-1].rstrip()
    return text


def _same(text: str, answer: str, kind: str | None) -> bool:
    return text == answer if kind == "uppercase" else text.lower() == answer.lower()


def _words(text: str) -> list[str]:
    return re.findall(r"[A-Za-z]+|-?\d+", text)


def _numbers(text: str) -> list[int]:
    return [int(t) for t in re.findall(r"(?<![\w.])-?\d+(?!\w|\.\d)", text)]


def _is_number(text: str) -> bool:
    return re.fullmatch(r"-?\d+", text) is not None


def _closeness(kind: str | None, text: str, answer: str, prompt: str) -> float:
    """Partial credit for a response that is not exactly the answer."""
    if _is_number(answer):
        return _number_closeness(text, int(answer))
    if kind == "uppercase":
        return _uppercase_closeness(text, answer)
    if kind == "next":
        return _sequence_neighbour(text, answer, prompt)
    if kind == "repeat":
        return _repeat_closeness(text, answer)
    if kind in ("reverse", "sort") or len(answer.split()) > 1:
        return _items_closeness(text, answer)
    return 0.3 * difflib.SequenceMatcher(None, text.lower(), answer.lower()).ratio()


_NUMBER_WORDS = {
    w: i for i, w in enumerate(
        [
            "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
            "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen",
            "twenty",
        ]
    )
}


def _number_closeness(text: str, answer: int) -> float:
    if _NUMBER_WORDS.get(text.lower()) == answer:
        return 0.9  # "five" for "5": right, written differently
    numbers = _numbers(text)
    if not numbers:
        return 0.0
    if len(numbers) > 1:
        return 0.4 if answer in numbers else 0.1
    distance = abs(numbers[0] - answer)
    # Distance 0 with other words around is the extra-words rule's business.
    return {0: 0.0, 1: 0.5, 2: 0.25}.get(distance, 0.1)


def _uppercase_closeness(text: str, answer: str) -> float:
    """Letters compared without spaces: "CAT" for "C A T" is only spaced differently."""
    letters, wanted = "".join(re.findall(r"[A-Za-z]", text)), answer.replace(" ", "")
    if not letters:
        return 0.0
    if letters == wanted:
        return 0.9
    if letters.upper() == wanted:
        return 0.5  # the right letters, not in capitals
    if sorted(letters.upper()) == sorted(wanted):
        return 0.4 if letters.isupper() else 0.2  # the right letters in the wrong order
    similarity = difflib.SequenceMatcher(None, letters.upper(), wanted).ratio()
    return (0.3 if letters.isupper() else 0.15) * similarity


def _sequence_neighbour(text: str, answer: str, prompt: str) -> float:
    """`next` tasks naming a letter, day or month."""
    found = _first_match(_NEXT, _clean(prompt))
    if not found:
        return 0.0
    unit, item = found[1].lower(), found[2]
    members = {s.lower() for s in _SEQUENCES[unit]}
    named = [w for w in _words(text) if w.lower() in members]
    if not named:
        return 0.0
    if len(named) > 1:
        return 0.4 if answer.lower() in (w.lower() for w in named) else 0.1
    neighbours = {item.lower(), (_next_item(unit, item, 2) or "").lower()}
    return 0.3 if named[0].lower() in neighbours else 0.1


def _repeat_closeness(text: str, answer: str) -> float:
    word, n = answer.split()[0].lower(), len(answer.split())
    tokens = [t.lower() for t in re.findall(r"[A-Za-z]+|\d+", text)]
    k = tokens.count(word)
    if k == 0:
        return 0.0
    share = max(0.0, 1 - abs(k - n) / n)
    if k == len(tokens):
        return 0.9 if k == n else 0.6 * share  # only the word: commas or case differ, or the count
    return 0.3 * share


def _items(text: str) -> list[str]:
    tokens = [t for t in re.split(r"[,\s]+", text.lower()) if t]
    if len(tokens) == 1 and not _is_number(tokens[0]):
        return list(tokens[0])  # "tac" for "t a c"
    return tokens


def _items_closeness(text: str, answer: str) -> float:
    got, wanted = _items(text), _items(answer)
    if got == wanted:
        return 0.9  # the right items, written differently
    if Counter(got) == Counter(wanted):
        in_place = sum(g == w for g, w in zip(got, wanted)) / len(wanted)
        return 0.3 + 0.3 * in_place
    common = sum((Counter(got) & Counter(wanted)).values())
    return 0.3 * common / max(len(got), len(wanted))


def _answer_with_extra_words(kind: str | None, text: str, answer: str) -> float:
    """The exact answer inside a longer response: 0.8 with up to 4 more words,
    0.6 with more; 0 when the rest of the response competes with it (another
    number, another day, the repeated word once more)."""
    flags = 0 if kind == "uppercase" else re.IGNORECASE
    found = re.search(rf"(?<!\w){re.escape(answer)}(?!\w)", text, flags)
    if not found:
        return 0.0
    rest = (text[: found.start()] + " " + text[found.end():]).lower()
    if _competes(rest, answer):
        return 0.4 if _is_number(answer) or kind == "next" else 0.0
    extra = len(_words(rest))
    return 0.8 if extra <= 4 else 0.6


def _competes(rest: str, answer: str) -> bool:
    if re.search(r"\d", answer) or _is_number(answer):
        return re.search(r"\d", rest) is not None
    items = {i.lower() for i in _items(answer)}
    rest_words = {w.lower() for w in _words(rest)}
    if items & rest_words:
        return True
    # another member of the answer's sequence (a hedge between letters, days or months)
    for sequence in (LETTERS, DAYS, MONTHS):
        members = {s.lower() for s in sequence}
        if answer.lower() in members and members & rest_words:
            return True
    return False


def _repeats_prompt(prompt: str, text: str, answer: str) -> bool:
    """Whether most of the prompt's own words (those not in the answer) are in the response."""
    answer_words = {w.lower() for w in _words(answer)}
    prompt_words = {w.lower() for w in _words(prompt)} - answer_words
    if len(prompt_words) < 2:
        return False
    said = {w.lower() for w in _words(text)}
    return len(prompt_words & said) / len(prompt_words) >= 0.6
