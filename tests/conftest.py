"""Test set-up shared by the unit and integration suites.

The pack is a ComfyUI custom node folder whose name is not fixed (a clone may be called anything), so the
tests load it by path under one stable package name, `tokenfocus`. Loading the package runs only its
`__init__.py`, which imports nothing from ComfyUI until ComfyUI asks for the nodes.
"""
import importlib.util
import sys
from pathlib import Path

PACK_ROOT = Path(__file__).resolve().parent.parent


def _load_pack_as_tokenfocus():
    if "tokenfocus" in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(
        "tokenfocus", PACK_ROOT / "__init__.py", submodule_search_locations=[str(PACK_ROOT)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["tokenfocus"] = module
    spec.loader.exec_module(module)


_load_pack_as_tokenfocus()


# ------------------------------------------------------------------------------------- required runs
# TOKENFOCUS_REQUIRE_COMFYUI=1 (CI) means everything must run: a missing ComfyUI fails the run
# (tests/integration/conftest.py), and a test that skips fails too, unless the ComfyUI under test lacks
# what it needs (comfy_env.host_lacks: a file its source tree does not ship, a class or route it lacks).
import os  # noqa: E402

import pytest  # noqa: E402

sys.path.insert(0, str(PACK_ROOT / "tests" / "integration"))  # comfy_env: a plain module, imports no ComfyUI
from comfy_env import HOST_LACKS  # noqa: E402


def _skip_reason(report):
    longrepr = report.longrepr
    return longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("TOKENFOCUS_REQUIRE_COMFYUI") != "1" or not report.skipped or hasattr(report, "wasxfail"):
        return
    reason = _skip_reason(report)
    if HOST_LACKS not in reason:
        report.outcome = "failed"
        report.longrepr = f"skipped, but TOKENFOCUS_REQUIRE_COMFYUI=1 requires every test to run: {reason}"
