"""The logic of human feedback, free of torch and of the store.

    records.py      Judgement, Response, PreferencePair, UnpairedExample, Message
    pairs.py        judgements -> preference pairs (tie policies) and KTO's unpaired view
    agreement.py    agreement between annotators: percent, Cohen's and Fleiss' kappa
    leaderboard.py  arena ratings: Bradley-Terry with bootstrap intervals, online Elo
    importers.py    read TRL, Anthropic HH, KTO, ranked-list and judgement-table files
    exporters.py    write TRL and KTO data and the judgement table, atomically

The store and the console call these with live judgements (undone or edited
ones already dropped) and keep what comes back; nothing here touches a
database or the screen. pyarrow is imported only to read or write parquet.
"""

from .agreement import (
    Agreement,
    agreement,
    agreement_from_judgements,
    canonical_outcome,
    cohen_kappa,
    fleiss_kappa,
    judgement_labels,
)
from .exporters import write_judgements, write_kto, write_trl
from .importers import IMPORT_FORMATS, ImportResult, detect_format, read_feedback
from .leaderboard import Game, Rating, bradley_terry, games_from_judgements, leaderboard, online_elo
from .pairs import TIE_POLICIES, group_by_prompt, induced_pairs, preference_pairs, unpaired_examples
from .records import (
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
