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
