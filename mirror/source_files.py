"""Reading source files without following a symlink anywhere below the source root.

Whoever may write to the source could otherwise swap a folder for a symlink between the
moment mirror saw a file and the moment it reads it, and have a file from outside the
source (a key, a password file) uploaded to the targets. So a file is opened by walking
from the root one name at a time with ``O_NOFOLLOW``, and the drivers, which open files
by name, are handed ``/proc/self/fd/N``: a name for exactly the file that was opened.
"""

from __future__ import annotations

import errno
import os
import stat
from types import TracebackType

_FOLDER = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
#: non-blocking, so a FIFO swapped in cannot hang the open (it is refused just after)
_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
#: where Linux names every open descriptor; elsewhere files are read by their path
FD_DIR = "/proc/self/fd"
#: what a symlink on the way looks like: ELOOP, or ENOTDIR for a folder opened as such
_LINK_ON_THE_WAY = (errno.ELOOP, errno.ENOTDIR)


class SourceFiles:
    """Opens source files for one upload or batch; every descriptor closes with it.

    Folders are opened once per use, so a batch of files from one folder costs one more
    ``openat`` per file than reading them by name.
    """

    def __init__(self, root: str) -> None:
        self._root = root
        self._folders: dict[str, int] = {}
        self._files: list[int] = []
        self._by_fd = os.path.isdir(FD_DIR)

    def __enter__(self) -> SourceFiles:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for fd in [*self._files, *self._folders.values()]:
            os.close(fd)
        self._files.clear()
        self._folders.clear()

    def path(self, rel: str) -> str:
        """A name the drivers can open for the source file ``rel``.

        FileNotFoundError when it is gone, or when a symlink or a non-regular file now
        stands on its path (the scan would not see it there either); other OSErrors
        when it cannot be read.
        """
        return self.opened(rel)[0]

    def opened(self, rel: str) -> tuple[str, int, int]:
        """:meth:`path`, the descriptor that name stands for and the file's permission
        bits (-1 and -1 where files are read by their path), open at the start of the file
        until this closes."""
        if not self._by_fd:
            return os.path.join(self._root, rel), -1, -1
        folder, _, name = rel.rpartition("/")
        try:
            fd = os.open(name, _FILE, dir_fd=self._folder(folder))
        except OSError as exc:
            raise _gone_if_linked(exc, rel) from None
        self._files.append(fd)
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise FileNotFoundError(errno.ENOENT, "not a regular file any more", rel)
        return f"{FD_DIR}/{fd}", fd, stat.S_IMODE(mode) & 0o777

    def _folder(self, rel: str) -> int:
        fd = self._folders.get(rel)
        if fd is not None:
            return fd
        if not rel:
            fd = os.open(self._root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)  # the root may be a link
        else:
            parent, _, name = rel.rpartition("/")
            try:
                fd = os.open(name, _FOLDER, dir_fd=self._folder(parent))
            except OSError as exc:
                raise _gone_if_linked(exc, rel) from None
        self._folders[rel] = fd
        return fd


def _gone_if_linked(exc: OSError, rel: str) -> OSError:
    if exc.errno in _LINK_ON_THE_WAY:
        return FileNotFoundError(errno.ENOENT, "a symbolic link stands on the path (links are not followed)", rel)
    return exc
