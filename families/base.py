"""What a family module declares, and the error for models TokenFocus does not serve.

A family module (families/<name>.py) holds everything TokenFocus knows about one model family and exports
one `FAMILY`. Nothing outside the family modules names a family: the registry (families/__init__.py)
iterates them. Imports no ComfyUI code at import time: a family looks at the model only in `detect`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable


# A plain ValueError: ComfyUI shows an exception's module path to the client, and a class of the pack's own
# would carry the server's file-system path (see core.blocklist.BlockListError).
UnsupportedModelError = ValueError


# Where the frame grid's tokens sit among the image tokens of an attention call (the model adds extra
# image tokens for reference images in some variants); read by the Attention Inspector.
GRID_FIRST = "first"                       # extra tokens (Kontext, Phantom) come after the grid
GRID_LAST = "last"                         # extra tokens (ref_latent) come first
GRID_AFTER_REFERENCE = "after_reference"   # one reference frame first (Wan Fun models, ref_conv)


@dataclass(frozen=True)
class PreviewDepth:
    """One row of the preview's depth table (js/families.js is generated from these).

    files: alternatives, each a tuple of substrings that must all occur in a loader's file name (lowercased).
    """

    key: str
    label: str
    double: int
    single: int
    files: tuple


@dataclass(frozen=True)
class AlignVidSetting:
    """What AlignVid's published code does on one model, as data for Attention Temperature's presets.

    factors: attention kind -> (power of gamma on Q, power of gamma on K) as the code applies them.
    blocks: its block list where it was calibrated on this very model, else what the preset uses and why.
    """

    source: str                 # which published code, in words
    factors: tuple              # ((kind, q_power, k_power), ...)
    blocks: str
    blocks_note: str            # "calibrated on …" or "no calibration exists for …; uses …"
    cfg: float | None = None    # the guidance scale the code samples with, if it fixes one
    sampler: str = ""           # the sampler the code uses, if it fixes one
    notes: tuple = ()


@dataclass(frozen=True)
class ModelProfile:
    """What the nodes need to know about the detected model, carried by its adapter (deep-copyable data)."""

    family: str                 # the family's name, as messages call it
    variant: str                # the variant detected, in words
    encoder: str                # key of the text-encoder layout that conditions it (runtime/tokens.py)
    padding_note: str           # how TORA finds the real text rows on this model
    grid_layout: str = GRID_FIRST
    patch: tuple | None = None  # (pt, ph, pw) latent cells per token, where the model does not say (Inspector)
    alignvid: AlignVidSetting | None = None
    alignvid_missing: str = ""  # why there is no published AlignVid setting for this model
    expert_boundary: float | None = None   # Wan 2.2 A14B: sigma where the high-noise expert hands over
    block_note: str = ""        # why some blocks' inputs are out of reach (a model with post-block patches only)
    text_edits_missing: str = ""   # why no block's text can be edited (Token Spacing, Residual Alignment refuse)
    # Rows a conditioning of this model can carry besides the prompt's, when it has more rows than the prompt's
    # token weights describe: where they sit ("after": appended, "before": in front of the prompt; "": none,
    # the rows must match) and what they are, in words (runtime/prompt_rows.py).
    added_rows: str = ""
    added_rows_note: str = ""


@dataclass(frozen=True)
class Family:
    """One model family: how to recognise it and what the editor shows for it.

    detect(diffusion_model) returns an adapter (runtime/adapters.py) for a model of this family, None for a
    model of another family, and raises UnsupportedModelError for a variant of this family's classes that
    TokenFocus does not handle (naming the variant and why).
    """

    name: str
    supported: str                          # the variants served, for "Supported: …" messages
    detect: Callable
    preview: tuple = ()                     # PreviewDepth rows
    encoders: tuple = ()                    # keys of the text-encoder layouts of its variants
    refuses: tuple = field(default=())      # variants it recognises and refuses, for the docs
