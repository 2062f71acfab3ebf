import math

import pytest
import torch

from tokenfocus.core.importance import (
    CLIP_BPE, DEFAULT_NAMED_WEIGHT, SENTENCEPIECE, TokenWeights, align_table, combine, density_weights,
    find_phrase, log_rank_rarity, parse_weight_spec, split_words,
)


def sample_weights(**overrides):
    fields = dict(labels=("▁a", "▁red", "▁hat", "</s>", "<pad>"), weights=(0.7, 1.5, 2.0, 1.0, 1.0),
                  real=(True, True, True, False, False), encoder="t5xxl", prompt="a red hat")
    fields.update(overrides)
    return TokenWeights(**fields)


# ---------------------------------------------------------------- parse_weight_spec

def test_parse_weights_phrases_and_default():
    spec = "sunflower:2, red hat:1.5,\n  tulip , big   dog : 0.25 ,"
    assert parse_weight_spec(spec) == [
        ("sunflower", 2.0), ("red hat", 1.5), ("tulip", DEFAULT_NAMED_WEIGHT), ("big dog", 0.25)]


def test_parse_empty_spec_is_no_phrases():
    assert parse_weight_spec("") == [] and parse_weight_spec(" , \n ") == [] and parse_weight_spec(None) == []


def test_parse_zero_weight_is_allowed():
    assert parse_weight_spec("cat:0") == [("cat", 0.0)]


