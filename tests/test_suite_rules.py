"""The suite's own rules (tests/conftest.py): under CI=true a skip fails, except GPU tests and, when no
shared folder exists and none is named, tests that need MATCHSIG_SHARED_DATA. And the code's size
rules: no module of src/matchsig over 500 lines, no function over 80 (``python tests/test_suite_rules.py``
prints the largest of each)."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent
SRC = TESTS.parent / "src" / "matchsig"
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80

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


# ---- size rules -------------------------------------------------------------------------------------


def code_sizes(root: Path = SRC) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """(lines, module) of every module below ``root`` and (lines, place) of every function and method
    (``def`` line to last line, nested ones counted on their own too), largest first."""
    modules, functions = [], []
    for path in sorted(root.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        name = str(path.relative_to(root.parent))
        modules.append((len(text.splitlines()), name))
        for node in ast.walk(ast.parse(text, filename=name)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                functions.append((node.end_lineno - node.lineno + 1, f"{name}:{node.lineno} {node.name}"))
    return sorted(modules, reverse=True), sorted(functions, reverse=True)


def _largest(sizes: list[tuple[int, str]], n: int = 5) -> str:
    return ", ".join(f"{where} ({lines})" for lines, where in sizes[:n])


def test_code_size_rules_count_what_they_claim(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "a.py").write_text("def f():\n    return 1\n\n\nclass C:\n    def m(self):\n        x = 1\n        return x\n")
    (pkg / "sub" / "b.py").write_text("async def g():\n" + "    pass\n" * 90)
    modules, functions = code_sizes(pkg)
    assert modules == [(91, "pkg/sub/b.py"), (8, "pkg/a.py")]
    assert functions == [(91, "pkg/sub/b.py:1 g"), (3, "pkg/a.py:6 m"), (2, "pkg/a.py:1 f")]


def test_no_module_over_500_lines_and_no_function_over_80():
    modules, functions = code_sizes()
    print(f"largest modules: {_largest(modules)}\nlargest functions: {_largest(functions)}")
    big_modules = [(n, m) for n, m in modules if n > MAX_MODULE_LINES]
    big_functions = [(n, f) for n, f in functions if n > MAX_FUNCTION_LINES]
    assert len(modules) > 20 and not big_modules and not big_functions, (
        f"over {MAX_MODULE_LINES} lines: {_largest(big_modules, 50) or 'none'}; "
        f"functions over {MAX_FUNCTION_LINES} lines: {_largest(big_functions, 50) or 'none'}"
    )


if __name__ == "__main__":
    _modules, _functions = code_sizes()
    print(f"largest modules: {_largest(_modules, 10)}\nlargest functions: {_largest(_functions, 10)}")
