"""A backend whose libraries are not installed is named with its install hint."""

from __future__ import annotations

import pytest

from mirror.errors import ConfigError
from mirror.registry import BackendInfo, load_driver_class

#: like Google Drive's google.oauth2, a module inside a package that is not installed
GDRIVE_LIKE = BackendInfo(
    "gdrive", "Google Drive", "mirror.backends.gdrive:GDriveDriver", ("mirror_absent_pkg.oauth2",), "gdrive"
)


def test_a_module_of_a_missing_package_counts_as_missing() -> None:
    assert GDRIVE_LIKE.missing() == ["mirror_absent_pkg.oauth2"]


def test_the_backend_says_what_to_install_rather_than_failing_inside() -> None:
    hint = r"needs mirror_absent_pkg\.oauth2.*pip install 'fsspec-mirror\[gdrive\]'"
    with pytest.raises(ConfigError, match=hint):
        load_driver_class(GDRIVE_LIKE)
