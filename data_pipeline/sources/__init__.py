"""Where captioned images come from: one module per source, each the `python -m data_pipeline` subcommand of
the same name. A source turns its input into `ShardTask`s and a `produce(task)` generator of samples, and hands
both to the shard writer (`data_pipeline.shards`, via `data_pipeline.cli.run_build`).

- `laion` (+ `laion_filters`): LAION parquet metadata, filtered, then downloaded (`data_pipeline.download`);
- `wikipedia`: the captioned images of wiki articles (MediaWiki API), then downloaded;
- `flickr30k`: Flickr30k's images with their five captions;
- `folder`: a folder of images with a caption CSV or an imagefolder `metadata.jsonl`;
- `synthetic`: the procedural world of `data_pipeline.synthetic`, rendered offline;
- `openmoji` (+ `openmoji_art`): OpenMoji's human-drawn emoji (CC BY-SA 4.0), rendered from its colour font.
"""
