"""Find and import a real ComfyUI for the integration tests.

The integration tests run the pack against ComfyUI's own model classes and samplers rather than mocks,
so they need a ComfyUI source tree. Importing it costs about 11 s, so `import_comfyui()` does it once
per process and returns the same namespace afterwards.
"""
import importlib
import os
import sys
import types
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
STAND_INS = Path(__file__).resolve().parent / "stand_ins"

# The modules the tests use; importing them here surfaces a broken environment at once, not mid-test.
MODULES = (
    "comfy.model_management",
    "comfy.model_patcher",
    "comfy.model_base",
    "comfy.supported_models",
    "comfy.samplers",
    "comfy.sample",
    "comfy.conds",
    "comfy.clip_vision",
    "comfy.patcher_extension",
    "comfy.utils",
    "nodes",
)

_env = None

# The one reason a test against a real ComfyUI may skip when ComfyUI is required (CI): the host itself lacks
# what the test needs (a file its source tree does not ship, a class or route it does not have).
HOST_LACKS = "this ComfyUI lacks it:"


def host_lacks(what):
    """Skip the running test because the ComfyUI under test does not have `what`."""
    import pytest

    pytest.skip(f"{HOST_LACKS} {what}")


def _is_comfyui(path):
    return (Path(path) / "comfy" / "model_patcher.py").is_file()


def find_comfyui():
    """ComfyUI's root, or None: $COMFYUI_PATH if set, else the ComfyUI this pack is installed in
    (ComfyUI/custom_nodes/<pack>)."""
    env = os.environ.get("COMFYUI_PATH")
    if env:
        path = Path(env).expanduser().resolve()
        return path if _is_comfyui(path) else None
    for root in _pack_roots():
        if _is_comfyui(root.parent.parent):
            return root.parent.parent.resolve()
    return None


def comfyui_version(root):
    """The version a ComfyUI tree declares: upstream's comfyui_version.py, or a packaged tree's `comfy`
    package. Read from the files, without importing them; None if neither declares one."""
    import re

    for path in (Path(root) / "comfyui_version.py", Path(root) / "comfy" / "__init__.py"):
        if path.is_file():
            found = re.search(r'__version__\s*=\s*"([^"]+)"', path.read_text())
            if found:
                return found.group(1)
    return None


def _pack_roots():
    yield REPO_ROOT
    # custom_nodes/<pack> is often a symlink to a checkout; Python and pytest resolve it away, the
    # shell's $PWD keeps it.
    pwd = os.environ.get("PWD")
    if pwd:
        yield from (p for p in (Path(pwd), *Path(pwd).parents) if p.parent.name == "custom_nodes")


def import_comfyui():
    """Import ComfyUI once and return a namespace of its modules (`env.nodes`, `env.comfy.sample`...).

    Also holds `path` (the ComfyUI root) and `torchvision_stand_in` (whether the stand-in was needed)."""
    global _env
    if _env is not None:
        return _env
    path = find_comfyui()
    if path is None:
        raise RuntimeError("ComfyUI not found: set COMFYUI_PATH to a ComfyUI source tree")

    # First on the path: `python -m pytest` puts the working directory (this pack, which has its own
    # `nodes` package) ahead of everything else, and ComfyUI's top-level `nodes` module must win.
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
    stale = sys.modules.get("nodes")
    if stale is not None and not str(getattr(stale, "__file__", "")).startswith(str(path)):
        del sys.modules["nodes"]

    # ComfyUI parses its command line only under main.py; without --cpu, comfy.model_management asks
    # CUDA for the device at import time and fails on a CPU-only torch.
    import comfy.cli_args

    if "comfy.model_management" not in sys.modules:
        comfy.cli_args.args.cpu = True

    try:
        import torchvision  # noqa: F401
        stand_in = False
    except Exception:  # no wheel at all, or one built for another torch ("operator torchvision::nms ...")
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        sys.path.insert(1, str(STAND_INS))
        stand_in = True

    modules = {name: importlib.import_module(name) for name in MODULES}

    # tqdm bars from every sampler call would bury pytest's output.
    modules["comfy.utils"].set_progress_bar_enabled(False)

    _env = types.SimpleNamespace(
        path=path,
        torchvision_stand_in=stand_in,
        comfy=sys.modules["comfy"],
        nodes=modules["nodes"],
        modules=modules,
    )
    return _env
