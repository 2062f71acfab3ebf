"""Per-token importance weights (DARE-inspired, inference-only): parsing, density estimate, tables.

One weight per row of the conditioning tensor. Real prompt tokens get w ≥ 0; padding and special rows stay
1.0, so the reweighting (log w added to the text-key logits) never touches them. Every source is a
multiplicative factor, so a source that is switched off is simply 1 everywhere.

Tokens arrive as the tokenizer's own pieces. Three piece conventions occur in the supported encoders:
  - "sentencepiece" (T5, umT5): "▁" marks a word start ("▁sun", "flower").
  - "clip_bpe" (CLIP-L/G): "</w>" marks a word end ("sunflower</w>").
  - "byte_bpe" (LLaMA 3): "Ġ" is the space byte ("Ġsunflower"), "Ċ" the newline.
Pure module: torch, re, math and dataclasses only; nothing from ComfyUI. Tables on disk: core/token_tables.py.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Sequence

import torch

SENTENCEPIECE, CLIP_BPE, BYTE_BPE = "sentencepiece", "clip_bpe", "byte_bpe"
PIECE_STYLES = (SENTENCEPIECE, CLIP_BPE, BYTE_BPE)

# A phrase named without ":w" is emphasised by this much: log(1.5) ≈ 0.41 added to its attention logits,
# a clear but moderate push (ComfyUI's own "(word)" is 1.1, on the embedding rather than the attention).
DEFAULT_NAMED_WEIGHT = 1.5

PAD_LABEL = "<pad>"
EMBEDDING_LABEL = "<embedding>"

# Pieces that stand for no text of their own: <unk>, byte fallback <0x0A>, <embedding>, <|eot_id|>...
_OPAQUE_PIECE = re.compile(r"^<\|?[A-Za-z0-9_]+\|?>$")
_OPAQUE_CHAR = "\ufffd"


@dataclass(frozen=True)
class TokenWeights:
    """One weight per context row, aligned with the rows of the conditioning tensor."""

    labels: tuple[str, ...]
    weights: tuple[float, ...]
    real: tuple[bool, ...]
    encoder: str
    prompt: str

    def __post_init__(self):
        # Frozen, so coerce through object.__setattr__: lists from callers become hashable tuples.
        object.__setattr__(self, "labels", tuple(str(x) for x in self.labels))
        object.__setattr__(self, "weights", tuple(float(x) for x in self.weights))
        object.__setattr__(self, "real", tuple(bool(x) for x in self.real))
        if not len(self.labels) == len(self.weights) == len(self.real):
            raise ValueError(
                f"TokenWeights needs one label, weight and real flag per row, got "
                f"{len(self.labels)} labels, {len(self.weights)} weights, {len(self.real)} flags"
            )
        bad = [w for w in self.weights if not (math.isfinite(w) and w >= 0)]
        if bad:
            raise ValueError(f"token weights must be finite and ≥ 0, got {bad[:5]}")

    def __len__(self) -> int:
        return len(self.weights)

    def as_tensor(self, device=None, dtype=torch.float32) -> torch.Tensor:
        return torch.tensor(self.weights, device=device, dtype=dtype)

    def is_neutral(self) -> bool:
        """All weights exactly 1: applying them would change nothing, bit for bit."""
        return all(w == 1.0 for w in self.weights)

    def is_constant(self, rel_tol: float = 1e-6) -> bool:
        """All real tokens share one weight: log w is then the same bias on every text key, which the
        softmax cancels, so the reweighting is the identity (padding rows are 1 by construction)."""
        values = [w for w, r in zip(self.weights, self.real) if r]
        return not values or all(math.isclose(w, values[0], rel_tol=rel_tol) for w in values)

    def describe(self, max_rows: int = 64) -> str:
        """A readable table of the real tokens and their weights, for the node's STRING output."""
        rows = [i for i, r in enumerate(self.real) if r]
        head = f"Token Importance · encoder {self.encoder} · {len(rows)} prompt tokens in {len(self)} context rows"
        if not rows:
            return head + "\n(no prompt tokens)"
        values = [self.weights[i] for i in rows]
        lines = [head, f"weights {min(values):.2f} … {max(values):.2f}; padding and special rows keep 1.00",
                 f"{'row':>5}  {'token':<18} {'weight':>6}"]
        for i in rows[:max_rows]:
            w = self.weights[i]
            bar = "#" * min(40, round(10 * w))  # 10 marks = neutral 1.0, so emphasis is visible at a glance
            lines.append(f"{i:>5}  {_shorten(self.labels[i], 18):<18} {w:>6.2f}  {bar}")
        if len(rows) > max_rows:
            lines.append(f"  … {len(rows) - max_rows} more tokens")
        return "\n".join(lines)


