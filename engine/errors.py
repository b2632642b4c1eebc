"""The engine's one error hierarchy: front ends catch `EngineError`."""

from __future__ import annotations


class EngineError(Exception):
    """Base class of every error the engine raises on purpose."""

    #: exit code a command-line front end should use for this error
    exit_code: int = 1


class UserInputError(EngineError):
    """Bad input from a person or script: a spec, a run name, a file."""

    exit_code = 2


class SpecError(UserInputError):
    """A pipeline spec was rejected. `problems` holds one line per problem,
    each naming the file, the stage and the field."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class RunNotFound(UserInputError):
    pass


class InvalidRunState(UserInputError):
    """The run cannot do that now, e.g. resuming a run that succeeded."""


class StageCancelled(EngineError):
    """Raised inside a stage after it stopped on request and saved what it could."""


class StageFailed(EngineError):
    """A stage could not do its work for a reason it can explain in one line
    (missing data, no GPU for QLoRA, ...); shown without a traceback."""


class FeedbackFormatError(UserInputError):
    """Human-feedback data was rejected: a preference file to import, or a
    judgement built from bad input. `problems` holds one line per problem;
    for a file each reads `FILE:LINE: what is wrong; what was expected`.
    The message shows the first `shown` of them, so a file with thousands of
    bad lines still gives a readable error."""

    def __init__(self, problems: list[str], shown: int = 20) -> None:
        self.problems = problems
        lines = problems[:shown]
        if len(problems) > shown:
            lines = [*lines, f"... and {len(problems) - shown} more problems"]
        super().__init__("\n".join(lines))
