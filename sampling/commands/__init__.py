"""The `python -m sampling` subcommands: each module has `add_arguments(parser)` and `run(args)`."""
