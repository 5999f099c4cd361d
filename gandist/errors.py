"""User-facing errors: the CLI prints their message (which names the problem and the fix), no traceback."""


def first_few(names: list[str], k: int = 3) -> str:
    """The first `k` names for a message, and how many more: 'a, b, c and 4 more'."""
    return ", ".join(names[:k]) + (f" and {len(names) - k} more" if len(names) > k else "")


class UserError(Exception):
    """A mistake the user can fix: bad config, missing path, corrupt file, wrong checkpoint."""

    # True where every rank of a multi-process run raises it alike, at the same step, from values agreed over
    # the ranks: rank 0 alone says it. Otherwise a failure in training may be one rank's own, and each says it.
    collective = False


class DataError(UserError):
    """A dataset that cannot be read: missing folder, no images, corrupt file."""


class CheckpointError(UserError):
    """A checkpoint that is missing, incomplete or corrupt."""


class DivergedError(UserError):
    """Training stopped because updates kept failing (non-finite losses or gradients) on some rank;
    the checkpoints already written are left as they are. `gandist train` exits with status 1. The count of
    skipped updates is agreed over the ranks, so every rank stops at the same step."""

    collective = True
