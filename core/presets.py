"""Settings published with AlignVid, as data. The nodes apply them; nothing here touches a model."""
from __future__ import annotations

from dataclasses import dataclass

# The official AlignVid Wan2.1-14B i2v block schedule: 28 of its 40 blocks.
WAN21_14B_BLOCKS = "0,2-7,10-20,25-32,37,38"
# The FramePack-F1 single-block schedule from the paper (HunyuanVideo-shaped: 20 double, 40 single blocks).
FRAMEPACK_F1_BLOCKS = "s0-7,s12-16,s18-20,s23,s25,s29,s32,s36-39"
# The official code gates on timestep t > 900, i.e. sigma > 0.9.
OFFICIAL_SIGMA_THRESHOLD = 0.9
PAPER_GAMMA = 1.35

CUSTOM = "custom"
PAPER = "AlignVid paper"
OFFICIAL_WAN_I2V = "AlignVid official Wan2.1 i2v code"
PRESETS = (CUSTOM, PAPER, OFFICIAL_WAN_I2V)


@dataclass(frozen=True)
class CalibratedBlocks:
    family: str
    n_double: int
    n_single: int
    blocks: str


CALIBRATED_BLOCKS = (
    CalibratedBlocks("Wan", 40, 0, WAN21_14B_BLOCKS),
    CalibratedBlocks("HunyuanVideo", 20, 40, FRAMEPACK_F1_BLOCKS),
)


def calibrated_blocks(family: str, n_double: int, n_single: int) -> str | None:
    """The paper's block list for a model of this family and depth, if the paper published one."""
    for entry in CALIBRATED_BLOCKS:
        if (entry.family, entry.n_double, entry.n_single) == (family, n_double, n_single):
            return entry.blocks
    return None
