"""The ``file`` backend: a local or mounted folder, reached with plain os calls.

Plain os calls rather than fsspec's LocalFileSystem because this backend is the speed
reference against cp and rsync: one ``os.scandir`` walk for listing, ``copyfile`` +
``utime`` for a put, and ``os.replace`` for an atomic rename.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Mapping
from typing import Any

from fsspec.implementations.local import LocalFileSystem

from mirror.driver import Capabilities, Driver, RemoteEntry


class LocalDriver(Driver):
    capabilities = Capabilities(
        case_sensitive=True,
        mtime_settable=True,
        mtime_precision_ns=1,
        atomic_rename=True,
        server_side_move=True,
        max_name_bytes=255,
    )

    @classmethod
    def connect(cls, url: str, options: Mapping[str, Any], caps: Capabilities | None = None) -> Driver:
        return cls(LocalFileSystem(), url, caps)

    @classmethod
    def local_folder(cls, url: str) -> str | None:
        return url

    def list(self) -> dict[str, RemoteEntry]:
        result: dict[str, RemoteEntry] = {}
        if not os.path.isdir(self.root):
            return result
        stack = [""]
        while stack:
            rel_dir = stack.pop()
            with os.scandir(os.path.join(self.root, rel_dir) if rel_dir else self.root) as it:
                for item in it:
                    rel = f"{rel_dir}/{item.name}" if rel_dir else item.name
                    if item.is_dir(follow_symlinks=False):
                        stack.append(rel)
                    elif item.is_file(follow_symlinks=False):
                        st = item.stat(follow_symlinks=False)
                        result[rel] = RemoteEntry(rel, st.st_size, st.st_mtime_ns)
        return result

    def stat(self, rel: str) -> RemoteEntry | None:
        try:
            st = os.stat(self.full(rel), follow_symlinks=False)
        except FileNotFoundError:
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        return RemoteEntry(rel, st.st_size, st.st_mtime_ns)

    def put(self, local_path: str, rel: str, mtime_ns: int) -> None:
        target = self.full(rel)
        shutil.copyfile(local_path, target)
        os.utime(target, ns=(mtime_ns, mtime_ns))

    def set_mtime(self, rel: str, mtime_ns: int) -> None:
        os.utime(self.full(rel), ns=(mtime_ns, mtime_ns))

    def move(self, src: str, dst: str) -> None:
        os.replace(self.full(src), self.full(dst))

    def delete(self, rel: str) -> None:
        os.unlink(self.full(rel))

    def makedirs(self, rel_dir: str) -> None:
        os.makedirs(self.full(rel_dir) if rel_dir else self.root, exist_ok=True)

    def remove_dir_if_empty(self, rel_dir: str) -> bool:
        try:
            os.rmdir(self.full(rel_dir))
        except OSError:
            return False
        return True
