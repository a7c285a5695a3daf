"""The ``memory`` backend: fsspec's in-process filesystem, used by tests and dry experiments.

It keeps no mtime and no hash, so it exercises the planner's most cautious path
(size alone cannot prove two files equal).
"""

from __future__ import annotations

from mirror.driver import Capabilities, Driver


class MemoryDriver(Driver):
    capabilities = Capabilities(case_sensitive=True, atomic_rename=False)
    default_concurrency = 4
    thread_safe = True
    #: fsspec's memory filesystem takes any option and ignores it: tests give it a
    #: secret, to see that none reaches the output or the state folder
    checks_fs_options = False
    root_lost_free = True
    in_process = True

    def root_lost(self, known: str) -> bool:
        # the files live in this process: a new one starts with none, whatever its index says
        return self.stat(known) is None
