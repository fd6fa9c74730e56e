"""The `pipeline` command line: thin click commands over the library functions.

This module imports no torch at import time, so `pipeline --help` works in a runtime-only install.
"""

from __future__ import annotations


import re

import click

from pipeline.version import __version__
from pipeline.commands.bench import bench
from pipeline.commands.export import export_command
from pipeline.commands.scoring import evaluate, predict, verify
from pipeline.commands.signing import keygen, sign
from pipeline.commands.train import train


LONG_RUN = re.compile(r"\S{400,}")  # a value no path or name of a user's is this long: a pasted blob, say


def shortened(text: str) -> str:
    """An error message with each run of 400+ characters cut to its start and end, so the one line stays
    readable whatever value was given (click's own messages echo the whole value)."""
    return LONG_RUN.sub(lambda m: f"{m.group(0)[:200]}...({len(m.group(0)):,} characters)...{m.group(0)[-40:]}",
                        text)


class Pipeline(click.Group):
    """The command group: every error of a command or of its flags is shown shortened (see `shortened`)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except click.ClickException as exc:
            exc.message = shortened(exc.message)
            raise


@click.group(cls=Pipeline, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="pipeline")
def main():
    """Train 1D CNNs on sequences with the right loss; export and score them anywhere.

    \b
    Example:
      pipeline train                      # the embedded waveform data, about a minute on 2 CPU cores
      pipeline train --data ECG_TRAIN.ts --test-data ECG_TEST.ts
    """


for command in (train, export_command, predict, evaluate, verify, bench, sign, keygen):
    main.add_command(command)


if __name__ == "__main__":  # torchrun -m pipeline.cli train ...
    main()
