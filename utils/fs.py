"""File-system helpers: an atomic exchange of two folders, and permissions that follow the umask."""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
from pathlib import Path

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
