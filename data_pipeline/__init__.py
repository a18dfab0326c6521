"""Dataset building: caption-image sources -> filters -> fetch/resize -> WebDataset shards + manifest.

Where you stand: the start of the data flow. Sources (`laion`, `flickr30k`, `wikipedia`, `folder`, and the
procedural `synthetic` world with its evaluator) feed one shard writer (`data_pipeline.shards`, driven by
`data_pipeline.runner` on worker processes or Ray via `data_pipeline.distributed`); `data_pipeline.download` is
the polite, address-checked HTTP fetcher; `data_pipeline.shard_report` reads shards back into a report.

It imports nothing else of ours (a crawler box needs no torch), so `finetune` and `sampling` may import it; its
small shared helpers serve all three packages for that reason: `data_pipeline.errors` (`UserError`, the one
type every command prints as a one-line error), `data_pipeline.commands` (the one subcommand protocol),
`data_pipeline.fsutil` (atomic writes) and `data_pipeline.oserrors` (OS errors in words).
"""
