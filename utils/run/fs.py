"""File-system helpers: files and folders written whole or not at all, an atomic exchange of two
folders, permissions that follow the umask, and one clear error for a full disk."""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from utils.run.errors import DiskFullError

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _libc_renameat2():
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    function = getattr(ctypes.CDLL(name, use_errno=True), "renameat2", None)
    if function is not None:
        function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    return function


_RENAMEAT2 = _libc_renameat2()


def exchange_paths(first: Path, second: Path) -> bool:
    """Swap two existing paths in one atomic step (Linux renameat2 RENAME_EXCHANGE).

    Returns False where the system or file system cannot (the caller then falls back to two
    renames); raises OSError for any other failure.
    """
    if _RENAMEAT2 is None:
        return False
    result = _RENAMEAT2(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE)
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(first), None, str(second))


def staging_folder(destination: Path) -> Path:
    """A new hidden sibling of `destination` (`.NAME.partial-XXXX`) to assemble it in; the run
    folder's recovery (utils.run.folder) knows the name and removes one left by a killed process."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{destination.name}.partial-", dir=destination.parent))


def replace_folder(staging: Path, destination: Path) -> Path | None:
    """Put the complete folder `staging` at `destination` and return the previous `destination`,
    moved aside for the caller to take files from and delete (None when there was none).

    Where the system allows it the two are exchanged in one step, so there is no moment without a
    complete folder at `destination`; elsewhere the old folder is renamed aside and the new one
    into place, and a failure in between puts the old one back.
    """
    if not destination.exists():
        os.replace(staging, destination)
        return None
    if exchange_paths(staging, destination):
        return staging
    old = destination.parent / f".{destination.name}.old-{uuid.uuid4().hex[:8]}"
    os.replace(destination, old)
    try:
        os.replace(staging, destination)
    except BaseException:
        os.replace(old, destination)
        raise
    return old


@contextmanager
def atomic_folder(destination: str | os.PathLike, *, keep_existing: bool = False) -> Iterator[Path]:
    """Write a folder whole or not at all: the block fills a hidden staging folder beside
    `destination` (`staging_folder`), which then replaces `destination` (`replace_folder`, the
    previous one deleted); on an error it is removed and `destination` is left as it was.

    keep_existing: when `destination` exists by the end (another process wrote the same
    content-addressed folder first), keep that one and discard this one.
    """
    destination = Path(destination)
    staging = staging_folder(destination)
    try:
        yield staging
        if keep_existing and destination.exists():
            shutil.rmtree(staging)
            return
        try:
            old = replace_folder(staging, destination)
        except OSError:
            if not (keep_existing and destination.exists()):
                raise
            shutil.rmtree(staging)  # another process finished between the check and the move
            return
        if old is not None:
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


@contextmanager
def atomic_text_file(path: str | os.PathLike) -> Iterator[TextIO]:
    """Write a text file whole or not at all: the block writes to a temporary file beside `path`,
    which replaces `path` when the block ends without an error (a reader never sees half a file)
    and is removed otherwise.

    Raises:
        OSError: `path` is a folder, or it (or its folder) cannot be written; the error names
            `path`, never the temporary file the user did not ask for.
    """
    target = Path(path)
    if target.is_dir():
        raise IsADirectoryError(errno.EISDIR, "is a folder; give a file name", str(target))
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:  # e.g. a file where a folder of the path should be
        raise OSError(err.errno, f"cannot create its folder {target.parent} ({err.strerror})", str(target)) from err
    temporary: str | None = None
    try:
        handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            yield out
        make_shareable(Path(temporary))
        os.replace(temporary, target)
    except OSError as err:
        _remove(temporary)
        # The errno keeps the kind (PermissionError, ENOSPC, ...); the path becomes the user's.
        raise OSError(err.errno, err.strerror or str(err), str(target)) from err
    except BaseException:
        _remove(temporary)
        raise


def _remove(temporary: str | None) -> None:
    if temporary is not None:
        Path(temporary).unlink(missing_ok=True)


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def make_shareable(path: Path) -> None:
    """Give a file or folder made by mkstemp/mkdtemp (private: 0600/0700) the permissions an
    ordinary file or folder would get under the current umask, so that others on a shared machine
    can read results as usual."""
    mode = (0o777 if path.is_dir() else 0o666) & ~_umask()
    os.chmod(path, mode)


def is_disk_full(err: BaseException) -> bool:
    """An error that means the file system ran out of space or quota. safetensors and torch.save
    report it in their own exception types, with the system's message inside."""
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(err)
    return "No space left on device" in text or "Disk quota exceeded" in text or (
        isinstance(err, RuntimeError) and "PytorchStreamWriter failed writing" in text)


def _megabytes(count: int) -> str:
    return f"{count / 2**20:,.0f} MB" if count >= 2**20 else f"{count / 2**10:,.1f} kB"


def disk_full_error(what: str, folder: Path, needed: int) -> DiskFullError:
    """The one-line error for a full disk: what needed at least how much, and what is free."""
    free = shutil.disk_usage(folder).free
    return DiskFullError(f"{what}: the disk is full; it needs at least {_megabytes(needed)} and {folder} has "
                         f"{_megabytes(free)} free. Free some space (or point the output elsewhere) and run again; "
                         "earlier checkpoints are intact")


def require_free_space(folder: Path, needed: int, what: str) -> None:
    """Refuse to start a write of at least `needed` bytes into `folder` that cannot fit (`needed`
    is a lower bound, so nothing that would have fitted is refused).

    Raises:
        DiskFullError: less than `needed` bytes are free.
    """
    if shutil.disk_usage(folder).free < needed:
        raise disk_full_error(what, folder, needed)
