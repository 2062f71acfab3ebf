"""What the Attention Inspector's view shows: which tokens, and the recorded numbers gathered per step and
per block. Pure Python and torch (no ComfyUI, no drawing): the records come in as plain values.

A "pick" is one thing the user asked to see: a word (every row of every occurrence of it in the prompt,
e.g. a word split into several pieces, or the prompt's two copies in SD3's CLIP and T5 segments) or one
row index. Its share is the sum of its rows' shares.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Sequence

import torch

from .importance import BYTE_BPE, CLIP_BPE, SENTENCEPIECE, find_phrase, piece_text, split_words

DEFAULT_MAX_TOKENS = 6
# The most tokens one View shows: each is a row of heatmap tiles and a line of the share chart, so this
# bounds the pictures (charts.max_heat_size) whatever the selection says.
MAX_PICKS = 16


@dataclass(frozen=True)
class Pick:
    label: str
    rows: tuple


def piece_style(label: str) -> str:
    """The piece convention a label was written in (core.importance): CLIP's '</w>' word end, byte-BPE's
    'Ġ'/'Ċ', else SentencePiece ('▁'; a piece without any marker reads the same in every convention)."""
    if label.endswith("</w>"):
        return CLIP_BPE
    if "Ġ" in label or "Ċ" in label:
        return BYTE_BPE
    return SENTENCEPIECE


def row_text(label: str) -> str:
    """A label as the text it stands for: word-boundary markers become spaces (leading for SentencePiece and
    byte-BPE, trailing for CLIP), which find_phrase and split_words read the same way in any convention."""
    return piece_text(label, piece_style(label))


def display_label(label: str) -> str:
    text = row_text(label).strip()
    if not text or text == "\ufffd":
        return label
    return text.replace("\n", "\\n")


def index_labels(rows: int) -> tuple:
    return tuple(f"#{i}" for i in range(rows))


def find_rows(labels: Sequence[str], real: Sequence[bool], phrase: str) -> list[list[int]]:
    """Every occurrence of a phrase (case-insensitive, whole words) among the real rows."""
    texts = [row_text(label) for label in labels]
    return find_phrase(texts, real, [" " + " ".join(phrase.split())], SENTENCEPIECE)


_RANGE = re.compile(r"^#?(\d+)(?:\s*-\s*#?(\d+))?$")


def _pick_entries(spec: str) -> list[tuple[str, tuple | None]]:
    """The entries of a selection, each with its (first, last) rows for a number or range, None for a word;
    checked for what needs no prompt: ranges run forwards, at most MAX_PICKS picks in all."""
    entries, count = [], 0
    for entry in re.split(r"[,\n]", spec or ""):
        entry = entry.strip()
        if not entry:
            continue
        match = _RANGE.match(entry)
        rows = None
        if match:
            first = int(match[1])
            last = int(match[2]) if match[2] is not None else first
            if last < first:
                raise ValueError(f"tokens: range '{entry}' runs backwards")
            rows = (first, last)
        count += 1 if rows is None else rows[1] - rows[0] + 1
        if count > MAX_PICKS:
            raise ValueError(f"tokens: at most {MAX_PICKS} tokens can be shown (a range counts each of its rows); "
                             f"'{spec.strip()[:60]}' asks for more")
        entries.append((entry, rows))
    return entries


def check_pick_spec(spec: str) -> None:
    """What can be checked of a selection without the recording (at queue time)."""
    _pick_entries(spec)


def parse_picks(spec: str, labels: Sequence[str] | None, real: Sequence[bool], n_rows: int) -> list[Pick]:
    """`sunflower, red hat, 12, 40-42` → picks. Numbers (optionally '#12') and ranges are row indices, one pick
    per row; anything else is a word or phrase of the prompt (needs labels, i.e. token_weights). At most
    MAX_PICKS picks."""
    picks: list[Pick] = []
    for entry, rows in _pick_entries(spec):
        if rows is not None:
            first, last = rows
            for row in range(first, last + 1):
                if row >= n_rows:
                    raise ValueError(f"tokens: row {row} is past the prompt's {n_rows} rows (0-{n_rows - 1})")
                picks.append(Pick(_row_label(labels, row), (row,)))
            continue
        if labels is None:
            raise ValueError(
                f"tokens: '{entry}' is a word, but the inspector has no token labels. Connect the Token Importance "
                "node's token_weights to the Attention Inspector, or pick rows by number (e.g. 3, 5-7)."
            )
        found = find_rows(labels, real, entry)
        if not found:
            shown = " ".join(display_label(labels[i]) for i, r in enumerate(real) if r)
            raise ValueError(f"tokens: '{entry}' is not in the prompt. Its tokens: {shown}")
        rows = tuple(sorted({row for occurrence in found for row in occurrence}))
        picks.append(Pick(entry, rows))
    return picks


def _row_label(labels, row: int) -> str:
    if labels is None:
        return f"#{row}"
    return f"{display_label(labels[row])} #{row}"


def word_groups(labels: Sequence[str] | None, real: Sequence[bool]) -> list[list[int]]:
    """The real rows grouped into words where labels are known (pieces of one word together), else one
    group per real row."""
    if labels is None:
        return [[i] for i, r in enumerate(real) if r]
    return split_words([row_text(label) for label in labels], real, SENTENCEPIECE)


def _group_pick(labels, rows: list[int]) -> Pick:
    if labels is None:
        return Pick(f"#{rows[0]}", tuple(rows))
    text = "".join(row_text(labels[i]) for i in rows).strip() or display_label(labels[rows[0]])
    where = f"#{rows[0]}" if len(rows) == 1 else f"#{rows[0]}-{rows[-1]}"
    return Pick(f"{text} {where}", tuple(rows))


def default_picks(labels, real: Sequence[bool], weights: Sequence[float] | None, mean_shares: torch.Tensor | None,
                  max_tokens: int = DEFAULT_MAX_TOKENS) -> tuple[list[Pick], str]:
    """The top-weighted words when the weights emphasise some, else the words with the largest share of
    the text attention over the run. Returns the picks and how they were chosen."""
    groups = word_groups(labels, real)
    if weights is not None:
        weighted = [(max(weights[i] for i in g), g) for g in groups]
        weighted = [(w, g) for w, g in weighted if w > 1.0]
        if weighted:
            weighted.sort(key=lambda item: (-item[0], item[1][0]))
            return [_group_pick(labels, g) for _, g in weighted[:max_tokens]], "the most heavily weighted words"
    if mean_shares is not None and groups:
        scored = sorted(groups, key=lambda g: (-float(mean_shares[g].sum()), g[0]))
        return [_group_pick(labels, g) for g in scored[:max_tokens]], "the words with the largest share of the text attention"
    return [], "nothing recorded"


# ---------------------------------------------------------------------------------------------- records


def block_order(block: tuple) -> tuple:
    kind, index = block
    return (0 if kind == "double_block" else 1, index)


def block_name(block: tuple) -> str:
    kind, index = block
    return f"s{index}" if kind == "single_block" else str(index)


@dataclass
class Gathered:
    """The recorded calls gathered on a (block × step) grid; missing cells are NaN."""

    blocks: list            # (kind, index), in model order
    sigmas: list            # descending: the order of the denoising
    shares: torch.Tensor    # [blocks, steps, R] mean within-text share
    attention: torch.Tensor # [blocks, steps, R] mean attention probability (normaliser over all keys)
    entropy: torch.Tensor   # [blocks, steps] mean full-attention entropy, nats
    text_mass: torch.Tensor # [blocks, steps] mean share of all attention that goes to the text
    max_entropy: float      # log(keys) of the widest call

    def share_by_step(self) -> torch.Tensor:
        """[steps, R] mean over the blocks recorded at each step."""
        return _nanmean(self.shares, 0)

    def mean_shares(self) -> torch.Tensor:
        return _nanmean(self.share_by_step(), 0)


def _nanmean(t: torch.Tensor, dim: int) -> torch.Tensor:
    valid = ~torch.isnan(t)
    total = torch.where(valid, t, torch.zeros_like(t)).sum(dim)
    count = valid.sum(dim)
    return torch.where(count > 0, total / count.clamp_min(1), torch.full_like(total, float("nan")))


def gather(records: Sequence) -> Gathered | None:
    """records: objects with block, sigma, shares [R], attention [R], entropy (float), text_mass (float),
    keys (int). Calls at the same (block, sigma) are averaged."""
    if not records:
        return None
    blocks = sorted({r.block for r in records}, key=block_order)
    sigmas = sorted({round(r.sigma, 6) for r in records}, reverse=True)
    rows = records[0].shares.shape[0]
    b_at = {b: i for i, b in enumerate(blocks)}
    s_at = {s: i for i, s in enumerate(sigmas)}
    shape = (len(blocks), len(sigmas))
    shares = torch.zeros(*shape, rows, dtype=torch.float64)
    attention = torch.zeros(*shape, rows, dtype=torch.float64)
    entropy = torch.zeros(shape, dtype=torch.float64)
    mass = torch.zeros(shape, dtype=torch.float64)
    count = torch.zeros(shape, dtype=torch.float64)
    max_entropy = 0.0
    for r in records:
        i, j = b_at[r.block], s_at[round(r.sigma, 6)]
        shares[i, j] += r.shares.double()
        attention[i, j] += r.attention.double()
        entropy[i, j] += float(r.entropy)
        mass[i, j] += float(r.text_mass)
        count[i, j] += 1
        max_entropy = max(max_entropy, math.log(max(r.keys, 1)))
    empty = count == 0
    count = count.clamp_min(1)
    shares, attention = shares / count[..., None], attention / count[..., None]
    entropy, mass = entropy / count, mass / count
    for t in (shares, attention):
        t[empty] = float("nan")
    entropy[empty] = float("nan")
    mass[empty] = float("nan")
    return Gathered(blocks, sigmas, shares.float(), attention.float(), entropy.float(), mass.float(), max_entropy)
