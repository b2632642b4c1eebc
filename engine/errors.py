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
