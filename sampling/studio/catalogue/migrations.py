"""Schema migrations, one ordered list per backend, recorded in a ``schema_version`` table.

Append new steps; never edit a released one. Each step runs in the same transaction as the
row that records it, under a lock, so concurrent openers migrate exactly once.
"""

from __future__ import annotations

SQLITE = {
    1: [
        """CREATE TABLE items (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            image_hash TEXT NOT NULL,
            caption TEXT NOT NULL,
            prompt TEXT NOT NULL DEFAULT '',
            params TEXT NOT NULL DEFAULT '{}',
            created_at TEXT NOT NULL
        )""",
        "CREATE INDEX items_created_at ON items (created_at)",
        "CREATE INDEX items_image_hash ON items (image_hash)",
    ],
    2: [
        "ALTER TABLE items ADD COLUMN embedding BLOB",
        "ALTER TABLE items ADD COLUMN embedding_model TEXT",
        "CREATE INDEX items_caption_nocase ON items (caption COLLATE NOCASE)",
    ],
    # Comic items: one row in items (kind 'comic', image_hash = the cover, i.e. page 1) and its pages in order.
    3: [
        "ALTER TABLE items ADD COLUMN kind TEXT NOT NULL DEFAULT 'image'",
        "ALTER TABLE items ADD COLUMN reading_order TEXT NOT NULL DEFAULT 'ltr'",
        "ALTER TABLE items ADD COLUMN exports TEXT NOT NULL DEFAULT ''",
        """CREATE TABLE item_pages (
            item_id INTEGER NOT NULL REFERENCES items (id) ON DELETE CASCADE,
            page_number INTEGER NOT NULL,
            image_hash TEXT NOT NULL,
            PRIMARY KEY (item_id, page_number)
        )""",
        "CREATE INDEX item_pages_image_hash ON item_pages (image_hash)",
    ],
}

POSTGRES = {
    1: [
        """CREATE TABLE items (
            id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            image_hash TEXT NOT NULL,
            caption TEXT NOT NULL,
            prompt TEXT NOT NULL DEFAULT '',
            params JSONB NOT NULL DEFAULT '{}'::jsonb,
            created_at TIMESTAMPTZ NOT NULL DEFAULT now()
        )""",
        "CREATE INDEX items_created_at ON items (created_at)",
        "CREATE INDEX items_image_hash ON items (image_hash)",
    ],
    2: [
        "ALTER TABLE items ADD COLUMN embedding BYTEA",
        "ALTER TABLE items ADD COLUMN embedding_model TEXT",
        "CREATE INDEX items_caption_lower ON items (lower(caption))",
    ],
    3: [
        "ALTER TABLE items ADD COLUMN kind TEXT NOT NULL DEFAULT 'image'",
        "ALTER TABLE items ADD COLUMN reading_order TEXT NOT NULL DEFAULT 'ltr'",
        "ALTER TABLE items ADD COLUMN exports TEXT NOT NULL DEFAULT ''",
        """CREATE TABLE item_pages (
            item_id BIGINT NOT NULL REFERENCES items (id) ON DELETE CASCADE,
            page_number INTEGER NOT NULL,
            image_hash TEXT NOT NULL,
            PRIMARY KEY (item_id, page_number)
        )""",
        "CREATE INDEX item_pages_image_hash ON item_pages (image_hash)",
    ],
}

LATEST = max(SQLITE)
assert set(SQLITE) == set(POSTGRES) == set(range(1, LATEST + 1)), "migrations must be numbered 1..N on both backends"
