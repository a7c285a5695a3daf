"""Reading source files without following a symlink anywhere below the source root.

Whoever may write to the source could otherwise swap a folder for a symlink between the
moment mirror saw a file and the moment it reads it, and have a file from outside the
source (a key, a password file) uploaded to the targets. So a file is opened by walking
from the root one name at a time with ``O_NOFOLLOW``, and the drivers, which open files
by name, are handed ``/proc/self/fd/N``: a name for exactly the file that was opened.
"""

from __future__ import annotations

import array
import errno
import fcntl
import os
import stat
import threading
from types import TracebackType

_FOLDER = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
#: non-blocking, so a FIFO swapped in cannot hang the open (it is refused just after)
_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
#: where Linux names every open descriptor; elsewhere files are read by their path
FD_DIR = "/proc/self/fd"
#: what a symlink on the way looks like: ELOOP, or ENOTDIR for a folder opened as such
_LINK_ON_THE_WAY = (errno.ELOOP, errno.ENOTDIR)
#: Linux's FS_IOC_GETVERSION: the generation of a file's inode. ext4, XFS and btrfs give
#: a new one to an inode number a deleted file freed, when a new file takes it
_GET_VERSION = 0x80087601
#: devices whose filesystem keeps no generation (tmpfs): not asked again
_NO_GENERATION: set[int] = set()
#: each thread's buffer for the ioctl's answer: filled in place, the call costs half of
#: one that builds its answer anew (a first copy asks it of every file it sends)
_ANSWER = threading.local()


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
        #: the inode generation (:func:`generation`) of each file opened, by path
        self.generations: dict[str, int] = {}

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
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise FileNotFoundError(errno.ENOENT, "not a regular file any more", rel)
        self.generations[rel] = generation(fd, st.st_dev)
        return f"{FD_DIR}/{fd}", fd, stat.S_IMODE(st.st_mode) & 0o777

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


def generation(fd: int, device: int) -> int:
    """The generation of the inode of ``fd`` (a file on ``device``); 0 where its
    filesystem keeps none."""
    if device in _NO_GENERATION:
        return 0
    answer: array.array[int] | None = getattr(_ANSWER, "buffer", None)
    if answer is None:
        answer = _ANSWER.buffer = array.array("I", [0])
    try:
        fcntl.ioctl(fd, _GET_VERSION, answer)
        return answer[0]
    except OSError as exc:
        if exc.errno in (errno.ENOTTY, errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            _NO_GENERATION.add(device)
        return 0


def generation_of(root: str, rel: str) -> int:
    """:func:`generation` of the source file ``rel``; 0 where it cannot be opened. Opened
    by its path, not a name at a time: nothing is read from it, and a link swapped in on
    the way can only make it tell another file's generation, which no row matches."""
    try:
        fd = os.open(os.path.join(root, rel), _FILE)
    except OSError:
        return 0
    try:
        return generation(fd, os.fstat(fd).st_dev)
    finally:
        os.close(fd)


def _gone_if_linked(exc: OSError, rel: str) -> OSError:
    if exc.errno in _LINK_ON_THE_WAY:
        return FileNotFoundError(errno.ENOENT, "a symbolic link stands on the path (links are not followed)", rel)
    return exc
