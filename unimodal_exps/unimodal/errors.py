"""The exceptions the entry scripts report as one line (no traceback)."""
from engine.checkpoint import CheckpointError
from engine.distributed import DistributedSetupError
from engine.runtime import UsageError

USER_ERRORS: tuple[type[Exception], ...] = (UsageError, CheckpointError, DistributedSetupError)