def _shorten(text: str, width: int) -> str:
    text = text.replace("\n", "\\n")
    return text if len(text) <= width else text[: width - 1] + "…"


# ---------------------------------------------------------------- user-named phrases

def parse_weight_spec(text: str) -> list[tuple[str, float]]:
    """`sunflower:2, red hat:1.5, tulip` → [("sunflower", 2.0), ("red hat", 1.5), ("tulip", 1.5)].

    Entries are separated by commas or newlines; blank entries (a trailing comma) are skipped. The weight
    follows the last ':'; an entry without one gets DEFAULT_NAMED_WEIGHT. Weights must be finite and ≥ 0
    (0 silences the phrase). A phrase cannot contain ',' or ':', and may be named only once.
    """
    out: list[tuple[str, float]] = []
    seen: set[str] = set()
    for entry in re.split(r"[,\n]", text or ""):
        entry = entry.strip()
        if not entry:
            continue
        phrase, sep, weight_text = entry.rpartition(":")
        if not sep:
            phrase, weight = entry, DEFAULT_NAMED_WEIGHT
        else:
            phrase = phrase.strip()
            if ":" in phrase:
                raise ValueError(f"'{entry}': use one ':' per entry, as in 'red hat:1.5'")
            weight = _parse_weight(entry, weight_text.strip())
        phrase = " ".join(phrase.split())
        if not phrase:
            raise ValueError(f"'{entry}': the phrase before ':' is empty")
        if phrase.lower() in seen:
            raise ValueError(f"'{phrase}' is named twice; give each phrase one weight")
        seen.add(phrase.lower())
        out.append((phrase, weight))
    return out


def _parse_weight(entry: str, weight_text: str) -> float:
    if not weight_text:
        raise ValueError(f"'{entry}': no weight after ':' (write e.g. 'sunflower:2', or leave out ':')")
    try:
        weight = float(weight_text)
    except ValueError:
        raise ValueError(f"'{entry}': weight '{weight_text}' is not a number") from None
    if not math.isfinite(weight) or weight < 0:
        raise ValueError(f"'{entry}': weight must be a finite number ≥ 0, got {weight_text}")
    return weight


# ---------------------------------------------------------------- pieces as text

def piece_text(piece: str, style: str) -> str:
    """The text a piece stands for, with its word-boundary marker turned into a space."""
    if _OPAQUE_PIECE.match(piece):
        return _OPAQUE_CHAR
    if style == SENTENCEPIECE:
        return piece.replace("▁", " ")
    if style == CLIP_BPE:
        return piece[:-4] + " " if piece.endswith("</w>") else piece
    if style == BYTE_BPE:
        return piece.replace("Ġ", " ").replace("Ċ", "\n").replace("ĉ", "\t")
    raise ValueError(f"unknown piece style {style!r}; expected one of {PIECE_STYLES}")


def _joined_text(pieces: Sequence[str], rows: Sequence[int], style: str) -> tuple[str, list[int]]:
    """Lower-cased text of the given rows, whitespace runs collapsed, and the row each character came from."""
    chars: list[str] = []
    owner: list[int] = []
    for row in rows:
        for ch in piece_text(pieces[row], style).lower():
            if ch.isspace():
                if chars and chars[-1] == " ":
                    continue
                ch = " "
            chars.append(ch)
            owner.append(row)
    return "".join(chars), owner


def find_phrase(pieces: Sequence[str], real: Sequence[bool], phrase_pieces: Sequence[str], style: str) -> list[list[int]]:
    """Rows of every occurrence of a phrase, as whole words, in the real rows.

    The phrase arrives already tokenized by the same tokenizer, so both sides went through the same
    normalisation (CLIP lower-cases and cleans text, T5 applies NFKC...). Matching is on the pieces' text,
    not their ids, because a word's pieces depend on its context: T5 splits '"sunflower"' into '▁"', 's',
    'un', 'flower' but 'sunflower' into '▁sunflower'. Case-insensitive; an occurrence must not start or
    end inside a word ('hat' is not found in 'that'). Rows holding only the space marker are left out.
    """
    needle, _ = _joined_text(phrase_pieces, range(len(phrase_pieces)), style)
    needle = needle.strip()
    if not needle:
        return []
    rows = [i for i, r in enumerate(real) if r]
    hay, owner = _joined_text(pieces, rows, style)

    def is_boundary(i: int) -> bool:
        return i < 0 or i >= len(hay) or not hay[i].isalnum()

    found: list[list[int]] = []
    start = hay.find(needle)
    while start != -1:
        end = start + len(needle)
        if (is_boundary(start - 1) or not needle[0].isalnum()) and (is_boundary(end) or not needle[-1].isalnum()):
            found.append(sorted({owner[i] for i in range(start, end) if not hay[i].isspace()}))
            start = hay.find(needle, end)
        else:
            start = hay.find(needle, start + 1)
    return found


