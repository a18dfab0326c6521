"""Find the training data and list its samples as lightweight records (captions + where the image bytes are).

Two inputs are understood:
- WebDataset shards (`KEY.jpg|png|webp`, `KEY.txt`, `KEY.json`): a dataset folder with one shard set per image
  size (`DIR/<size>/*.tar`), a folder of tars, tar paths, globs or brace ranges (`data/{00000..00009}.tar`).
- imagefolder folders: `metadata.jsonl` lines with `file_name` and `text` (optional `captions`, `split`), or
  `train/` and `val/`|`validation/` subfolders each holding one.

Records carry no pixels: a tar image is an (offset, size) in the file, so skipping samples to resume a data
stream reads only tar headers and the small caption members.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from braceexpand import braceexpand

from data_pipeline.errors import UserError

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")
FOLDER_CHUNK = 256  # imagefolder samples per virtual shard (the unit split across processes and workers)
PRECHECK_SAMPLES = 8


class DatasetError(UserError, ValueError):
    """The dataset is missing, empty, unreadable, uncaptioned or of the wrong image size."""


@dataclass(frozen=True)
class Record:
    key: str
    captions: tuple[str, ...]
    split: str
    path: str  # tar file or image file
    offset: int = 0  # byte offset of the image inside a tar (0 for a plain file)
    size: int = -1  # image byte count inside a tar (-1: the whole file)
    keep_caption: bool = False  # never dropped for classifier-free guidance (attributes.caption_dropout "off")
    prior: bool = False  # a prior-preservation image (attributes.prior_preservation "on"; see TrainConfig.prior_target)

    def read_bytes(self, handles: "FileCache | None" = None) -> bytes:
        if self.size < 0:
            with open(self.path, "rb") as fh:
                return fh.read()
        fh = handles.get(self.path) if handles is not None else open(self.path, "rb")
        try:
            fh.seek(self.offset)
            data = fh.read(self.size)
        finally:
            if handles is None:
                fh.close()
        if len(data) != self.size:
            raise OSError(f"{self.path}: short read at offset {self.offset}")
        return data


class FileCache:
    """A few open file handles per data worker (tar images are read by seeking)."""

    def __init__(self, limit: int = 8):
        self.limit = limit
        self._open: dict[str, object] = {}

    def get(self, path: str):
        fh = self._open.pop(path, None)
        if fh is None:
            if len(self._open) >= self.limit:
                oldest = next(iter(self._open))
                self._open.pop(oldest).close()
            fh = open(path, "rb")
        self._open[path] = fh  # most recently used last
        return fh

    def close(self) -> None:
        for fh in self._open.values():
            fh.close()
        self._open.clear()


@dataclass(frozen=True)
class Shard:
    """A unit of data: one tar file, or a chunk of an imagefolder's metadata."""

    path: str
    folder_items: tuple[Record, ...] | None = None

    def records(self) -> Iterator[Record]:
        if self.folder_items is not None:
            yield from self.folder_items
        else:
            yield from iter_tar_records(self.path)

    def split_count(self, split: str) -> int | None:
        """Samples of a split in this shard from the writer's per-shard stats (NNNNN_stats.json), if present."""
        if self.folder_items is not None:
            return sum(1 for r in self.folder_items if r.split == split)
        stats = Path(self.path).with_name(Path(self.path).stem + "_stats.json")
        try:
            splits = json.loads(stats.read_text()).get("splits")
            return int(splits.get(split, 0)) if isinstance(splits, dict) else None
        except (OSError, ValueError, AttributeError, TypeError):
            return None

    @property
    def name(self) -> str:
        if self.folder_items is not None and self.folder_items:
            return f"{self.path}[{self.folder_items[0].key}...]"
        return self.path


@dataclass
class Dataset:
    shards: list[Shard]
    kind: str  # "webdataset" or "imagefolder"
    size_folder: int | None  # the DIR/<size> that was chosen, when known
    manifest_sha256: str | None
    description: str
    buckets: list = field(default_factory=list)  # aspect-ratio buckets (finetune.train.buckets.Bucket), if any


