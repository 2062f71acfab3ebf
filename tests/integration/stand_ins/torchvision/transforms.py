"""STAND-IN for torchvision.transforms (see the package docstring): importable, but every attribute
(`Compose`, `Normalize`, `functional`, `InterpolationMode`...) raises NotImplementedError."""


def __getattr__(attr):
    from . import unavailable  # deferred: the package imports this module while it is being set up

    return unavailable(__name__, attr)
