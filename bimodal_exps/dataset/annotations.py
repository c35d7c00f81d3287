"""Reading annotation JSON files with errors that name the file and the position of the problem."""
import json
from pathlib import Path
from typing import Any

from dataset.errors import DataError, missing_path_error


def read_json_array(path: str | Path) -> list[Any]:
    """Parse a JSON file whose top level must be an array; raise `DataError` on any problem."""
    path = Path(path)
    if not path.is_file():
        raise missing_path_error("annotation file", path)
    try:
        with path.open(encoding="utf-8") as handle:
            data = json.load(handle)
    except json.JSONDecodeError as err:
        raise DataError(
            f"{path}: malformed JSON at line {err.lineno}, column {err.colno}: {err.msg}"
        ) from None
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text (byte offset {err.start})") from None
    except RecursionError:
        raise DataError(f"{path}: JSON nested too deeply to parse (an annotation file is an array of flat "
                        f"objects)") from None
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON array of entries, found {type(data).__name__}")
    return data
