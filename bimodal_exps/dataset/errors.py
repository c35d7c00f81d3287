"""The one exception type the data layer raises for problems with the user's files."""

DEMO_HINT = (
    "to try the pipeline without the real data, build demo data with "
    "`python bimodal_exps/build_demo_data.py --out demo_data` and pass "
    "`--data_path demo_data/datasets --ann_path demo_data/clip_train`"
)


class DataError(Exception):
    """A data file or folder is missing or malformed; the message is one line fit for the CLI."""


def missing_path_error(what: str, path: object) -> DataError:
    """Build the error for a missing annotation file or image folder, with the demo-data hint."""
    return DataError(f"{what} not found: {path}; {DEMO_HINT}")


def without_worker_traceback(message: str) -> str:
    """Reduce the message of an error re-raised from a DataLoader worker ("Caught DataError in DataLoader
    worker process N." plus the worker's traceback) to the original one-line message."""
    if not message.startswith("Caught "):
        return message
    return message.strip().splitlines()[-1].split(": ", 1)[-1]
