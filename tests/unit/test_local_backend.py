"""What a folder sits on (mirror.mounts), and the worker count the local backend picks from it."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from backends import local
from backends.local import LocalDriver, workers_on
from mirror import registry
from mirror.errors import ItemError
from mirror.mounts import (
    Expected,
    expected_mounts,
    fstab_points,
    mount_of,
    nearly_none,
    overlapping,
    unmounted_above,
)

MOUNTINFO = """\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
30 22 0:25 / /mnt/nas rw,relatime shared:2 - nfs4 nas:/export rw,vers=4.2
31 30 0:26 / /mnt/nas/local\\040copy rw shared:3 - tmpfs tmpfs rw
32 22 0:27 / /home/me/Dropbox rw shared:4 - fuse.rclone remote: rw
33 22 0:28 / /mnt/old-nas rw shared:5 - cifs //old/share rw,vers=1.0,noserverino
34 22 0:29 / /mnt/share rw shared:6 - cifs //new/share rw,vers=3.1.1,serverino
35 22 8:17 / /media/usb rw shared:7 - fuseblk /dev/sdb1 rw,user_id=0
"""


def test_the_deepest_mount_containing_the_path_decides(tmp_path: Path) -> None:
    table = tmp_path / "mountinfo"
    table.write_text(MOUNTINFO)

    def fs_type(path: str) -> str | None:
        mount = mount_of(path, str(table))
        return mount.fs_type if mount else None

    assert fs_type("/srv/backup/invoices") == "ext4"
    assert fs_type("/mnt/nas/invoices") == "nfs4"
    assert fs_type("/mnt/nas/local copy/2026") == "tmpfs"
    assert fs_type("/mnt/nasty") == "ext4"
    assert fs_type("/home/me/Dropbox/Invoices") == "fuse.rclone"


def test_a_bind_mount_of_a_folder_of_the_source_overlaps_it(tmp_path: Path) -> None:
    """A target bind-mounted from a folder inside the source passed as a folder elsewhere:
    mirror copied its own copies into the source, a level deeper every second."""
    table = tmp_path / "mountinfo"
    bound = "40 22 8:1 /home/me/export/backup /mnt/backup rw shared:9 - ext4 /dev/sda1 rw\n"
    other = "41 22 8:17 /home/me/export/backup /mnt/usb rw shared:10 - ext4 /dev/sdb1 rw\n"
    table.write_text(MOUNTINFO + bound + other)
    assert overlapping("/mnt/backup", "/home/me/export", str(table))
    assert overlapping("/mnt/backup/2026", "/home/me/export/backup", str(table))
    assert overlapping("/home/me/export", "/mnt/backup/x", str(table))
    assert not overlapping("/mnt/backup", "/home/me/invoices", str(table))
    assert not overlapping("/mnt/usb", "/home/me/export", str(table))  # another disk's folder of that name
    assert not overlapping("/srv/backup", "/home/me/export", str(table))


def test_no_mount_table_means_unknown(tmp_path: Path) -> None:
    assert mount_of("/srv", str(tmp_path / "missing")) is None


FSTAB = """\
# <file system> <mount point> <type> <options> <dump> <pass>
UUID=1234 /               ext4    errors=remount-ro 0 1
UUID=5678 none            swap    sw              0 0
/swapfile swap            swap    defaults        0 0
UUID=9abc /media/usb\\040disk ext4 defaults,nofail,noauto 0 2
//nas/invoices /mnt/nas   cifs    credentials=/etc/nas,uid=1000 0 0
   # an indented comment
