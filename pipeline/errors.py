"""Exception types the CLI turns into one-line messages with exit status 2."""

from __future__ import annotations


class PipelineError(Exception):
    """A user-facing problem: bad flags, bad data, a run folder in the way."""


class DataError(PipelineError):
    """One or more problems found in the input data, reported together."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        if len(self.problems) == 1:
            text = self.problems[0]
        else:
            text = f"{len(self.problems)} problems in the input data:\n" + "\n".join(
                f"  - {p}" for p in self.problems
            )
        super().__init__(text)
