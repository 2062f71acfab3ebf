"""Checks a prompt written in ComfyUI's weight syntax, `a (red:1.5) kite`, before anything runs.

The weights themselves come from ComfyUI's own parser (the tokenizer's `tokenize_with_weights`), so a
prompt means the same to TokenFocus Prompt as to CLIP Text Encode. That parser never complains: an
unclosed '(' or a weight it cannot read silently becomes text. This module finds those cases so the node
can refuse them at queue time. The grammar it follows (comfy/sd1_clip.py, both supported versions):
  - '\\(' and '\\)' are literal parentheses;
  - '(text)' multiplies the weight by 1.1, nested groups multiply again;
  - '(text:w)' sets the weight to w, read after the group's last ':' (a ':' at the group's start is text).
The weights are then laid on the tokens of the plain text (the prompt without its syntax), which is
what the model is conditioned on. Pure Python, no ComfyUI import.
"""
from __future__ import annotations

import difflib
import math

from .importance import SENTENCEPIECE, _joined_text

ESCAPES = ("\\(", "\\)")


def _unescaped(text: str) -> str:
    # Same length as text: positions in messages stay those of the user's prompt.
    for escape in ESCAPES:
        text = text.replace(escape, "\0\0")
    return text


def prompt_syntax_error(text: str) -> str | None:
    """A message saying what is wrong with the prompt's weight syntax, or None when it is well formed."""
    plain = _unescaped(text or "")
    opened: list[int] = []
    for pos, char in enumerate(plain):
        if char == "(":
            opened.append(pos)
        elif char == ")":
            if not opened:
                return (f"unbalanced parenthesis: ')' at character {pos + 1} closes nothing "
                        f"(near '{_near(text, pos)}'); write \\) for a literal one")
            start = opened.pop()
            problem = _group_weight_error(plain, start, pos)
            if problem:
                return f"{problem} in '{text[start:pos + 1]}'"
    if opened:
        pos = opened[-1]
        return (f"unbalanced parenthesis: '(' at character {pos + 1} is never closed "
                f"(near '{_near(text, pos)}'); write \\( for a literal one")
    return None


def check_prompt_syntax(text: str) -> None:
    problem = prompt_syntax_error(text)
    if problem:
        raise ValueError(f"Prompt weights: {problem}.")


def _group_weight_error(plain: str, start: int, stop: int) -> str | None:
    """The weight of the group plain[start:stop + 1], where ComfyUI would read one (its last ':' that is
    not inside a nested group, if not the group's first character)."""
    inner = plain[start + 1:stop]
    depth, colon = 0, -1
    for i, char in enumerate(inner):
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == ":" and depth == 0:
            colon = i
    if colon < 0:
        return None
    if colon == 0:
        return "the text before ':' is empty"
    weight_text = inner[colon + 1:]
    try:
        weight = float(weight_text)
    except ValueError:
        return f"the weight '{weight_text.strip()}' is not a number (a weight closes its group: '(text:1.5)')"
    if not math.isfinite(weight) or weight < 0:
        return f"the weight {weight_text.strip()} must be a finite number ≥ 0 (0 removes the words' attention)"
    return None


def _near(text: str, pos: int, width: int = 12) -> str:
    return text[max(0, pos - width):pos + width].replace("\n", " ")


# ---------------------------------------------------------------- weights onto the plain text's tokens

def plain_text(segments) -> str:
    """The prompt without its weight syntax, from the parser's (text, weight) segments."""
    return "".join(text for text, _ in segments)


def escaped(text: str) -> str:
    """Text that ComfyUI's parser reads back as exactly `text` (its parentheses literal)."""
    return text.replace("(", "\\(").replace(")", "\\)")


def char_weights(segments) -> list[float]:
    """The weight of every character of plain_text(segments)."""
    return [weight for text, weight in segments for _ in text]


def rows_from_chars(pieces, real, style: str, text: str, weights) -> list[float]:
    """One weight per row: the weight of the characters of `text` that each real row's piece spells.

    The pieces come from tokenizing `text` as a whole, so a word keeps the pieces it has without the
    weight syntax around it; pieces and text are matched on their lower-cased characters (the tokenizer
    may normalise some). A piece that spans two weights (a group glued to a word) takes the one farthest
    from 1; rows that spell none of the text (padding, special tokens) keep 1.
    """
    hay, owner = _joined_text(pieces, [i for i, r in enumerate(real) if r], style)
    needle, source = _joined_text(list(text), range(len(text)), SENTENCEPIECE)   # one "piece" per character
    out = [1.0] * len(pieces)
    matcher = difflib.SequenceMatcher(None, hay, needle, autojunk=False)
    for block in matcher.get_matching_blocks():
        for i in range(block.size):
            row, weight = owner[block.a + i], weights[source[block.b + i]]
            if hay[block.a + i] != " " and abs(math.log(weight or 1e-9)) > abs(math.log(out[row] or 1e-9)):
                out[row] = weight
    return out
