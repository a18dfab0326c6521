"""Perceptual hashes (DCT pHash with OpenCV) and near-duplicate search over them."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

import cv2
import numpy as np


def phash(rgb: np.ndarray) -> int:
    """64-bit perceptual hash: signs of the 8x8 lowest DCT frequencies of a 32x32 grey thumbnail
    relative to their median. Resizes, recompression and small edits move few bits."""
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY) if rgb.ndim == 3 else rgb
    small = cv2.resize(gray, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)
    low = cv2.dct(small)[:8, :8].flatten()
    # The DC term only says how bright the image is; leave it out of the median.
    bits = low > np.median(low[1:])
    value = 0
    for bit in bits:
        value = (value << 1) | int(bit)
    return value


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


def find_near_duplicates(hashes: Iterable[tuple[str, int]], max_distance: int) -> dict[str, str]:
    """Map each near-duplicate key to the key it duplicates (the smallest key of its cluster).

    `hashes` are (key, phash) pairs. Two images are near-duplicates when their hashes differ in
    at most `max_distance` bits. Candidates come from splitting the 64 bits into
    max_distance + 1 bands: two hashes within the distance agree exactly on at least one band,
    so only hashes sharing a band are compared. The result does not depend on input order.
    """
    if max_distance < 0:
        return {}
    # Identical hashes first (cheap), then band search over the distinct values only.
    by_value: dict[int, list[str]] = defaultdict(list)
    for key, value in hashes:
        by_value[value].append(key)
    values = sorted(by_value, key=lambda v: min(by_value[v]))
    n_bands = min(max_distance + 1, 64)
    bounds = [(64 * i // n_bands, 64 * (i + 1) // n_bands) for i in range(n_bands)]
    buckets: list[dict[int, list[int]]] = [defaultdict(list) for _ in bounds]
    for idx, value in enumerate(values):
        for band, (lo, hi) in enumerate(bounds):
            buckets[band][(value >> lo) & ((1 << (hi - lo)) - 1)].append(idx)

    parent = list(range(len(values)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    if max_distance > 0:
        for band in buckets:
            for members in band.values():
                for pos, i in enumerate(members):
                    for j in members[pos + 1 :]:
                        if hamming(values[i], values[j]) <= max_distance:
                            ri, rj = root(i), root(j)
                            if ri != rj:
                                # values are ordered by their smallest key: keep the earlier one.
                                parent[max(ri, rj)] = min(ri, rj)
    duplicates: dict[str, str] = {}
    for idx, value in enumerate(values):
        keeper = min(by_value[values[root(idx)]])
        for key in by_value[value]:
            if key != keeper:
                duplicates[key] = keeper
    return duplicates
