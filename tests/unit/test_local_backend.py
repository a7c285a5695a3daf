"""The local backend picks its worker count from what the target folder sits on."""

from __future__ import annotations

from pathlib import Path

import pytest
from mirror.backends.local import filesystem_type, is_network_filesystem

from mirror import registry

MOUNTINFO = """\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
30 22 0:25 / /mnt/nas rw,relatime shared:2 - nfs4 nas:/export rw,vers=4.2
31 30 0:26 / /mnt/nas/local\\040copy rw shared:3 - tmpfs tmpfs rw
32 22 0:27 / /home/me/Dropbox rw shared:4 - fuse.rclone remote: rw
"""


def test_the_deepest_mount_containing_the_path_decides(tmp_path: Path) -> None:
    table = tmp_path / "mountinfo"
    table.write_text(MOUNTINFO)
    assert filesystem_type("/srv/backup/invoices", str(table)) == "ext4"
    assert filesystem_type("/mnt/nas/invoices", str(table)) == "nfs4"
    assert filesystem_type("/mnt/nas/local copy/2026", str(table)) == "tmpfs"
    assert filesystem_type("/mnt/nasty", str(table)) == "ext4"
    assert filesystem_type("/home/me/Dropbox/Invoices", str(table)) == "fuse.rclone"


def test_no_mount_table_means_unknown(tmp_path: Path) -> None:
    assert filesystem_type("/srv", str(tmp_path / "missing")) is None


def test_network_and_fuse_mounts_count_as_network() -> None:
    assert is_network_filesystem("nfs4")
    assert is_network_filesystem("cifs")
    assert is_network_filesystem("fuse.sshfs")
    assert not is_network_filesystem("ext4")
    assert not is_network_filesystem("tmpfs")


def test_a_folder_on_a_local_disk_gets_one_worker(tmp_path: Path) -> None:
    """Threads only contend for the GIL when each file costs microseconds."""
    fs_type = filesystem_type(str(tmp_path))
    if fs_type is None or is_network_filesystem(fs_type):
        pytest.skip(f"the test folder is not on a local disk ({fs_type})")
    driver = registry.connect(registry.resolve(str(tmp_path / "target"), {}, {}))
    assert driver.default_concurrency == 1
