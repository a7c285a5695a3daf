"""Secrets scrubbed from what mirror prints, whoever wrote the message."""

from __future__ import annotations

from mirror.redact import SecretFilter, redact_url


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


def test_a_secret_typed_raw_with_a_slash_or_an_at_sign_is_masked_whole() -> None:
    """A secret with '/' in an sftp URL was shown whole by ``mirror status``."""
    assert redact_url("sftp://bob:se/cr3t@127.0.0.1:2/x") == "sftp://bob:***@127.0.0.1:2/x"
    assert redact_url("sftp://bob:p@ss/w0rd@nas.lan/backup") == "sftp://bob:***@nas.lan/backup"
    assert redact_url("s3://AKIAEXAMPLE:wJalr/K7MDENG@bucket") == "s3://AKIAEXAMPLE:***@bucket"
    assert redact_url("webdav://me:1234@host/x") == "webdav://me:***@host/x"


def test_a_port_and_a_path_with_an_at_sign_are_not_taken_for_a_secret() -> None:
    for url in [
        "webdav://cloud.example.com:443/remote.php/dav/files/alice@example.com",
        "sftp://nas:22/backup/bob@home.pdf and then webdav://me@host/x",
        "file:///home/me/a:b@c",
    ]:
        assert redact_url(url) == url
