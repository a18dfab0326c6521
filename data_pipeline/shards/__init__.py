"""The shard writer: every source ends here.

Layout (img2dataset's webdataset layout where the two overlap)::

    DIR/<size>/NNNNN.tar            KEY.jpg (or .png/.webp), KEY.txt, KEY.json per sample
    DIR/<size>/NNNNN_stats.json     per-shard counts; its presence marks the shard complete
    DIR/manifest.json               totals over all shards (write_manifest)

How a source uses it:

1. Cut its input into `ShardTask`s (`plan_shards`): a fixed list of input items per shard, so a
   rerun redoes exactly the shards that are not complete.
2. Write a picklable `produce(task)` generator that yields, for each item, one `Sample`
   (image as encoded bytes or a decoded RGB uint8 array) or one `Failure` (a reason string such
   as "http_404"), carrying the item's position in `task.items` as `index`.
3. Run the tasks with `data_pipeline.runner.run_shard_tasks` (processes, progress, resume), or
   call `write_shard` per task yourself (e.g. on Ray) followed by `finalize_dataset`.

Keys are derived from (shard_id, index) -- `make_key` -- so they are stable across reruns and the
same in every size. The train/val split hashes a group key (`Sample.group`; by default the exact
image content, so duplicate images land on one side). Shards are written to a temporary name and
renamed; the stats file is written last.

Modules, in the order data passes through them: `plan` (ShardTask, Sample, Failure, WriterConfig), `captions`
(caption cleaning), `writer` (write_shard), `layout` (keys, paths, split, completeness), `reader`
(iter_tar_samples), `finishing` (remove_near_duplicates, write_manifest). Everything importers use is re-exported
here.
"""

from data_pipeline.shards.captions import clean_caption
from data_pipeline.shards.finishing import NEAR_DUPLICATE, remove_near_duplicates, write_manifest
from data_pipeline.shards.layout import (
    SPLITS,
    assign_split,
    completed_shard_ids,
    content_group,
    items_digest,
    key_digits,
    make_key,
    pending_tasks,
    read_shard_stats,
    shard_is_complete,
    shard_name,
    stats_path,
    tar_path,
)
from data_pipeline.shards.plan import Failure, Sample, ShardTask, WriterConfig, normalize_size, plan_shards, size_dims
from data_pipeline.shards.reader import MAX_TAR_MEMBER_BYTES, iter_tar_samples
from data_pipeline.shards.writer import (
    BAD_IMAGE_ARRAY,
    EMPTY_CAPTION,
    NO_RESULT,
    PROCESSING_ERROR,
    assemble_tar,
    write_shard,
)

__all__ = [
    "BAD_IMAGE_ARRAY",
    "EMPTY_CAPTION",
    "MAX_TAR_MEMBER_BYTES",
    "NEAR_DUPLICATE",
    "NO_RESULT",
    "PROCESSING_ERROR",
    "SPLITS",
    "Failure",
    "Sample",
    "ShardTask",
    "WriterConfig",
    "assemble_tar",
    "assign_split",
    "clean_caption",
    "completed_shard_ids",
    "content_group",
    "items_digest",
    "iter_tar_samples",
    "key_digits",
    "make_key",
    "normalize_size",
    "pending_tasks",
    "plan_shards",
    "read_shard_stats",
    "remove_near_duplicates",
    "shard_is_complete",
    "shard_name",
    "size_dims",
    "stats_path",
    "tar_path",
    "write_manifest",
    "write_shard",
]
