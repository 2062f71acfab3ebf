"""The Attention Inspector's pure parts: streaming attention statistics, query samples, the pooled frame grid,
token picks, gathering records, and the pictures (sizes, never blank)."""
import math
from types import SimpleNamespace

import pytest
import torch

from tokenfocus.core.attention_stats import (
    additive_mask, attention_to_text, call_phase, pooled_grid, reference_text_attention, spread_sample, token_grid,
)
from tokenfocus.core.inspector_view import (
    Pick, default_picks, display_label, find_rows, gather, parse_picks, word_groups,
)

FIELDS = ("probs", "text_mass", "shares", "entropy")


def qk(heads=3, n=11, keys=70, dim=8, seed=0, spread=2.0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(heads, n, dim, generator=gen) * spread, torch.randn(heads, keys, dim, generator=gen) * spread


def assert_matches(got, want, atol=2e-6):
    for name in FIELDS:
        a, b = getattr(got, name), getattr(want, name)
        assert a is not None, name
        assert torch.allclose(a.double(), b, atol=atol, rtol=1e-5), (name, float((a.double() - b).abs().max()))


@pytest.mark.parametrize("text", [slice(0, 20), slice(50, 70), slice(0, 70)])
@pytest.mark.parametrize("budget, key_chunk", [(1 << 24, 4096), (30, 7), (1, 1)])
def test_streaming_matches_the_full_softmax(text, budget, key_chunk):
    q, k = qk()
    got = attention_to_text(q, k, text, budget=budget, key_chunk=key_chunk)
    assert_matches(got, reference_text_attention(q, k, text))


def test_shares_sum_to_one_and_cross_attention_text_mass_is_one():
    q, k = qk(keys=40)
    cross = attention_to_text(q, k, slice(0, 40), key_chunk=9)
    assert torch.allclose(cross.text_mass, torch.ones(11), atol=1e-6)
    assert torch.allclose(cross.probs.sum(-1), torch.ones(11), atol=1e-6)
    assert torch.allclose(cross.probs, cross.shares, atol=1e-6)
    joint = attention_to_text(q, k, slice(0, 10))
    assert torch.allclose(joint.shares.sum(-1), torch.ones(11), atol=1e-6)
    assert (joint.text_mass < 1).all() and (joint.text_mass > 0).all()
    assert torch.allclose(joint.probs.sum(-1), joint.text_mass, atol=1e-6)


def test_entropy_is_between_zero_and_log_keys_and_falls_with_a_sharper_temperature():
    q, k = qk(keys=64)
    warm = attention_to_text(q, k, slice(0, 8)).entropy
    sharp = attention_to_text(q * 2.0, k, slice(0, 8)).entropy
    assert (warm > 0).all() and (warm <= math.log(64) + 1e-5).all()
    assert (sharp < warm).all()


def test_key_bias_applies_only_to_the_biased_queries():
    q, k = qk()
    bias = torch.zeros(70)
    bias[[2, 5]] = math.log(4.0)
    biased = torch.tensor([True, False] * 5 + [True])
    got = attention_to_text(q, k, slice(0, 20), key_bias=bias, biased=biased, budget=50, key_chunk=16)
    assert_matches(got, reference_text_attention(q, k, slice(0, 20), key_bias=bias, biased=biased))
    plain = attention_to_text(q, k, slice(0, 20))
    assert torch.allclose(got.probs[~biased], plain.probs[~biased], atol=1e-6)
    assert (got.shares[biased][:, [2, 5]] > plain.shares[biased][:, [2, 5]]).all()


@pytest.mark.parametrize("shape", ["broadcast", "per_query", "per_head", "bool"])
def test_masks_as_the_backends_read_them(shape):
    q, k = qk()
    gen = torch.Generator().manual_seed(3)
    if shape == "broadcast":
        mask = torch.zeros(1, 1, 70)
        mask[..., 60:] = -torch.finfo(torch.float32).max      # HunyuanVideo's padded text rows
    elif shape == "per_query":
        mask = torch.randn(1, 11, 70, generator=gen)
        mask[:, :, :8] = float("-inf")                        # a whole key chunk masked
    elif shape == "per_head":
        mask = torch.randn(3, 1, 70, generator=gen)
    else:
        mask = torch.rand(1, 11, 70, generator=gen) > 0.3
        mask[:, :, 0] = True
    got = attention_to_text(q, k, slice(50, 70), mask=mask, budget=40, key_chunk=8)
    assert_matches(got, reference_text_attention(q, k, slice(50, 70), mask=mask))
    assert torch.isfinite(got.entropy).all()


def test_mask_rows_pick_each_querys_row():
    q, k = qk(n=4)
    full = torch.randn(1, 9, 70)
    rows = torch.tensor([8, 0, 3, 3])
    got = attention_to_text(q, k, slice(0, 20), mask=full, mask_rows=rows, budget=60, key_chunk=16)
    assert_matches(got, reference_text_attention(q, k, slice(0, 20), mask=full[:, rows]))


def test_additive_mask_reads_bool_as_may_attend():
    out = additive_mask(torch.tensor([[True, False]]))
    assert out[0, 0] == 0 and out[0, 1] == float("-inf")


def test_inputs_are_left_untouched_and_no_random_generator_is_used():
    q, k = qk()
    q0, k0 = q.clone(), k.clone()
    state = torch.random.get_rng_state()
    attention_to_text(q, k, slice(0, 20), key_bias=torch.ones(70), mask=torch.zeros(1, 1, 70))
    assert torch.equal(q, q0) and torch.equal(k, k0)
    assert torch.equal(torch.random.get_rng_state(), state)


def test_half_precision_inputs_are_measured_in_float32():
    q, k = qk()
    got = attention_to_text(q.half(), k.half(), slice(0, 20))
    assert got.probs.dtype == torch.float32
    assert_matches(got, reference_text_attention(q.half().float(), k.half().float(), slice(0, 20)))


# ------------------------------------------------------------------------------------------ samples, grids


def test_spread_sample_is_distinct_in_range_deterministic_and_moves_with_the_phase():
    for total, n in ((1000, 256), (257, 256), (10, 3)):
        for counter in range(5):
            picked = spread_sample(total, n, call_phase(counter))
            assert len(picked) == n and len(set(picked.tolist())) == n
            assert 0 <= int(picked.min()) and int(picked.max()) < total
            assert torch.equal(picked, spread_sample(total, n, call_phase(counter)))
    assert torch.equal(spread_sample(40, 256), torch.arange(40))
    assert not torch.equal(spread_sample(1000, 10, call_phase(1)), spread_sample(1000, 10, call_phase(2)))
    assert len(spread_sample(0, 5)) == 0


def test_token_grid_follows_the_patch_and_pads_to_whole_patches():
    assert token_grid((1, 16, 128, 128), (1, 2, 2)) == (1, 64, 64)
    assert token_grid((1, 16, 21, 60, 104), (1, 2, 2)) == (21, 30, 52)
    assert token_grid((1, 16, 9, 9), (1, 2, 2)) == (1, 5, 5)
    assert token_grid((1, 16), (1, 2, 2)) is None


@pytest.mark.parametrize("tokens, max_cells", [((1, 64, 64), 8192), ((21, 30, 52), 8192), ((21, 45, 80), 8192),
                                               ((1, 7, 5), 4), ((40, 3, 3), 16)])
def test_pooled_grid_fits_and_its_members_cover_every_token(tokens, max_cells):
    grid = pooled_grid(tokens, max_cells)
    assert grid.n_cells <= max_cells
    ft, fh, fw = grid.factors
    if fh > 1:     # the smallest spatial factor that fits
        assert grid.cells[0] * math.ceil(tokens[1] / (fh - 1)) * math.ceil(tokens[2] / (fw - 1)) > max_cells
    seen = set()
    for member in range(grid.members):
        picked = grid.sample_tokens(member)
        assert len(picked) == grid.n_cells
        assert int(picked.max()) < grid.n_tokens
        seen.update(picked.tolist())
    assert seen == set(range(grid.n_tokens))


def test_a_cell_samples_only_its_own_tokens():
    grid = pooled_grid((2, 6, 6), 18)        # 2 x 3 x 3 cells of 2 x 2 tokens
    assert grid.factors == (1, 2, 2) and grid.cells == (2, 3, 3)
    for member in range(4):
        picked = grid.sample_tokens(member)
        t, rest = picked // 36, picked % 36
        h, w = rest // 6, rest % 6
        cells = (t * 3 + h // 2) * 3 + w // 2
        assert torch.equal(cells, torch.arange(18))


# ------------------------------------------------------------------------------------------ token picks

LABELS = ("▁a", "▁sun", "flower", "▁in", "▁a", "▁red", "▁hat", "</s>", "<pad>", "<pad>")
REAL = (True,) * 7 + (False,) * 3


def test_words_are_found_across_pieces_and_occurrences():
    assert find_rows(LABELS, REAL, "sunflower") == [[1, 2]]
    assert find_rows(LABELS, REAL, "Red  Hat") == [[5, 6]]
    assert find_rows(LABELS, REAL, "a") == [[0], [4]]
    assert find_rows(LABELS, REAL, "hat") == [[6]] and find_rows(LABELS, REAL, "at") == []
    clip = ("a</w>", "sun", "flower</w>", "<|endoftext|>")
    assert find_rows(clip, (True, True, True, False), "sunflower") == [[1, 2]]
    assert display_label("▁sun") == "sun" and display_label("flower</w>") == "flower" and display_label("Ġcat") == "cat"


def test_parse_picks_words_rows_and_ranges():
    picks = parse_picks("sunflower, 3, #5-6", LABELS, REAL, 10)
    assert picks == [Pick("sunflower", (1, 2)), Pick("in #3", (3,)), Pick("red #5", (5,)), Pick("hat #6", (6,))]
    assert parse_picks("a", LABELS, REAL, 10) == [Pick("a", (0, 4))]
    assert parse_picks("2", None, REAL, 10) == [Pick("#2", (2,))]
    with pytest.raises(ValueError, match="not in the prompt"):
        parse_picks("tulip", LABELS, REAL, 10)
    with pytest.raises(ValueError, match="past the prompt"):
        parse_picks("12", LABELS, REAL, 10)
    with pytest.raises(ValueError, match="token_weights"):
        parse_picks("sunflower", None, REAL, 10)


def test_default_picks_prefer_weighted_words_then_the_largest_shares():
    weights = (1, 2, 2, 1, 1, 1.5, 1, 1, 1, 1)
    picks, how = default_picks(LABELS, REAL, weights, None, max_tokens=5)
    assert [p.rows for p in picks] == [(1, 2), (5,)] and "weighted" in how
    shares = torch.tensor([0.1, 0.05, 0.05, 0.3, 0.02, 0.2, 0.08, 0.1, 0.05, 0.05])
    picks, how = default_picks(LABELS, REAL, (1.0,) * 10, shares, max_tokens=2)
    assert [p.rows for p in picks] == [(3,), (5,)] and "share" in how
    picks, _ = default_picks(None, REAL, None, shares, max_tokens=3)
    assert [p.rows for p in picks] == [(3,), (5,), (0,)]       # real rows only
    assert word_groups(LABELS, REAL) == [[0], [1, 2], [3], [4], [5], [6]]


def test_gather_averages_repeated_calls_and_leaves_gaps():
    def rec(block, sigma, share0, entropy):
        shares = torch.tensor([share0, 1 - share0])
        return SimpleNamespace(block=block, sigma=sigma, shares=shares, attention=shares * 0.5, entropy=entropy,
                               text_mass=0.5, keys=100)

    b0, b1, s1 = ("double_block", 0), ("double_block", 1), ("single_block", 0)
    g = gather([rec(s1, 1.0, 0.2, 3.0), rec(b0, 1.0, 0.4, 4.0), rec(b0, 1.0, 0.6, 2.0), rec(b1, 0.5, 0.1, 1.0)])
    assert g.blocks == [b0, b1, s1] and g.sigmas == [1.0, 0.5]
    assert torch.allclose(g.shares[0, 0], torch.tensor([0.5, 0.5]))
    assert g.entropy[0, 0] == 3.0 and torch.isnan(g.entropy[0, 1])
    assert torch.allclose(g.share_by_step()[0], torch.tensor([0.35, 0.65]))
    assert g.max_entropy == pytest.approx(math.log(100))
    assert gather([]) is None


# ------------------------------------------------------------------------------------------ pictures


def test_heatmap_picture_has_its_layout_size_and_is_not_blank():
    pytest.importorskip("PIL")
    import numpy as np

    from tokenfocus.core import charts

    maps = np.random.default_rng(0).random((3, 12, 4, 6)).astype(np.float32)
    picture = charts.heatmap_picture(maps, ["a", "b", "c"], ["x", "y", "z"], "title", aspect_hw=4 / 6)
    layout = charts.heat_layout(3, 12, 4 / 6)
    assert layout.columns == charts.MAX_FRAMES and layout.video
    assert picture.shape == (*layout.size, 3) and picture.dtype == np.float32
    assert 0.0 <= picture.min() and picture.max() <= 1.0 and picture.std() > 0.05
    backdrop = np.full((5, 40, 30, 3), 0.5, dtype=np.float32)
    over = charts.heatmap_picture(maps[:, :1], ["a", "b", "c"], ["", "", ""], "t", backdrop, lambda t: 0)
    assert over.shape == (*charts.heat_layout(3, 1, 40 / 30).size, 3)


def test_charts_have_a_fixed_size_and_say_when_there_is_nothing():
    pytest.importorskip("PIL")
    import numpy as np

    from tokenfocus.core import charts

    chart = charts.line_chart(["1", "0.5", "0.1"], [("a", np.array([0.1, 0.2, np.nan]), None, 3), ("", np.array([0.3, 0.1, 0.2]), (0, 0, 0), 1)],
                              "title", "share", "sigma", percent=True, y_floor=0.0)
    assert chart.shape == (*charts.CHART_SIZE, 3) and chart.std() > 0.02
    empty = charts.line_chart(["1"], [("a", np.array([np.nan]), None, 3)], "title", "y", "x")
    assert empty.shape == (*charts.CHART_SIZE, 3) and empty.std() > 0.01
    assert charts.shown_frames(3) == [0, 1, 2] and charts.shown_frames(21) == [0, 3, 6, 9, 11, 14, 17, 20]
    rgb = charts.colormap(np.array([0.0, 0.5, 1.0, np.nan]))
    assert rgb.shape == (4, 3) and rgb.min() >= 0 and rgb.max() <= 1


def test_query_index_measures_those_queries_without_a_copy():
    q, k = qk(n=30)
    index = torch.tensor([29, 3, 3, 17, 0])
    bias, biased = torch.randn(70), torch.tensor([True, False, True, True, False])
    got = attention_to_text(q, k, slice(0, 20), query_index=index, key_bias=bias, biased=biased, budget=40, key_chunk=8)
    assert_matches(got, reference_text_attention(q[:, index], k, slice(0, 20), key_bias=bias, biased=biased))
