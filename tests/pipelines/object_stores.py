"""Real S3 and GCS protocol servers on 127.0.0.1 for the tests: moto's standalone S3 server
(``moto[server]``) and ``gcp-storage-emulator``, each on a free port, started once per session
and stopped at its end. Tests that use them skip, with the reason, when the ``cloud`` extra is
not installed.

    from tests.pipelines.object_stores import object_store, s3_server, gcs_server  # noqa: F401

``object_store`` (parametrized ``s3``/``gs``) points the standard environment variables at one
server for the test and gives it a fresh bucket.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import urllib.request
import uuid
from contextlib import contextmanager

import pytest

NEEDS = "the cloud extra is not installed (pip install -e .[cloud]): {}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class S3Server:
    """moto's standalone server: the S3 REST protocol over HTTP."""

    scheme = "s3"

    def __init__(self):
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # a line per request otherwise
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()
        self.env = {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": "testing",
                    "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}

    def create_bucket(self, name: str) -> None:
        import boto3

        boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                     aws_access_key_id="testing", aws_secret_access_key="testing"
                     ).create_bucket(Bucket=name)

    def stop(self) -> None:
        self._server.stop()


class GcsServer:
    """gcp-storage-emulator: the GCS JSON API over HTTP, in memory."""

    scheme = "gs"

    def __init__(self):
        from gcp_storage_emulator.server import create_server

        logging.getLogger("gcp_storage_emulator").setLevel(logging.WARNING)
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._server = create_server("127.0.0.1", self.port, in_memory=True)
        self._server.start()
        self.env = {"STORAGE_EMULATOR_HOST": self.endpoint}

    def create_bucket(self, name: str) -> None:
        req = urllib.request.Request(f"{self.endpoint}/storage/v1/b?project=test",
                                     data=json.dumps({"name": name}).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
        urllib.request.urlopen(req, timeout=10).read()

    def stop(self) -> None:
        self._server.stop()


@contextmanager
def environment(env: dict):
    """``os.environ`` with ``env`` set, restored afterwards."""
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _start(cls, module: str):
    try:
        __import__(module)
    except ImportError as exc:
        pytest.skip(NEEDS.format(exc))
    return cls()


@pytest.fixture(scope="session")
def s3_server():
    server = _start(S3Server, "moto.server")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def gcs_server():
    server = _start(GcsServer, "gcp_storage_emulator.server")
    yield server
    server.stop()


class Store:
    """A fresh bucket on one server, with the environment pointing at it."""

    def __init__(self, server):
        self.server = server
        self.bucket = f"fewtrunc-{uuid.uuid4().hex[:12]}"
        server.create_bucket(self.bucket)
        self.root = f"{server.scheme}://{self.bucket}"

    def url(self, *parts: str) -> str:
        return "/".join([self.root, *parts])


@pytest.fixture(params=["s3", "gs"])
def object_store(request, monkeypatch):
    server = request.getfixturevalue("s3_server" if request.param == "s3" else "gcs_server")
    for k, v in server.env.items():
        monkeypatch.setenv(k, v)
    return Store(server)


class AuthS3Server:
    """moto's S3 server in a process of its own that checks every request's signature and the
    IAM policies of its user (moto's ``INITIAL_NO_AUTH_ACTION_COUNT``, a process-wide setting:
    the shared ``s3_server`` accepts any key). Set up open, then closed (``/moto-api/reset-auth``
    to 0); ``admin`` holds the keys of a user allowed everything, for setting up tests after."""

    scheme = "s3"

    def __init__(self):
        import subprocess
        import sys
        import time

        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "inf"},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=1).read()
                break
            except OSError:
                if self._proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"moto's server did not start on {self.endpoint}")
                time.sleep(0.05)
        self.admin = self._keys("testing", "testing", "admin", ["*"], ["*"])
        req = urllib.request.Request(f"{self.endpoint}/moto-api/reset-auth", data=b"0",
                                     method="POST", headers={"Content-Type": "text/plain"})
        urllib.request.urlopen(req, timeout=10).read()

    def client(self, service: str, keys: dict):
        import boto3

        return boto3.client(service, endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id=keys["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=keys["AWS_SECRET_ACCESS_KEY"])

    def _keys(self, key_id: str, secret: str, name: str, actions: list, resources: list) -> dict:
        """A new IAM user allowed ``actions`` on ``resources`` (ARNs); its keys as the
        environment variables, signing with ``key_id``/``secret``."""
        iam = self.client("iam", {"AWS_ACCESS_KEY_ID": key_id, "AWS_SECRET_ACCESS_KEY": secret})
        iam.create_user(UserName=name)
        policy = {"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": actions, "Resource": resources}]}
        iam.put_user_policy(UserName=name, PolicyName="fewtrunc-test",
                            PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName=name)["AccessKey"]
        return {"AWS_ACCESS_KEY_ID": key["AccessKeyId"],
                "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}

    def user(self, actions: list, resources: list) -> dict:
        """The environment of a new user allowed only ``actions`` on ``resources``."""
        admin = self.admin
        keys = self._keys(admin["AWS_ACCESS_KEY_ID"], admin["AWS_SECRET_ACCESS_KEY"],
                          f"user-{uuid.uuid4().hex[:8]}", actions, resources)
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_REGION": "us-east-1", **keys}

    def create_bucket(self, name: str) -> None:
        self.client("s3", self.admin).create_bucket(Bucket=name)

    def put(self, url: str, data: bytes) -> None:
        bucket, key = url[len("s3://"):].split("/", 1)
        self.client("s3", self.admin).put_object(Bucket=bucket, Key=key, Body=data)

    def stop(self) -> None:
        import subprocess

        self._proc.terminate()
        try:
            self._proc.wait(10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


@pytest.fixture(scope="session")
def s3_auth_server():
    try:
        __import__("moto.server")
        __import__("boto3")
    except ImportError as exc:
        pytest.skip(NEEDS.format(exc))
    server = AuthS3Server()
    try:
        yield server
    finally:
        server.stop()
