"""What the Ray driver hands ``ray.init``: inside a job, not what the job's runtime environment
already carries (the jobs themselves run in ``test_engines_ray_cluster.py``)."""
from __future__ import annotations

import json


def test_a_jobs_own_storage_settings_are_not_passed_again(monkeypatch):
    """Inside a job whose runtime environment sets AWS_* (``--runtime-env-json``, or a run
    submitted with ``ray.address=http://``), ``ray.init`` gets none of them: Ray refuses to
    merge a key given twice. Keys the job does not set still go to the workers."""
    from pipelines.engines.ray_engine import worker_env

    for key in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_REGION"):
        monkeypatch.setenv(key, "x")
    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)
    assert set(worker_env()) >= {"AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_REGION"}
    job = {"runtime_env": {"working_dir": "x", "env_vars": {"AWS_ENDPOINT_URL": "x",
                                                            "AWS_ACCESS_KEY_ID": "x"}}}
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", json.dumps(job))
    assert worker_env() == {"AWS_REGION": "x"}


def test_a_job_without_storage_settings_says_how_to_pass_them(monkeypatch):
    """``export AWS_...`` in the shell, then ``ray job submit``: the job has none of them, and
    its one line says the three ways that do reach it."""
    from pipelines.engines.ray_engine import _in_job_hint
    from pipelines.infra.storage import StorageError
    from pipelines.infra.storage.filesystems import _ENV

    for key in _ENV:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", json.dumps({"runtime_env": {}}))
    exc = StorageError("s3://b/in", "cannot reach the AWS S3 endpoint (Could not resolve "
                       "hostname)", "unreachable")
    _in_job_hint(exc)
    assert str(exc).startswith("s3://b/in: cannot reach the AWS S3 endpoint")
    assert "--runtime-env-json" in str(exc) and "before `ray start`" in str(exc)
    assert "ray.address=http://" in str(exc) and "\n" not in str(exc)
    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR")  # not a job: nothing added
    plain = StorageError("s3://b/in", "cannot reach the AWS S3 endpoint", "unreachable")
    _in_job_hint(plain)
    assert str(plain) == "s3://b/in: cannot reach the AWS S3 endpoint"
