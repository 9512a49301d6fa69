"""Writing files safely: every file basealign writes goes through a unique temporary name
and a rename, so a reader (or a crash) never sees half a file and two processes never
interleave their bytes."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomic(path: str | os.PathLike, data: str | bytes) -> Path:
    """Write DATA (text as UTF-8, or bytes) to PATH atomically; returns PATH."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode("utf-8") if isinstance(data, str) else data)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a run folder is often shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def check_writable(path: str | os.PathLike, label: str) -> None:
    """BasealignError (one line) unless files can be created at PATH, a folder that may not exist
    yet: its nearest existing ancestor must be a folder we can write in. Checked with a real
    temporary file, so read-only mounts count too, whatever the permission bits say."""
    from basealign.errors import BasealignError

    existing = Path(path).absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise BasealignError(f"{label}: {existing} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        raise BasealignError(f"{label}: cannot write in {existing} ({err.strerror or err})") from None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
