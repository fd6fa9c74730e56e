"""Exception types the CLI turns into one-line messages with exit status 2."""

from __future__ import annotations


# How to add training to a runtime-only install, in the README's order: the CPU torch wheel first, or a bare
# requirement resolves the newest torch with several GB of CUDA packages.
TRAIN_EXTRA_HINT = ("install the training extra as the README does: pip install torch==2.13.0 && "
                    "pip install -e '.[train]'")


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
