"""The subcommands of `python -m finetune`, one module each (`add_arguments(parser)`, `run(args) -> int`,
`DESCRIPTION`), listed in `finetune/__main__.py` and run by `data_pipeline.commands.run_command_line`."""
