"""The suite's own rules (tests/conftest.py): under CI=true a skip fails, except GPU tests and, when no
shared folder exists and none is named, tests that need MATCHSIG_SHARED_DATA."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent

SAMPLE = '''
import pytest
from conftest import needs_shared

def test_runs():
    assert True

def test_skips():
    pytest.skip("nothing to test here")

@pytest.mark.gpu
def test_gpu():
    pytest.skip("no CUDA device")

@needs_shared("no-such-subfolder-xyz")
def test_shared():
    pass
'''


def _pytest(tmp_path: Path, **env: str) -> tuple[dict[str, int], str]:
    """Run a sample test file under a copy of this suite's conftest, in a checkout-like tree whose
    parent has no shared/ folder."""
    tests = tmp_path / "repo" / "tests"
    tests.mkdir(parents=True)
    shutil.copy(TESTS / "conftest.py", tests / "conftest.py")
    (tests / "test_sample.py").write_text(SAMPLE)
    full_env = {k: v for k, v in os.environ.items() if k not in ("CI", "MATCHSIG_SHARED_DATA")}
    full_env.update(env)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", str(tests)],
                          capture_output=True, text=True, env=full_env, cwd=tests.parent, timeout=300)
    last = proc.stdout.strip().splitlines()[-1]
    counts = {word.rstrip("s"): int(n) for n, word in re.findall(r"(\d+) (passed|failed|skipped|errors?)", last)}
    # a skip in setup (a skipif mark) turned into a failure is counted by pytest as an error
    failures = counts.pop("failed", 0) + counts.pop("error", 0)
    if failures:
        counts["failed"] = failures
    assert proc.returncode == (1 if failures else 0), proc.stdout
    return counts, proc.stdout


def test_skips_fail_under_ci(tmp_path):
    shared = tmp_path / "named-shared-data"
    shared.mkdir()
    counts, out = _pytest(tmp_path, CI="true", MATCHSIG_SHARED_DATA=str(shared))
    # the plain skip fails; so does the shared-data one: the folder was named and lacks what it needs
    assert counts == {"passed": 1, "failed": 2, "skipped": 1}, out
    assert "skipped under CI=true" in out and "no CUDA device" in out


def test_missing_default_shared_folder_may_skip_under_ci(tmp_path):
    """A fresh clone with nothing beside it: only the shared-data test (and the GPU one) may skip."""
    counts, out = _pytest(tmp_path, CI="true")
    assert counts == {"passed": 1, "failed": 1, "skipped": 2}, out
    assert "shared data, not shipped" in out and "no-such-subfolder-xyz" in out  # -rs: the reason in one line
    assert "1 test(s) skipped: they need" in out
