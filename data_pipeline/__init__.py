"""Dataset building: caption-image sources -> filters -> fetch/resize -> WebDataset shards + manifest.

Where you stand: the start of the data flow (`python -m data_pipeline laion|flickr30k|wikipedia|folder|synthetic`
builds a dataset, `inspect` reports on one, `retry` refetches failed downloads). The folders follow the flow:

- `sources/`: one module per source, each a subcommand (`laion` + `laion_filters`, `wikipedia`, `flickr30k`,
  `folder`, `synthetic`). A source cuts its input into shard tasks and yields samples for them.
- `download/`: the polite, address-checked HTTP fetcher the web sources (laion, wikipedia) download through, and
  the `retry` command.
- `images.py` (decode and resize defensively) and `phash.py` (perceptual hashes for near-duplicate removal).
- `shards/`: the one shard writer every source ends in, and the reader (`iter_tar_samples`), split, near-duplicate
  removal and manifest; `runner.py` runs the shard tasks on worker processes (`workers.py`), `distributed.py` on
  Ray. `cli.py` holds the writer options and build step the source subcommands share.
- `shard_report.py`: reads a built dataset back into a report and contact sheet (`inspect`).
- `synthetic/`: the procedural world of captioned shapes, both ways: render scenes (the `synthetic` source draws
  with it) and read them back from images (the evaluator `finetune`, `sampling` and the benchmarks score with).

What it may import: nothing else of ours (a crawler box needs no torch; `tests/test_layering.py` checks), so
`finetune` and `sampling` may import it. Its small shared helpers serve all three packages for that reason:
`errors` (`UserError`, the one type every command prints as a one-line error), `commands` (the one subcommand
protocol), `fsutil` (atomic writes) and `oserrors` (OS errors in words).
"""
