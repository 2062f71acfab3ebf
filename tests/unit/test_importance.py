import math

import pytest
import torch

from tokenfocus.core.importance import (
    CLIP_BPE, DEFAULT_NAMED_WEIGHT, SENTENCEPIECE, TokenWeights, align_table, combine, density_weights,
    find_phrase, parse_weight_spec, rank_log_prob, split_words, word_zipf,
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

# Natural-log unigram probabilities as T5's vocabulary stores them (its SentencePiece scores).
T5_LOG_P = {"▁the": -3.96, "▁of": -4.57, "▁with": -5.9, "▁a": -4.5, ",": -3.65, ".": -3.54, "▁man": -8.9,
            "▁cat": -9.97, "▁red": -9.6, "▁castle": -12.0, "▁sunflower": -13.33, "▁snow": -10.5, "y": -6.65,
            "▁4": -8.34, "k": -7.66, "▁giraf": -14.5, "fe": -9.8}


def test_rank_log_prob_follows_zipfs_law():
    values = [rank_log_prob(r) for r in (0, 9, 99, 31999)]
    assert values[0] == pytest.approx(math.log(0.1))
    assert values[1] - values[2] == pytest.approx(math.log(10))   # ten times the rank, a tenth the frequency
    assert values == sorted(values, reverse=True)


def test_word_zipf_of_one_piece_is_its_frequency_and_more_pieces_are_rarer_but_not_independent():
    assert word_zipf([math.log(1e-5)]) == pytest.approx(4.0)       # 1e-5 = 10^4 per billion
    two = word_zipf([T5_LOG_P["▁snow"], T5_LOG_P["y"]])
    assert two < word_zipf([T5_LOG_P["▁snow"]])
    assert two > 9 + (T5_LOG_P["▁snow"] + T5_LOG_P["y"]) / math.log(10)     # not the product of the pieces


def test_density_ranks_function_words_and_punctuation_below_rare_content():
    pieces = ["▁the", "▁man", ",", "▁with", "▁a", "▁sunflower", "."]
    w = dict(zip(pieces, density_weights(pieces, [T5_LOG_P[p] for p in pieces], style=SENTENCEPIECE)))
    assert w[","] == w["."] == 0.5  # punctuation at the floor
    assert w[","] < w["▁the"] == w["▁with"] == w["▁a"] < 1.0  # function words between
    assert 1.0 <= w["▁man"] < w["▁sunflower"] < 2.0


def test_density_spreads_content_words_by_frequency_and_two_pieces_do_not_saturate():
    pieces = ["▁cat", "▁red", "▁castle", "▁snow", "y", "▁4", "k", "▁sunflower", "▁giraf", "fe"]
    w = density_weights(pieces, [T5_LOG_P[p] for p in pieces], style=SENTENCEPIECE)
    cat, red, castle, snowy, four_k, sunflower, giraffe = w[0], w[1], w[2], w[3], w[5], w[7], w[8]
    assert w[3] == w[4] and w[5] == w[6] and w[8] == w[9]     # one weight per word
    assert 1.0 < red < cat < castle < sunflower < 2.0          # by frequency, none at the ceiling
    assert 1.0 < four_k < 2.0 and 1.0 < snowy < 2.0            # two-piece words are not all the rarest
    assert giraffe > sunflower
    assert max(w) / min(w) > 1.4                                # a spread worth the name


def test_unspaced_scripts_weigh_each_piece_as_a_word():
    # umT5 pieces of a Chinese prompt ("一只猫坐在向日葵田里。"), no spaces between words.
    pieces = ["▁一只", "猫", "坐在", "向日葵", "田", "里", "。"]
    log_p = [-8.0, -9.5, -9.0, -14.0, -10.5, -6.5, -4.0]
    groups = split_words(pieces, [True] * len(pieces), SENTENCEPIECE)
    assert groups == [[i] for i in range(len(pieces))]
    w = density_weights(pieces, log_p, style=SENTENCEPIECE)
    assert w[6] == 0.5                                      # punctuation
    assert w[5] < 1.0                                       # a very frequent piece counts as a function word
    assert 1.0 < w[1] < w[3]                                # rare 向日葵 (sunflower) above common 猫 (cat)
    assert len({round(x, 6) for x in w[:5]}) >= 4           # not one weight for the whole clause


def test_density_range_padding_and_opaque_rows():
    pieces = ["▁", "a", "<unk>", "▁cat", "</s>", "<pad>"]
    real = [True, True, True, True, False, False]
    w = density_weights(pieces, [-2.0, -4.5, 0.0, -30.0, 0.0, 0.0], style=SENTENCEPIECE, real=real, low=0.25, high=3.0)
    assert w[0] == 0.25  # the bare word-start marker carries no meaning
    assert w[1] == pytest.approx(0.5)  # 'a' is a function word: sqrt(low)
    assert w[2] == 1.0  # nothing is known about <unk>
    assert w[3] == pytest.approx(3.0)  # rarer than RARE_ZIPF: the ceiling
    assert w[4:] == [1.0, 1.0]


def test_density_mean_near_one_on_a_typical_prompt():
    pieces = ["a</w>", "woman</w>", "in</w>", "a</w>", "yellow</w>", "raincoat</w>", "walks</w>", "her</w>", "dog</w>", ".</w>"]
    ids = [320, 2308, 530, 320, 4481, 23516, 5244, 1105, 1929, 269]   # CLIP's BPE ids: merge order = rank
    w = density_weights(pieces, [rank_log_prob(i) for i in ids], style=CLIP_BPE)
    assert 0.8 < sum(w) / len(w) < 1.3
    assert max(w) <= 2.0 and min(w) >= 0.5
    assert w[5] > w[8] > 1.0        # raincoat above dog


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