# ---------------------------------------------------------------- automatic semantic density

# English function words. Deliberately absent: negations (no, not, without) and spatial prepositions
# (under, behind, above, left...), because prompts use them for exclusion and layout.
STOP_WORDS = frozenset("""
a an the this that these those some any each every either neither both all such what which whose
and or but nor so yet if then than as because while whereas though although whether
of in on at to for from by with into onto upon about over via per
is am are was were be been being has have had having do does did doing will would shall should can could
may might must
i me my mine myself we us our ours ourselves you your yours yourself yourselves he him his himself she her
hers herself it its itself they them their theirs themselves one ones
there here where when how why who whom
very just also too quite rather really only even still much more most
s t d ll m re ve
""".split())

# Log-space levels of the density map, as fractions of log(low) or log(high); see density_weights.
_FUNCTION_WORD_LEVEL = 0.5

# Word frequencies on the Zipf scale: log10 of occurrences per billion words (wordfreq's scale): "the" ~7.7,
# "cat" ~4.8, "sunflower" ~3.4. A word at least as frequent as FUNCTION_ZIPF counts as a function word in
# any language (the English STOP_WORDS list also applies); content words climb from neutral at COMMON_ZIPF
# to the full `high` weight at RARE_ZIPF and below.
FUNCTION_ZIPF = 6.0
COMMON_ZIPF = 6.0
RARE_ZIPF = 2.5
# A word of several pieces is at least as rare as its rarest piece; each further piece makes it rarer, but
# only by this share of its own log-probability, because the pieces of one word are far from independent.
# Fitted on 2000 English words against wordfreq's table with T5's vocabulary (mean error 0.6 Zipf).
OTHER_PIECES_SHARE = 0.3
_LN10 = math.log(10.0)


def rank_log_prob(rank: int) -> float:
    """Natural-log probability of a piece from its frequency rank (0 = most frequent), by Zipf's law
    p ≈ 0.1 / (rank + 1): for vocabularies that store no probabilities (BPE: CLIP, LLaMA)."""
    return math.log(0.1) - math.log1p(max(rank, 0))


def word_zipf(piece_log_probs: Sequence[float]) -> float:
    """A word's Zipf frequency from its pieces' natural-log unigram probabilities (see OTHER_PIECES_SHARE)."""
    ordered = sorted(piece_log_probs)
    log_p = ordered[0] + OTHER_PIECES_SHARE * sum(ordered[1:])
    return 9.0 + log_p / _LN10


def _unspaced(ch: str) -> bool:
    """Scripts written without spaces between words: CJK ideographs, kana, hangul, Thai."""
    o = ord(ch)
    return (0x3040 <= o <= 0x30FF or 0x3400 <= o <= 0x4DBF or 0x4E00 <= o <= 0x9FFF or 0xAC00 <= o <= 0xD7AF
            or 0xF900 <= o <= 0xFAFF or 0x0E00 <= o <= 0x0E7F or 0x20000 <= o <= 0x2FFFF)


def split_words(pieces: Sequence[str], real: Sequence[bool], style: str) -> list[list[int]]:
    """Group the real rows into words and lone symbols.

    A piece with a letter or digit joins the previous one unless it starts with a space marker, follows a
    CLIP word end ('</w>'), or follows a symbol piece. Every piece without letters or digits (punctuation,
    a bare '▁', <unk>) is a group of its own, and so is every piece of a script written without spaces
    (Chinese, Japanese, Thai...): there the tokenizer's pieces are the only word boundaries known.
    """
    groups: list[list[int]] = []
    open_word = False
    for row, is_real in enumerate(real):
        if not is_real:
            open_word = False
            continue
        text = piece_text(pieces[row], style)
        wordy = any(ch.isalnum() for ch in text)
        unspaced = any(_unspaced(ch) for ch in text)
        if wordy and open_word and not unspaced and not text[:1].isspace():
            groups[-1].append(row)
        else:
            groups.append([row])
        open_word = wordy and not unspaced and not text[-1:].isspace()
    return groups


