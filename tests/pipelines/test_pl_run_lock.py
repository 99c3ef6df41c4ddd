"""``output_lock.holding``: the one place a run takes and releases the output lock. Another
process is refused while the block runs, and may lock the directory once the block has ended,
however it ended; a ``file://`` spelling of the directory is the directory."""
from __future__ import annotations

import subprocess
import sys
from urllib.parse import quote

import pytest

from pipelines.output_lock import LOCK, holding, lock_output, release_output

_TRY = ("import sys; from pipelines.infra.errors import OutputError; "
        "from pipelines.output_lock import lock_output\n"
        "try:\n    lock_output(sys.argv[1])\nexcept OutputError as e:\n    print(e)\n"
        "else:\n    print('locked')")


def _other_process_locks(out) -> str:
    """What another process gets when it tries the lock: 'locked', or the refusal's line."""
    return subprocess.run([sys.executable, "-c", _TRY, str(out)], capture_output=True,
                          text=True, check=True, timeout=60).stdout.strip()


def test_holding_refuses_others_and_releases_however_the_block_ends(tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    with pytest.raises(RuntimeError, match="the run failed"):
        with holding(out, "fp"):
            assert (out / LOCK).is_file()
            assert "is in use by another fewtrunc run" in _other_process_locks(out)
            raise RuntimeError("the run failed")
    assert not (out / LOCK).exists()
    assert _other_process_locks(out) == "locked"
    with holding(out, "fp"):  # and again, ending without an error
        assert "in use" in _other_process_locks(out)
    assert not (out / LOCK).exists() and _other_process_locks(out) == "locked"


def test_a_file_url_releases_the_lock_of_its_path(tmp_path):
    """A lock taken for ``output.dir`` as a path is released when the run names it as a
    ``file://`` URL (the config's spelling), and the other way round."""
    out = tmp_path / "a b" / "o"
    out.mkdir(parents=True)
    url = "file://localhost" + quote(str(out))
    lock_output(out, "fp")
    release_output(url)
    assert not (out / LOCK).exists() and _other_process_locks(out) == "locked"
    with holding(url, "fp"):
        assert (out / LOCK).is_file() and "in use" in _other_process_locks(out)
    assert not (out / LOCK).exists() and _other_process_locks(out) == "locked"
