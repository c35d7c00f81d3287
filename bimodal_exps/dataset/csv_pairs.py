"""OpenCLIP/ITRA CSV or TSV training files (`--train-data pairs.csv`): one image path and caption per row.

Rows become the entries `ImageTextDataset` reads, so pair id = row number (header excluded) and the
usual checks (missing image files skipped and counted) apply.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from dataset.errors import DataError

CSV_SUFFIXES = (".csv", ".tsv")


class CSVReader:
    """Callable path -> list of {"image", "caption"} entries, reading the named columns (picklable)."""

    def __init__(self, img_key: str = "filepath", caption_key: str = "title", separator: str = "\t") -> None:
        self.img_key = img_key
        self.caption_key = caption_key
        self.separator = separator

    def __call__(self, path: str | Path) -> list[dict[str, Any]]:
        try:
            with open(path, newline="", encoding="utf-8") as handle:
                reader = csv.DictReader(handle, delimiter=self.separator)
                missing = [key for key in (self.img_key, self.caption_key) if key not in (reader.fieldnames or [])]
                if missing:
                    raise DataError(f"{path}: no column {', '.join(map(repr, missing))} (columns: "
                                    f"{reader.fieldnames}; set --csv_img_key/--csv_caption_key/--csv_separator)")
                return [{"image": row[self.img_key], "caption": row[self.caption_key]} for row in reader]
        except (OSError, UnicodeDecodeError, csv.Error) as error:
            raise DataError(f"--train-data {path}: cannot read ({error})") from None
