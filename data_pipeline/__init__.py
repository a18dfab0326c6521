"""Dataset building: sources -> shard writer (data_pipeline.shards) -> WebDataset shards + manifest."""