# ---------------------------------------------------------------------------------------------- tars


def _split_name(name: str) -> tuple[str, str]:
    """WebDataset convention: the key is everything up to the first dot of the basename."""
    directory, base = os.path.split(name)
    if "." not in base:
        return name, ""
    stem, ext = base.split(".", 1)
    return (f"{directory}/{stem}" if directory else stem), ext.lower()


def _parse_json(data: bytes | None) -> dict:
    if not data:
        return {}
    try:
        loaded = json.loads(data.decode("utf-8", errors="replace"))
    except ValueError:
        return {}
    return loaded if isinstance(loaded, dict) else {}


def _attribute_is(meta: dict, name: str, value: str) -> bool:
    attributes = meta.get("attributes")
    return isinstance(attributes, dict) and str(attributes.get(name, "")).lower() == value


def keeps_caption(meta: dict) -> bool:
    """Whether a sample's json asks that its caption is never dropped (`attributes.caption_dropout` "off"), e.g. the
    character images of `adapter teach --uncond-images prior`."""
    return _attribute_is(meta, "caption_dropout", "off")


def is_prior_image(meta: dict) -> bool:
    """Whether a sample's json marks it as a prior-preservation image (`attributes.prior_preservation` "on"), as
    `adapter teach` stages the base model's own images."""
    return _attribute_is(meta, "prior_preservation", "on")


def _captions_from(meta: dict, txt: str | None) -> tuple[tuple[str, ...], str]:
    """All known captions (json `captions`, else json `caption`/`text`, else KEY.txt) and the split."""
    captions: list[str] = []
    if isinstance(meta.get("captions"), list):
        captions = [c.strip() for c in meta["captions"] if isinstance(c, str) and c.strip()]
    for name in ("caption", "text"):
        if not captions and isinstance(meta.get(name), str) and meta[name].strip():
            captions = [meta[name].strip()]
    if not captions and txt and txt.strip():
        captions = [txt.strip()]
    split = meta.get("split") if isinstance(meta.get("split"), str) else "train"
    return tuple(captions), ("val" if split in ("val", "validation") else split)


def iter_tar_records(path: str) -> Iterator[Record]:
    """Records of a WebDataset tar in file order. Samples lacking an image are dropped here."""
    try:
        tf = tarfile.open(path, mode="r:")
    except (tarfile.TarError, OSError) as exc:
        raise DatasetError(f"cannot read shard {path}: {exc} (shards must be uncompressed .tar files)") from None
    with tf:
        current_key = None
        parts: dict[str, object] = {}

        def flush():
            if current_key is None or "image" not in parts:
                return None
            txt = parts.get("txt")
            meta = _parse_json(parts.get("json"))
            captions, split = _captions_from(meta, txt.decode("utf-8", errors="replace") if txt else None)
            offset, size = parts["image"]
            return Record(current_key, captions, split, path, offset, size, keeps_caption(meta), is_prior_image(meta))

        while True:
            try:
                member = tf.next()
            except tarfile.TarError as exc:
                raise DatasetError(f"shard {path} is corrupt: {exc}") from None
            if member is None:
                break
            if not member.isfile():
                continue
            key, ext = _split_name(member.name)
            if key != current_key:
                rec = flush()
                if rec is not None:
                    yield rec
                current_key, parts = key, {}
            if ext in IMAGE_EXTS and "image" not in parts:
                parts["image"] = (member.offset_data, member.size)
            elif ext in ("txt", "json") and member.size <= 1 << 20:
                fh = tf.extractfile(member)
                parts[ext] = fh.read() if fh is not None else b""
        rec = flush()
        if rec is not None:
            yield rec


# --------------------------------------------------------------------------------------- imagefolder


