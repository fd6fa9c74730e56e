"""The commands of `pipeline`, one module per command group; pipeline/cli.py joins them."""
