"""AlignVid's published settings that do not depend on the model, as data; nothing here touches a model.

What the published code does on a given model (its factors and calibrated blocks) lives in that model's
family module (families/, AlignVidSetting); the node combines the two.
"""
from __future__ import annotations

from dataclasses import dataclass

PAPER_GAMMA = 1.35
# The official code gates on timestep t > 900, i.e. sigma > 0.9; its ablation windows split at t = 600.
OFFICIAL_SIGMA_THRESHOLD = 0.9
MID_LATE_SIGMA = 0.6

CUSTOM = "custom"
OFFICIAL = "AlignVid official code"
WAN22_HIGH_NOISE = "AlignVid Wan 2.2: text branch, high-noise expert only"
WINDOW_EARLY = "AlignVid window: early (sigma > 0.9)"
WINDOW_MID = "AlignVid window: mid (0.6 < sigma <= 0.9)"
WINDOW_LATE = "AlignVid window: late (sigma <= 0.6)"
WINDOW_ALL = "AlignVid window: all steps"
# Labels of earlier versions, still accepted (workflows store them) and mapped to what they now mean.
LEGACY = {
    "AlignVid paper": WINDOW_EARLY,
    "AlignVid official Wan2.1 i2v code": OFFICIAL,
}
PRESETS = (CUSTOM, OFFICIAL, WAN22_HIGH_NOISE, WINDOW_EARLY, WINDOW_MID, WINDOW_LATE, WINDOW_ALL, *LEGACY)


@dataclass(frozen=True)
class SigmaWindow:
    """Active where above < sigma <= at_most (None = unbounded), as the official code's t thresholds."""

    above: float | None = None
    at_most: float | None = None

    def describe(self) -> str:
        if self.above is None and self.at_most is None:
            return "every step"
        parts = ([f"sigma > {self.above:g}"] if self.above is not None else []) + (
            [f"sigma <= {self.at_most:g}"] if self.at_most is not None else [])
        return " and ".join(parts)


# The paper's step-schedule ablation, as its code defines the windows (timesteps 1000 -> 0).
WINDOWS = {
    WINDOW_EARLY: SigmaWindow(above=OFFICIAL_SIGMA_THRESHOLD),
    WINDOW_MID: SigmaWindow(above=MID_LATE_SIGMA, at_most=OFFICIAL_SIGMA_THRESHOLD),
    WINDOW_LATE: SigmaWindow(at_most=MID_LATE_SIGMA),
    WINDOW_ALL: SigmaWindow(),
}


def canonical(preset: str) -> str:
    """The current name of a preset (earlier labels are mapped); ValueError for an unknown one."""
    if preset in LEGACY:
        return LEGACY[preset]
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {list(PRESETS)}, got {preset!r}")
    return preset
