"""Operating-system failures a user can fix (full disk, read-only folder, a file where a folder belongs)
as one line for the CLI: what failed, on which path, and the way out. Other OSErrors stay bugs."""

from __future__ import annotations

import errno

# errno -> the fix; the message names the path and the system's own words for the failure
FIXES = {
    errno.ENOSPC: "free space on that disk or write somewhere else (--out)",
    errno.EDQUOT: "free space within your quota or write somewhere else (--out)",
    errno.EROFS: "it is on a read-only file system; write somewhere else (--out)",
    errno.EACCES: "you lack permission there; write somewhere else (--out) or fix the permissions",
    errno.EPERM: "you lack permission there; write somewhere else (--out) or fix the permissions",
    errno.ENOTDIR: "a file stands where a folder is needed; choose another path",
    errno.EISDIR: "a folder stands where a file is needed; choose another path",
    errno.EEXIST: "something already exists at that path; choose another",
}


def describe_os_error(exc: OSError) -> str | None:
    """One line for a fixable OSError, or None for one that is not the user's to fix."""
    fix = FIXES.get(exc.errno)
    if fix is None:
        return None
    where = f" '{exc.filename}'" if exc.filename else ""
    return f"cannot write{where} ({exc.strerror or errno.errorcode.get(exc.errno, exc.errno)}): {fix}"
