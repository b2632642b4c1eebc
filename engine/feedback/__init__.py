"""The logic of human feedback: pure functions over judgement records.

    records.py      Judgement, Response, PreferencePair, UnpairedExample, Message; who is a person
    pairs.py        judgements -> preference pairs (tie policies) and KTO's unpaired view
    agreement.py    agreement between annotators: percent, Cohen's and Fleiss' kappa
    leaderboard.py  arena ratings: Bradley-Terry with bootstrap intervals, online Elo
    importers.py    read TRL, Anthropic HH, KTO, ranked-list and judgement-table files
    exporters.py    write TRL and KTO data and the judgement table, atomically
    judges.py       automatic annotators: `demo` or your `module:function`, loaded by name
    active.py       the active order: features, a Bradley-Terry ensemble, the disagreement rule (numpy)
    quality.py      annotator quality: gold accuracy, agreement with the others, pace, skips

The modules above touch neither a database nor the screen. The adapters that
read and write the store (selecting stored judgements, importing a file, a
judge ranking a stored batch) live apart, in `engine.feedback.stored`.
pyarrow is imported only to read or write parquet.
"""

from engine.feedback.agreement import (
    Agreement,
    agreement,
    agreement_from_judgements,
    canonical_outcome,
    cohen_kappa,
    fleiss_kappa,
    judgement_labels,
)
from engine.feedback.exporters import write_judgements, write_kto, write_trl
from engine.feedback.importers import IMPORT_FORMATS, ImportResult, detect_format, read_feedback
from engine.feedback.leaderboard import (
    Game,
    Rating,
    bradley_terry,
    games_from_judgements,
    leaderboard,
    online_elo,
)
from engine.feedback.pairs import (
    TIE_POLICIES,
    group_by_prompt,
    induced_pairs,
    preference_pairs,
    unpaired_examples,
)
from engine.feedback.records import (
    OUTCOMES,
    Judgement,
    Message,
    PreferencePair,
    Response,
    UnpairedExample,
    content_key,
)

__all__ = [
    "IMPORT_FORMATS",
    "OUTCOMES",
    "TIE_POLICIES",
    "Agreement",
    "Game",
    "ImportResult",
    "Judgement",
    "Message",
    "PreferencePair",
    "Rating",
    "Response",
    "UnpairedExample",
    "agreement",
    "agreement_from_judgements",
    "bradley_terry",
    "canonical_outcome",
    "cohen_kappa",
    "content_key",
    "detect_format",
    "fleiss_kappa",
    "games_from_judgements",
    "group_by_prompt",
    "induced_pairs",
    "judgement_labels",
    "leaderboard",
    "online_elo",
    "preference_pairs",
    "read_feedback",
    "unpaired_examples",
    "write_judgements",
    "write_kto",
    "write_trl",
]