def _folder_records(folder: Path, default_split: str) -> list[Record]:
    meta_path = folder / "metadata.jsonl"
    records = []
    with open(meta_path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.strip()
            if not line:
                continue
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise DatasetError(f"{meta_path}:{lineno}: not valid JSON ({exc})") from None
            if not isinstance(row, dict) or not isinstance(row.get("file_name"), str):
                raise DatasetError(f"{meta_path}:{lineno}: each line needs a 'file_name' string")
            file_path = (folder / row["file_name"]).resolve()
            if folder.resolve() not in file_path.parents:
                raise DatasetError(f"{meta_path}:{lineno}: file_name {row['file_name']!r} points outside the folder")
            captions, split = _captions_from({"split": default_split, **row}, None)
            flags = {"attributes": row}  # an imagefolder's extra columns play the part of a shard's attributes
            records.append(
                Record(
                    row["file_name"],
                    captions,
                    split,
                    str(file_path),
                    keep_caption=keeps_caption(flags),
                    prior=is_prior_image(flags),
                )
            )
    return records


def _is_imagefolder(path: Path) -> bool:
    return (path / "metadata.jsonl").is_file() or any(
        (path / sub / "metadata.jsonl").is_file() for sub in ("train", "val", "validation")
    )


def _imagefolder(path: Path) -> Dataset:
    records: list[Record] = []
    if (path / "metadata.jsonl").is_file():
        records += _folder_records(path, "train")
    for sub, split in (("train", "train"), ("val", "val"), ("validation", "val")):
        if (path / sub / "metadata.jsonl").is_file():
            records += _folder_records(path / sub, split)
    if not records:
        raise DatasetError(f"imagefolder {path} lists no images in metadata.jsonl")
    missing = [r.path for r in records if not os.path.isfile(r.path)]
    if missing:
        raise DatasetError(f"imagefolder {path}: {len(missing)} listed image(s) are missing, e.g. {missing[0]}")
    shards = [Shard(str(path), tuple(records[i : i + FOLDER_CHUNK])) for i in range(0, len(records), FOLDER_CHUNK)]
    return Dataset(shards, "imagefolder", None, None, f"imagefolder {path} ({len(records)} images)")


# ------------------------------------------------------------------------------------------ discovery


def _size_folders(path: Path) -> dict[int, Path]:
    out = {}
    for child in path.iterdir() if path.is_dir() else ():
        if child.is_dir() and child.name.isdigit() and _tars_in(child):
            out[int(child.name)] = child
    return out


def _tars_in(folder: Path) -> list[str]:
    """Shards of a folder, in name order; hidden files (a writer's temporaries) are not shards."""
    return sorted(str(p) for p in folder.glob("*.tar") if not p.name.startswith("."))


def _expand(pattern: str) -> list[str]:
    paths: list[str] = []
    for part in braceexpand(pattern):
        if any(ch in part for ch in "*?["):
            paths += sorted(glob.glob(part))
        elif os.path.exists(part):
            paths.append(part)
        else:
            raise DatasetError(f"shard not found: {part}")
    return paths


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def resolve_dataset(entries: list[str], image_size: int, data_size: int = 0) -> Dataset:
    """Turn the --data entries into a Dataset, choosing the shard size folder that fits the model.

    A folder with size subfolders uses `data_size` if given, else the model's `image_size`, else the smallest
    larger size (the crop downsamples it); only smaller sizes -> DatasetError.
    """
    if not entries:
        raise DatasetError("no dataset given (--data)")
    datasets = [_dataset_entry(entry, image_size, data_size) for entry in entries]
    shards = [s for d in datasets for s in d.shards]
    kinds = {d.kind for d in datasets}
    sizes = {d.size_folder for d in datasets if d.size_folder}
    hashes = [d.manifest_sha256 for d in datasets if d.manifest_sha256]
    return Dataset(
        shards,
        "+".join(sorted(kinds)),
        sizes.pop() if len(sizes) == 1 else None,
        hashes[0] if len(hashes) == 1 else (hashlib.sha256("".join(hashes).encode()).hexdigest() if hashes else None),
        "; ".join(d.description for d in datasets),
    )


def _dataset_entry(entry: str, image_size: int, data_size: int) -> Dataset:
    """One --data entry: an imagefolder, a dataset folder (with or without size folders), or a shard pattern."""
    path = Path(entry)
    if path.is_dir() and _is_imagefolder(path):
        return _imagefolder(path)
    if path.is_dir():
        return _shard_folder(path, image_size, data_size)
    tars = _expand(entry)
    if not tars:
        raise DatasetError(f"no shards match {entry!r}")
    not_tar = [t for t in tars if not t.endswith(".tar")]
    if not_tar:
        raise DatasetError(f"not a .tar shard: {not_tar[0]}")
    return Dataset([Shard(t) for t in tars], "webdataset", None, None, f"{entry} ({len(tars)} shards)")


def _shard_folder(path: Path, image_size: int, data_size: int) -> Dataset:
    sizes = _size_folders(path)
    manifest = path / "manifest.json"
    manifest_hash = _sha256(manifest) if manifest.is_file() else None
    if sizes:
        chosen = _choose_size(path, sizes, image_size, data_size)
        tars = _tars_in(sizes[chosen])
        description = f"{path}/{chosen} ({len(tars)} shards)"
        return Dataset([Shard(t) for t in tars], "webdataset", chosen, manifest_hash, description)
    tars = _tars_in(path)
    if not tars:
        raise DatasetError(f"{path} holds no .tar shards, size folders (<size>/*.tar) or metadata.jsonl")
    return Dataset([Shard(t) for t in tars], "webdataset", None, manifest_hash, f"{path} ({len(tars)} shards)")


def _choose_size(path: Path, sizes: dict[int, Path], image_size: int, data_size: int) -> int:
    if data_size:
        if data_size not in sizes:
            raise DatasetError(f"{path} has no {data_size}px shards (sizes: {sorted(sizes)})")
        return data_size
    if image_size in sizes:
        return image_size
    larger = [s for s in sizes if s > image_size]
    if not larger:
        raise DatasetError(
            f"{path} has images of the wrong size: shard sizes {sorted(sizes)}, the model needs "
            f"{image_size}px (or larger, to be downscaled); rebuild the dataset with "
            f"--sizes {image_size}"
        )
    return min(larger)


def precheck(dataset: Dataset, image_size: int, decode) -> None:
    """Fail fast on empty or unreadable shards, uncaptioned data and too-small images (reads a few samples)."""
    total = 0
    for shard in dataset.shards:
        if shard.folder_items is None:
            if not os.path.isfile(shard.path):
                raise DatasetError(f"shard not found: {shard.path}")
            if os.path.getsize(shard.path) == 0:
                raise DatasetError(f"shard is empty (0 bytes): {shard.path}")
        head = []
        for rec in shard.records():
            head.append(rec)
            if len(head) >= PRECHECK_SAMPLES:
                break
        total += len(head)
        if head and not any(r.captions for r in head):
            raise DatasetError(
                f"shard {shard.name} has samples without captions (no KEY.txt, no 'caption'/'captions' in "
                f"KEY.json): a caption-image dataset is needed"
            )
        if head:
            rec = head[0]
            try:
                rgb = decode(rec.read_bytes())
            except Exception as exc:  # noqa: BLE001 - any decode failure is reported the same way
                raise DatasetError(f"cannot decode image {rec.key} in {shard.name}: {exc}") from None
            h, w = rgb.shape[:2]
            if min(h, w) < image_size:
                raise DatasetError(
                    f"images of the wrong size in {shard.name}: {rec.key} is {w}x{h}, the model needs at least "
                    f"{image_size}x{image_size} (use shards of size {image_size} or larger)"
                )
    if total == 0:
        raise DatasetError(f"the dataset is empty: no samples with an image in {dataset.description}")
