"""STAND-IN for torchvision. This is NOT torchvision.

Used only by TokenFocus's integration tests, and only when the real torchvision cannot be imported
(`tests/integration/comfy_env.py` puts this folder on sys.path after `import torchvision` fails). There
is no CPU build of torchvision to install next to a CPU torch, yet ComfyUI imports it at module level in
files that `comfy.model_base` reaches (cosmos, cascade and ACE models), so without something under this
name ComfyUI cannot be imported at all.

It holds only what those imports need to succeed: the package and its `transforms` submodule. The
models the tests build never call torchvision; anything looked up at run time raises NotImplementedError
so that a test which does reach it fails loudly instead of computing something wrong.
"""

from . import transforms  # `import torchvision.transforms` and `from torchvision import transforms`

STAND_IN = True  # lets a test tell this module from the real torchvision


def unavailable(module_name, attr):
    """Module `__getattr__` body shared by the stand-in's modules."""
    if attr.startswith("__"):
        # Dunder look-ups (`__version__`, `__wrapped__`...) are how import machinery, transformers and
        # inspect probe a module: they must see a plain missing attribute.
        raise AttributeError(f"module {module_name!r} has no attribute {attr!r}")
    raise NotImplementedError(
        f"{module_name}.{attr} is not available: `{module_name}` is the TokenFocus test stand-in for "
        f"torchvision ({__file__}), which only lets ComfyUI import. Install the real torchvision to use it."
    )


def __getattr__(attr):
    return unavailable(__name__, attr)
