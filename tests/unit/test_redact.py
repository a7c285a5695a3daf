"""Secrets scrubbed from what mirror prints, whoever wrote the message."""

from __future__ import annotations

from mirror.redact import SecretFilter


def test_a_login_a_library_echoes_without_its_scheme_is_scrubbed() -> None:
    scrub = SecretFilter().scrub
    echoed = 'Invalid bucket name "AKIAEXAMPLE:wJalrXUtnFEMI-SECRET@bucket": Bucket name must match'
    assert scrub(echoed) == 'Invalid bucket name "AKIAEXAMPLE:***@bucket": Bucket name must match'
    assert scrub("cannot connect to backup:hunter2!x@nas.lan:22") == "cannot connect to backup:***@nas.lan:22"
    assert scrub("sftp://me:s3cret@nas/x") == "sftp://me:***@nas/x"


def test_names_and_messages_that_only_look_like_a_login_are_left_alone() -> None:
    scrub = SecretFilter().scrub
    for text in [
        "not mirrored: 10:30@office.pdf: the target refuses the character(s) ':'",
        "sftp: cannot connect to me@127.0.0.1:1 (connection refused or unreachable)",
        "webdav: https://cloud.example.com:443/remote.php/dav/files/alice@example.com",
        "failed: Re: invoice@company.pdf: too large",
    ]:
        assert scrub(text) == text