"""


def test_fstab_lists_the_mount_points_of_disks_and_shares(tmp_path: Path) -> None:
    assert fstab_points(FSTAB) == ["/media/usb disk", "/mnt/nas"]
    (tmp_path / "fstab").write_text(FSTAB)
    units = tmp_path / "system"
    units.mkdir()
    (units / "srv-scans.mount").write_text(
        "[Unit]\nDescription=scans\n[Mount]\nWhat=//nas/scans\nWhere=/srv/scans\n"
    )
    (units / "mirror.service").write_text("[Service]\nWhere=/not/a/mount\n")
    assert expected_mounts(str(tmp_path / "fstab"), str(units)) == [
        Expected("/media/usb disk", str(tmp_path / "fstab")),
        Expected("/mnt/nas", str(tmp_path / "fstab")),
        Expected("/srv/scans", str(units / "srv-scans.mount")),
    ]
    assert expected_mounts(str(tmp_path / "none"), str(tmp_path / "none")) == []


def test_a_folder_below_a_listed_mount_point_with_nothing_mounted_is_named() -> None:
    listed = [
        Expected("/mnt/nas", "/etc/fstab"),
        Expected("/mnt/nas/scans/", "x.mount"),
        Expected("/", "/etc/fstab"),
    ]
    assert unmounted_above("/mnt/nas/export/2026", listed, ["/"]) == Expected("/mnt/nas", "/etc/fstab")
    assert unmounted_above("/mnt/nas", listed, ["/"]) == Expected("/mnt/nas", "/etc/fstab")
    assert unmounted_above("/mnt/nas/scans/a", listed, ["/", "/mnt/nas"]) == Expected("/mnt/nas/scans", "x.mount")
    assert unmounted_above("/mnt/nas/export", listed, ["/", "/mnt/nas"]) is None
    assert unmounted_above("/mnt/nasty/export", listed, ["/"]) is None
    assert unmounted_above("/srv/export", listed, ["/"]) is None


def test_a_folder_holding_under_a_tenth_of_its_files_looks_unmounted() -> None:
    assert nearly_none(0, 100) and nearly_none(9, 100) and nearly_none(0, 1)
    assert not nearly_none(10, 100) and not nearly_none(1, 3) and not nearly_none(0, 0)


def test_network_and_fuse_mounts_count_as_network(tmp_path: Path) -> None:
    table = tmp_path / "mountinfo"
    table.write_text(MOUNTINFO)
    networked = {
        p: m.networked
        for p in ("/", "/mnt/nas", "/mnt/nas/local copy", "/home/me/Dropbox", "/mnt/share")
        if (m := mount_of(p, str(table)))
    }
    assert networked == {
        "/": False,
        "/mnt/nas": True,
        "/mnt/nas/local copy": False,
        "/home/me/Dropbox": True,
        "/mnt/share": True,
    }


def test_inode_numbers_are_trusted_where_the_filesystem_keeps_them(tmp_path: Path) -> None:
    """A swap of two files of one size and time is only seen through inode numbers;
    where the filesystem may renumber a file, trusting them would send it again."""
    table = tmp_path / "mountinfo"
    table.write_text(MOUNTINFO)
    paths = ("/srv", "/mnt/nas", "/home/me/Dropbox", "/mnt/old-nas", "/mnt/share", "/media/usb")
    stable = {p: m.stable_inodes for p in paths if (m := mount_of(p, str(table)))}
    assert stable == {
        "/srv": True,
        "/mnt/nas": True,
        "/home/me/Dropbox": False,
        "/mnt/old-nas": False,
        "/mnt/share": True,
        "/media/usb": True,
    }


def test_a_folder_on_a_local_disk_gets_one_worker(tmp_path: Path) -> None:
    """Threads only contend for the GIL when each file costs microseconds."""
    mount = mount_of(str(tmp_path))
    if mount is None or mount.networked:
        pytest.skip(f"the test folder is not on a local disk ({mount})")
    driver = registry.connect(registry.resolve(str(tmp_path / "target"), {}, {}))
    assert driver.default_concurrency == 1


def test_a_folder_on_a_network_mount_gets_four_workers(tmp_path: Path) -> None:
    """On an NFS or SMB mount each file waits for the server: one worker sent a folder of
    invoices to a NAS one round trip at a time, where the README promises four."""
    table = tmp_path / "mountinfo"
    table.write_text(MOUNTINFO)
    workers = {p: workers_on(mount_of(p, str(table))) for p in ("/srv", "/mnt/nas", "/mnt/share", "/media/usb")}
    assert workers == {"/srv": 1, "/mnt/nas": 4, "/mnt/share": 4, "/media/usb": 4}


def test_a_folder_in_the_way_of_a_move_is_named_not_the_temp_name(tmp_path: Path) -> None:
    driver = registry.connect(registry.resolve(str(tmp_path / "target"), {}, {}))
    (tmp_path / "target" / "a.pdf").mkdir(parents=True)
    (tmp_path / "target" / "a.pdf" / "theirs").write_text("x")
    (tmp_path / "target" / ".~mirror-0123456789ab.tmp").write_text("y")
    with pytest.raises(ItemError) as caught:
        driver.move(".~mirror-0123456789ab.tmp", "a.pdf")
    assert str(caught.value) == f"{tmp_path / 'target' / 'a.pdf'} on the target is a folder where a file goes"


def test_a_copy_is_compared_by_its_bytes_never_through_a_link(tmp_path: Path) -> None:
    """Before a copy is kept as newer than its source file: the same bytes need no keeping."""
    driver = registry.connect(registry.resolve(str(tmp_path / "target"), {}, {}))
    (tmp_path / "target").mkdir()
    source = tmp_path / "inv.pdf"
    source.write_bytes(b"invoice 1, total 100.00")
    (tmp_path / "target" / "same.pdf").write_bytes(b"invoice 1, total 100.00")
    (tmp_path / "target" / "other.pdf").write_bytes(b"invoice 1, total 120.00")
    (tmp_path / "target" / "link.pdf").symlink_to(source)
    assert driver.same_bytes(str(source), "same.pdf") is True
    assert driver.same_bytes(str(source), "other.pdf") is False
    assert driver.same_bytes(str(source), "link.pdf") is None
    assert driver.same_bytes(str(source), "gone.pdf") is None


MIB = 1 << 20


def sparse(path: Path, pieces: dict[int, bytes], size: int) -> bytes:
    """A file of ``size`` bytes holding ``pieces`` (offset -> bytes) and holes between;
    returns its bytes."""
    with open(path, "wb") as f:
        for at, piece in pieces.items():
            f.seek(at)
            f.write(piece)
        f.truncate(size)
    return path.read_bytes()


def test_a_sparse_file_keeps_its_holes_on_a_local_target(tmp_path: Path) -> None:
    """A VM image or a database file with holes took its whole size on the target."""
    driver = registry.connect(registry.resolve(str(tmp_path / "target"), {}, {}))
    (tmp_path / "target").mkdir()
    image = tmp_path / "disk.img"
    data = sparse(image, {0: b"header", 40 * MIB: b"middle" * 1000, 80 * MIB - 3: b"end"}, 80 * MIB)
    tail = sparse(tmp_path / "tail.db", {0: b"page"}, 64 * MIB)  # a hole up to its end
    if image.stat().st_blocks * 512 >= MIB:
        pytest.skip("this filesystem keeps no holes")
    driver.put(str(image), "disk.img", 0)
    driver.put(str(tmp_path / "tail.db"), "tail.db", 0)
    for name, want in (("disk.img", data), ("tail.db", tail)):
        copy = tmp_path / "target" / name
        assert copy.read_bytes() == want
        assert copy.stat().st_blocks * 512 < MIB, f"{name}: {copy.stat().st_blocks * 512} bytes allocated"


def test_a_sparse_copy_goes_on_from_where_the_files_stand(tmp_path: Path) -> None:
    """The bulk lane's copy of a large file reads on from the offset it reached."""
    data = sparse(tmp_path / "disk.img", {0: b"a" * 5000, 3 * MIB: b"b" * 5000}, 4 * MIB)
    src = os.open(tmp_path / "disk.img", os.O_RDONLY)
    dst = os.open(tmp_path / "copy.img", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        os.write(dst, os.read(src, 4000))
        local._copy(src, dst)
    finally:
        os.close(src)
        os.close(dst)
    assert (tmp_path / "copy.img").read_bytes() == data


@pytest.mark.parametrize(
    ("fs_type", "folds_case", "refuses"),
    [
        ("vfat", True, "a:b.pdf"),
        ("exfat", True, "draft."),
        ("cifs", True, None),
        ("ext4", False, None),
        (None, False, None),
    ],
)
def test_a_folder_on_a_case_folding_filesystem_is_no_case_sensitive_target(
    fs_type: str | None, folds_case: bool, refuses: str | None
) -> None:
    """On a FAT or exFAT stick, Invoice.pdf and invoice.pdf are one file: written as two,
    the second replaced the first's copy."""
    from mirror.backends.local import LocalDriver, capabilities_on

    from mirror.plan import refused_name

    caps = capabilities_on(fs_type, LocalDriver.capabilities)
    assert caps.case_sensitive is not folds_case
    if refuses is not None:
        assert refused_name(refuses, caps) is not None
    assert refused_name("Invoice 2026.pdf", caps) is None


def test_a_listing_of_a_folder_whose_files_and_folders_go_meanwhile_lists_the_rest(tmp_path: Path) -> None:
    """A watcher renaming its temp files into place, or someone emptying .mirror-trash/ by
    hand, while verify or a listing pass read the target: the file listed, then gone
    before its stat, failed the whole listing (FileNotFoundError), and verify with it."""
    target = tmp_path / "backup"
    for n in range(100):
        (target / f"d{n}").mkdir(parents=True)
        for i in range(30):
            (target / f"d{n}" / f"f{i}.pdf").write_bytes(b"x")
    driver = LocalDriver.connect(str(target), {})
    stop = threading.Event()

    def empty() -> None:
        for folder in sorted(target.iterdir(), reverse=True):
            for file in folder.iterdir():
                file.unlink()
            folder.rmdir()
        stop.set()

    emptier = threading.Thread(target=empty)
    emptier.start()
    try:
        while not stop.is_set():
            listed = driver.list()
            assert all(rel.endswith(".pdf") for rel in listed)
    finally:
        emptier.join()
    assert driver.list() == {}
