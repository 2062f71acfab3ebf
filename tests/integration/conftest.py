"""Integration tests: the pack against a real ComfyUI (see comfy_env.py and tiny_models.py).

Without a ComfyUI tree every test here is skipped, and the header and summary say so loudly, so a green
run cannot be mistaken for a tested one. Set TOKENFOCUS_REQUIRE_COMFYUI=1 (e.g. in CI that has ComfyUI)
to make a missing ComfyUI fail the run instead.

The `tokenfocus` package itself is registered by tests/conftest.py, which pytest loads first.
"""
import os
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # comfy_env and tiny_models are plain modules next to the tests
    sys.path.insert(0, str(HERE))

import comfy_env  # noqa: E402  (imports nothing from ComfyUI)

COMFYUI = comfy_env.find_comfyui()


def _missing_reason(outcome="SKIPPED"):
    where = os.environ.get("COMFYUI_PATH")
    why = f"COMFYUI_PATH={where} is not a ComfyUI tree" if where else "COMFYUI_PATH is not set"
    return (f"ComfyUI not found ({why}, and the pack is not inside ComfyUI/custom_nodes): "
            f"integration tests {outcome}; set COMFYUI_PATH to a ComfyUI source tree")


def pytest_report_header(config):
    if COMFYUI is None:
        return ["!" * 100, "!!! " + _missing_reason(), "!" * 100]
    return [f"ComfyUI for integration tests: {COMFYUI}"]


def pytest_collection_modifyitems(config, items):
    if COMFYUI is not None:
        return
    if os.environ.get("TOKENFOCUS_REQUIRE_COMFYUI") == "1":
        raise pytest.UsageError(_missing_reason("FAILED (TOKENFOCUS_REQUIRE_COMFYUI=1)"))
    skip = pytest.mark.skip(reason=_missing_reason())
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(skip)


def pytest_terminal_summary(terminalreporter):
    if COMFYUI is None:
        terminalreporter.write_sep("!", _missing_reason(), red=True, bold=True)


@pytest.fixture(scope="session")
def comfy():
    """The imported ComfyUI (comfy_env.import_comfyui()): `comfy.nodes`, `comfy.comfy.sample`..."""
    import torch

    # The tiny models gain nothing from intra-op threads, and on a small shared CI box each op then
    # waits on busy cores (about 10 ms an op, 30x slower). One thread per process also keeps every
    # result in the session computed the same way.
    torch.set_num_threads(1)
    return comfy_env.import_comfyui()


@pytest.fixture(scope="session")
def tiny(comfy):
    """tiny(family, seed=0, **depth) -> tiny_models.TinyModel, built once per session; each call returns a
    copy with its own ModelPatcher clone, so patches added by one test do not leak into the next.
    Do not modify the shared conds or latent in place."""
    import tiny_models

    built = {}

    def get(family, seed=0, **depth):
        key = (family, seed, tuple(sorted(depth.items())))
        if key not in built:
            built[key] = tiny_models.build(family, seed, **depth)
        return built[key].clone()

    return get


@pytest.fixture(scope="session")
def tokenfocus():
    """The pack, loaded under its stable name by tests/conftest.py."""
    return sys.modules["tokenfocus"]
