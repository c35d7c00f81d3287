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
