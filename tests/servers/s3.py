"""An S3-compatible server on 127.0.0.1 (moto's server mode, in a thread): ``s3_server``, ``s3_target``.

moto keeps the buckets in memory in this process; it only answers HTTP on its port,
so the real s3fs/aiobotocore client is what the tests exercise. Credentials reach the
target through ``${MIRROR_TEST_S3_KEY}``/``${MIRROR_TEST_S3_SECRET}``, as in a config.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from moto import settings as moto_settings
from moto.server import ThreadedMotoServer

from tests.servers.sshd import free_port
from tests.support import TargetSpec

KEY = "mirror-test-key"
SECRET = "mirror-test-secret-91c2"  # a throwaway local test server


@dataclass
class S3Server:
    endpoint: str
    server: ThreadedMotoServer

    def client(self) -> Any:
        """A boto3 client to inspect what landed, independent of the driver under test."""
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=KEY,
            aws_secret_access_key=SECRET,
            region_name="us-east-1",
        )

    def new_bucket(self) -> str:
        name = f"b-{uuid.uuid4().hex[:20]}"
        self.client().create_bucket(Bucket=name)
        return name

    def options(self, **extra: Any) -> dict[str, Any]:
        return {"endpoint_url": self.endpoint, "key": KEY, "secret": SECRET, "region": "us-east-1", **extra}

    def iam_key(self, *statements: dict[str, Any]) -> tuple[str, str]:
        """The access key (id, secret) of a new IAM user whose policy is ``statements``;
        moto holds a key to it only inside :meth:`checking_credentials`."""
        iam = boto3.client(
            "iam",
            endpoint_url=self.endpoint,
            aws_access_key_id=KEY,
            aws_secret_access_key=SECRET,
            region_name="us-east-1",
        )
        user = f"u-{uuid.uuid4().hex[:12]}"
        iam.create_user(UserName=user)
        policy = {"Version": "2012-10-17", "Statement": list(statements)}
        iam.put_user_policy(UserName=user, PolicyName="mirror", PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName=user)["AccessKey"]
        return key["AccessKeyId"], key["SecretAccessKey"]

    @contextmanager
    def checking_credentials(self) -> Iterator[None]:
        """moto checks each request's key and IAM policy, as S3 does, where by default it
        takes any key: KEY, which IAM does not know, is then refused as a revoked key is.
        The switch is global to moto, and so to every server of this process."""
        before = moto_settings.INITIAL_NO_AUTH_ACTION_COUNT
        moto_settings.INITIAL_NO_AUTH_ACTION_COUNT = 0
        try:
            yield
        finally:
            moto_settings.INITIAL_NO_AUTH_ACTION_COUNT = before


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield S3Server(f"http://127.0.0.1:{port}", server)
    finally:
        server.stop()


@pytest.fixture
def s3_target(s3_server: S3Server) -> TargetSpec:
    return TargetSpec(
        "s3",
        f"s3://{s3_server.new_bucket()}/mirror",
        {
            "endpoint_url": s3_server.endpoint,
            "region": "us-east-1",
            "key": "${MIRROR_TEST_S3_KEY}",
            "secret": "${MIRROR_TEST_S3_SECRET}",
        },
        env={"MIRROR_TEST_S3_KEY": KEY, "MIRROR_TEST_S3_SECRET": SECRET},
    )