@pytest.mark.parametrize("spec, message", [
    (":2", "empty"),
    ("sunflower:", "no weight"),
    ("sunflower:big", "not a number"),
    ("sunflower:-1", "≥ 0"),
    ("sunflower:inf", "finite"),
    ("sunflower:nan", "finite"),
    ("a:b:2", "one ':'"),
    ("cat:2, Cat:3", "named twice"),
])
def test_parse_rejects_malformed_entries(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_weight_spec(spec)


# ---------------------------------------------------------------- words and phrases in pieces

T5_PIECES = ["▁A", "▁man", "▁in", "▁", "a", "▁red", "▁", "hat", ",", "▁holding", "▁\"", "s", "un", "flower", "\"",
             "▁and", "▁Sun", "flower", "s", "▁", "<unk>", "</s>", "<pad>"]
T5_REAL = [True] * 21 + [False, False]


def test_split_words_sentencepiece():
    words = [[T5_PIECES[i] for i in group] for group in split_words(T5_PIECES, T5_REAL, SENTENCEPIECE)]
    assert ["▁"] in words and [","] in words and ["<unk>"] in words
    assert ["s", "un", "flower"] in words and ["▁Sun", "flower", "s"] in words and ["hat"] in words
    assert all("</s>" not in w and "<pad>" not in w for w in words)


def test_find_phrase_across_pieces_every_occurrence_whole_words():
    pieces = ["▁sun", "flower", "▁and", "▁\"", "s", "un", "flower", "\"", "▁Sun", "flower", "s", "</s>"]
    real = [True] * 11 + [False]
    assert find_phrase(pieces, real, ["▁sunflower"], SENTENCEPIECE) == [[0, 1], [4, 5, 6]]
    assert find_phrase(pieces, real, ["▁sunflower", "s"], SENTENCEPIECE) == [[8, 9, 10]]
    assert find_phrase(pieces, real, ["▁flower"], SENTENCEPIECE) == []  # inside a word: not a match


def test_find_phrase_multiword_and_clip_pieces():
    pieces = ["<|startoftext|>", "a</w>", "red</w>", "hat</w>", ",</w>", "that</w>", "red</w>", "hat</w>", "<|endoftext|>"]
    real = [False] + [True] * 7 + [False]
    assert find_phrase(pieces, real, ["red</w>", "hat</w>"], CLIP_BPE) == [[2, 3], [6, 7]]
    assert find_phrase(pieces, real, ["hat</w>"], CLIP_BPE) == [[3], [7]]  # not inside 'that'


def test_find_phrase_skips_bare_space_markers():
    assert find_phrase(T5_PIECES, T5_REAL, ["▁", "hat"], SENTENCEPIECE) == [[7]]


# ---------------------------------------------------------------- density

def test_log_rank_rarity_is_monotone_in_unit_range():
    values = [log_rank_rarity(r, 32000) for r in (0, 10, 1000, 31999, 10 ** 9)]
    assert values[0] == 0.0 and values[-1] == 1.0 and values == sorted(values)


def test_density_ranks_function_words_and_punctuation_below_rare_content():
    pieces = ["▁the", "▁man", ",", "▁with", "▁a", "▁sun", "flower", "."]
    # Rarity as the tokenizer would give it: common pieces low, 'flower' mid-rare.
    rarity = [0.1, 0.55, 0.05, 0.2, 0.05, 0.5, 0.7, 0.05]
    w = dict(zip(pieces, density_weights(pieces, rarity, style=SENTENCEPIECE)))
    assert w[","] == w["."] == 0.5  # punctuation at the floor
    assert w[","] < w["▁the"] == w["▁with"] == w["▁a"] < 1.0  # function words between
    assert 1.0 <= w["▁man"] < w["▁sun"] == w["flower"] == 2.0  # a two-piece word saturates at the ceiling


def test_density_range_padding_and_opaque_rows():
    pieces = ["▁", "a", "<unk>", "▁cat", "</s>", "<pad>"]
    real = [True, True, True, True, False, False]
    w = density_weights(pieces, [0.0, 0.3, 0.0, 1.0, 0.0, 0.0], style=SENTENCEPIECE, real=real, low=0.25, high=3.0)
    assert w[0] == 0.25  # the bare word-start marker carries no meaning
    assert w[1] == pytest.approx(0.5)  # 'a' is a function word: sqrt(low)
    assert w[2] == 1.0  # nothing is known about <unk>
    assert w[3] == pytest.approx(3.0)
    assert w[4:] == [1.0, 1.0]


def test_density_mean_near_one_on_a_typical_prompt():
    pieces = ["a</w>", "woman</w>", "in</w>", "a</w>", "yellow</w>", "raincoat</w>", "walks</w>", "her</w>", "dog</w>", ".</w>"]
    rarity = [0.5, 0.7, 0.5, 0.5, 0.75, 0.95, 0.8, 0.5, 0.7, 0.4]
    w = density_weights(pieces, rarity, style=CLIP_BPE)
    assert 0.8 < sum(w) / len(w) < 1.3
    assert max(w) <= 2.0 and min(w) >= 0.5


def test_density_rejects_bad_range():
    with pytest.raises(ValueError, match="low"):
        density_weights(["▁a"], [0.1], low=1.5, high=2.0)


# ---------------------------------------------------------------- combine

def test_combine_multiplies_sources_and_leaves_padding():
    real = [True, True, True, False]
    out = combine(real, density=[0.5, 2.0, 1.0, 7.0], named=[([1, 2], 1.5), ([2], 2.0), ([3], 9.0)],
                  table=[2.0, 1.0, 0.5, 5.0])
    assert out == [1.0, 3.0, 1.5, 1.0]


def test_combine_without_sources_is_neutral():
    assert combine([True, False, True]) == [1.0, 1.0, 1.0]


def test_combine_checks_lengths():
    with pytest.raises(ValueError, match="density"):
        combine([True, True], density=[1.0])


def test_align_table_accepts_same_rows_and_rejects_others():
    table = sample_weights()
    assert align_table(table, table.labels, table.real, "t5xxl") == list(table.weights)
    with pytest.raises(ValueError, match="encoder"):
        align_table(table, table.labels, table.real, "umt5xxl")
    with pytest.raises(ValueError, match="row 2"):
        align_table(table, ("▁a", "▁red", "▁cap", "</s>", "<pad>"), table.real, "t5xxl")
    with pytest.raises(ValueError, match="rows"):
        align_table(table, table.labels[:4], table.real[:4], "t5xxl")


# ---------------------------------------------------------------- TokenWeights

def test_token_weights_basics():
    tw = sample_weights()
    assert len(tw) == 5
    t = tw.as_tensor(dtype=torch.float64)
    assert t.dtype == torch.float64 and t.shape == (5,) and t[1].item() == 1.5
    assert not tw.is_neutral() and not tw.is_constant()


def test_constant_and_neutral_detection():
    assert sample_weights(weights=(1, 1, 1, 1, 1)).is_neutral()
    constant = sample_weights(weights=(1.7, 1.7, 1.7, 1.0, 1.0))
    assert constant.is_constant() and not constant.is_neutral()
    assert sample_weights(real=(False,) * 5).is_constant()


def test_token_weights_validation():
    with pytest.raises(ValueError, match="one label"):
        sample_weights(weights=(1.0, 1.0))
    with pytest.raises(ValueError, match="≥ 0"):
        sample_weights(weights=(1.0, -1.0, 1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="finite"):
        sample_weights(weights=(1.0, math.nan, 1.0, 1.0, 1.0))


def test_describe_lists_real_tokens_with_weights():
    text = sample_weights().describe()
    assert "t5xxl" in text and "3 prompt tokens in 5 context rows" in text
    assert "▁red" in text and "1.50" in text and "2.00" in text
    assert "<pad>" not in text and "</s>" not in text
    lines = text.splitlines()
    assert any(line.split()[:3] == ["2", "▁hat", "2.00"] for line in lines)


def test_describe_truncates():
    n = 10
    tw = TokenWeights(labels=[f"▁w{i}" for i in range(n)], weights=[1.0] * n, real=[True] * n, encoder="t5xxl", prompt="")
    text = tw.describe(max_rows=4)
    assert "▁w3" in text and "▁w4" not in text and "6 more tokens" in text