def density_weights(pieces: Sequence[str], log_probs: Sequence[float], *, style: str = SENTENCEPIECE,
                    real: Sequence[bool] | None = None, low: float = 0.5, high: float = 2.0) -> list[float]:
    """Automatic semantic density per row: function words and punctuation low, rare content words high.

    log_probs[i] is the piece's natural-log unigram probability: SentencePiece's own score where the
    vocabulary has one (T5, umT5: trained on the encoder's corpus, multilingual for umT5), else
    rank_log_prob of its merge rank. Per word (split_words), with z = word_zipf of its pieces:
      - symbols (no letter or digit): w = low
      - function words (STOP_WORDS, or z ≥ FUNCTION_ZIPF): w = low ** 0.5, half-way to neutral in log space
      - content words: w = high ** x, x = (COMMON_ZIPF - z) / (COMMON_ZIPF - RARE_ZIPF) clipped to [0, 1]:
        neutral for the commonest words, `high` for words as rare as RARE_ZIPF, log-linear in between.
      - opaque rows (<unk>, embeddings): w = 1, nothing is known about them.
    Every row of a word gets the word's weight; rows not real get 1. Range [low, high] with neutral 1 between
    function words and content words, so content words never fall below neutral. No renormalisation: a
    constant factor is a no-op for the reweighting anyway.
    """
    if not (0 < low <= 1 <= high and math.isfinite(high)):
        raise ValueError(f"density range needs 0 < low ≤ 1 ≤ high, got low={low}, high={high}")
    n = len(pieces)
    real = [True] * n if real is None else list(real)
    if len(log_probs) != n or len(real) != n:
        raise ValueError(f"density_weights needs one log-probability and real flag per piece ({n} pieces)")
    weights = [1.0] * n
    for group in split_words(pieces, real, style):
        text = "".join(piece_text(pieces[i], style) for i in group).strip().lower()
        zipf = word_zipf([log_probs[i] for i in group])
        if text and text == _OPAQUE_CHAR * len(text):
            w = 1.0
        elif not any(ch.isalnum() for ch in text):
            w = low
        elif re.sub(r"^\W+|\W+$", "", text) in STOP_WORDS or zipf >= FUNCTION_ZIPF:
            w = low ** _FUNCTION_WORD_LEVEL
        else:
            w = high ** min(1.0, max(0.0, (COMMON_ZIPF - zipf) / (COMMON_ZIPF - RARE_ZIPF)))
        for i in group:
            weights[i] = w
    return weights


# ---------------------------------------------------------------- combining sources

def combine(real: Sequence[bool], *, density: Sequence[float] | None = None,
            named: Sequence[tuple[Sequence[int], float]] = (), table: Sequence[float] | None = None) -> list[float]:
    """Final weight per row = density × table × every named weight covering the row (absent source = 1).

    Multiplying keeps each source's meaning: 'sunflower:2' doubles sunflower whatever density gave it, a
    row inside two named phrases ('red hat:1.5, hat:2') gets both factors, and a table acts as one more
    factor. Rows that are not real are always 1, so padding is never reweighted.
    """
    n = len(real)
    for name, source in (("density", density), ("table", table)):
        if source is not None and len(source) != n:
            raise ValueError(f"{name} has {len(source)} weights for {n} context rows")
    out = [1.0] * n
    for i in range(n):
        if not real[i]:
            continue
        if density is not None:
            out[i] *= float(density[i])
        if table is not None:
            out[i] *= float(table[i])
    for rows, weight in named:
        for i in rows:
            if real[i]:
                out[i] *= float(weight)
    return out


def align_table(table: TokenWeights, labels: Sequence[str], real: Sequence[bool], encoder: str) -> list[float]:
    """The table's weights, checked to describe exactly these rows (same encoder, same tokens)."""
    if table.encoder != encoder:
        raise ValueError(f"the weight table was made for encoder '{table.encoder}', this CLIP is '{encoder}'")
    if len(table) != len(labels) or tuple(table.real) != tuple(real):
        raise ValueError(
            f"the weight table has {len(table)} rows ({sum(table.real)} prompt tokens) but this prompt gives "
            f"{len(labels)} rows ({sum(real)} prompt tokens); it was saved for the prompt: {table.prompt!r}"
        )
    for i, is_real in enumerate(real):
        if is_real and table.labels[i] != labels[i]:
            raise ValueError(
                f"the weight table does not match this prompt at row {i} ('{table.labels[i]}' vs '{labels[i]}'); "
                f"it was saved for the prompt: {table.prompt!r}"
            )
    return list(table.weights)
