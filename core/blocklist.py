"""The block-list syntax shared by every TokenFocus node (and mirrored in js/blocklist.js).

    ""            no block (the node does nothing)
    "all"         every block of every kind
    "0,2-7,10"    main blocks: Wan and SD3 joint blocks, the double blocks of Flux and HunyuanVideo
    "s0-7,s12"    single-stream blocks of Flux and HunyuanVideo
    "d3"          an explicit main/double block (same as "3")

Items are separated by commas; spaces are ignored; ranges are inclusive. Parsing knows nothing of the
model: indices are checked against the model's depth by `resolve_blocks` when the node runs.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

DOUBLE = "double_block"
SINGLE = "single_block"

_ITEM = re.compile(r"^(?P<prefix>[ds]?)(?P<start>[0-9]+)(?:-(?P=prefix)?(?P<end>[0-9]+))?$")
# No model is this deep; the cap keeps a typo such as 0-99999999999 from building a huge set.
MAX_INDEX = 9999
_SYNTAX_HINT = "write indices and ranges such as 0,2-7,s0-3, or all, or leave it empty for none"


# A block list that cannot be parsed, or that does not fit the model. A plain ValueError, not a subclass:
# ComfyUI reports an error's type with its module, and a custom node's module is named after its folder
# on the server (a path the client has no business seeing).
BlockListError = ValueError


@dataclass(frozen=True)
class BlockSelection:
    everything: bool = False
    double: frozenset = frozenset()
    single: frozenset = frozenset()

    def is_empty(self) -> bool:
        return not self.everything and not self.double and not self.single


def parse_block_list(text: str) -> BlockSelection:
    text = (text or "").strip().lower()
    if not text:
        return BlockSelection()
    everything = False
    picked = {DOUBLE: set(), SINGLE: set()}
    for raw in text.split(","):
        item = re.sub(r"\s+", "", raw)
        if not item:
            raise BlockListError(f"blocks: empty item in '{text}' ({_SYNTAX_HINT})")
        if item == "all":
            everything = True
            continue
        match = _ITEM.match(item)
        if match is None:
            raise BlockListError(f"blocks: '{raw.strip()}' is not a block index or range ({_SYNTAX_HINT})")
        start = int(match["start"])
        end = int(match["end"]) if match["end"] is not None else start
        if end < start:
            raise BlockListError(f"blocks: range '{raw.strip()}' runs backwards (write {end}-{start})")
        if end > MAX_INDEX:
            raise BlockListError(f"blocks: {match['prefix']}{end} is too large (indices go up to {MAX_INDEX})")
        kind = SINGLE if match["prefix"] == "s" else DOUBLE
        picked[kind].update(range(start, end + 1))
    return BlockSelection(everything, frozenset(picked[DOUBLE]), frozenset(picked[SINGLE]))


def describe_depth(model_name: str, n_double: int, n_single: int) -> str:
    if n_single:
        return f"{model_name} has {n_double} double blocks (0-{n_double - 1}) and {n_single} single blocks (s0-s{n_single - 1})"
    return f"{model_name} has {n_double} blocks (0-{n_double - 1})"


def resolve_blocks(selection: BlockSelection, n_double: int, n_single: int, model_name: str) -> frozenset:
    """The (kind, index) pairs a selection names on a model of this depth; an index past it is an error."""
    if selection.everything:
        return frozenset({(DOUBLE, i) for i in range(n_double)} | {(SINGLE, i) for i in range(n_single)})
    depth = describe_depth(model_name, n_double, n_single)
    if selection.single and n_single == 0:
        raise BlockListError(f"blocks: single-block indices (s…) were given but {depth}")
    for kind, indices, count, prefix in ((DOUBLE, selection.double, n_double, ""), (SINGLE, selection.single, n_single, "s")):
        past = sorted(i for i in indices if i >= count)
        if past:
            raise BlockListError(f"blocks: {prefix}{past[0]} is past the model's depth: {depth}")
    return frozenset({(DOUBLE, i) for i in selection.double} | {(SINGLE, i) for i in selection.single})


def format_blocks(blocks) -> str:
    """Compact text for logs and previews: {(double,0),(double,1),(double,2),(single,4)} -> '0-2,s4'."""
    parts = []
    for kind, prefix in ((DOUBLE, ""), (SINGLE, "s")):
        indices = sorted(i for k, i in blocks if k == kind)
        run_start = prev = None
        for i in indices + [None]:
            if run_start is not None and (i is None or i != prev + 1):
                parts.append(f"{prefix}{run_start}" if run_start == prev else f"{prefix}{run_start}-{prev}")
                run_start = None
            if i is not None and run_start is None:
                run_start = i
            prev = i
    return ",".join(parts) if parts else "none"
