"""Runs the frontend's JavaScript tests (tests/js, `node --test`) inside pytest, so the README's single test
command covers both languages. Without node on PATH the test is skipped, loudly: the JavaScript side of the
block-list grammar (tests/blocklist_cases.json) and the preview are then untested."""
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
JS_TESTS = sorted((ROOT / "tests" / "js").glob("*.test.mjs"))


def test_javascript_tests_pass_under_node():
    node = shutil.which("node")
    if node is None:
        pytest.skip("!!! node is not on PATH: the JavaScript tests (tests/js) did NOT run; install Node.js 18+ to run them")
    assert JS_TESTS, "no tests/js/*.test.mjs found"
    done = subprocess.run(
        [node, "--test", *[str(p.relative_to(ROOT)) for p in JS_TESTS]],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    failed = [line for line in done.stdout.splitlines() if line.startswith("not ok")]
    assert done.returncode == 0, "node --test failed:\n" + "\n".join(failed) + "\n" + done.stdout[-4000:] + done.stderr[-2000:]
