"""Token Spacing: the batched principal decomposition, the choice of k, spacing of padded batches."""
import pytest
import torch

from tokenfocus.core.spacing import choose_k, decompose, masked_mean, space_tokens


def tokens_with_spectrum(L, d, spectrum, seed=0, offset=3.0, noise=0.0):
    """float32 tokens (L x d) whose centred singular values are `spectrum` (plus optional noise)."""
    g = torch.Generator().manual_seed(seed)
    n = len(spectrum)
    u = torch.randn(L, n, generator=g, dtype=torch.float64)
    u, _ = torch.linalg.qr(u - u.mean(0, keepdim=True))  # orthonormal columns with zero mean
    v, _ = torch.linalg.qr(torch.randn(d, n, generator=g, dtype=torch.float64))
    c = (u * torch.tensor(spectrum, dtype=torch.float64)) @ v.T
    c = c + offset * torch.randn(1, d, generator=g, dtype=torch.float64)
    c = c + noise * torch.randn(L, d, generator=g, dtype=torch.float64)
    return c.float()


def centred_svd(x):
    """float64 reference: centred singular values and right singular vectors (as columns)."""
    x = x.double()
    _, s, vh = torch.linalg.svd(x - x.mean(0, keepdim=True), full_matrices=False)
    return s, vh.T


def space_one(x, k_mode, k, sigma):
    out, ks = space_tokens(x[None], None, sigma, k_mode, k)
    return out[0], int(ks[0])


SPECTRUM = [9.0, 7.0, 5.0, 3.5, 2.0, 1.2, 0.7, 0.4]
SHAPES = [(12, 40), (30, 16)]  # fewer tokens than dimensions (as in every supported model), and more


@pytest.mark.parametrize("L,d", SHAPES)
@pytest.mark.parametrize("k,sigma", [(1, 1.3), (3, 1.3), (3, 0.6), (5, 2.5)])
def test_spacing_keeps_the_token_mean(L, d, k, sigma):
    x = tokens_with_spectrum(L, d, SPECTRUM)
    out, _ = space_one(x, "fixed", k, sigma)
    torch.testing.assert_close(out.double().mean(0), x.double().mean(0), rtol=0, atol=2e-6)


@pytest.mark.parametrize("L,d", SHAPES)
@pytest.mark.parametrize("k,sigma", [(1, 1.3), (3, 1.3), (3, 0.6), (5, 2.5)])
def test_spacing_scales_the_top_k_singular_values_only(L, d, k, sigma):
    x = tokens_with_spectrum(L, d, SPECTRUM)
    before, _ = centred_svd(x)
    out, applied = space_one(x, "fixed", k, sigma)
    after, _ = centred_svd(out)
    expected = torch.sort(torch.cat([sigma * before[:k], before[k:]]), descending=True).values
    assert applied == k
    torch.testing.assert_close(after, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("L,d", SHAPES)
def test_spacing_changes_tokens_only_along_the_top_k_directions(L, d):
    x = tokens_with_spectrum(L, d, SPECTRUM)
    _, v = centred_svd(x)
    change = (space_one(x, "fixed", 2, 1.7)[0] - x).double()
    vk = v[:, :2]
    residual_change = change - (change @ vk) @ vk.T
    assert residual_change.abs().max() < 1e-5
    assert change.abs().max() > 0.1


@pytest.mark.parametrize("L,d", SHAPES)
def test_k_all_equals_the_variance_scale_up(L, d):
    x = tokens_with_spectrum(L, d, SPECTRUM)
    mean = x.mean(0, keepdim=True)
    expected = mean + 1.4 * (x - mean)
    out, k = space_one(x, "all", 0, 1.4)
    torch.testing.assert_close(out, expected)
    assert k == min(L - 1, d)
    # Scaling every direction of the decomposition is the same edit.
    torch.testing.assert_close(space_one(x, "fixed", 10**6, 1.4)[0], expected, rtol=1e-5, atol=1e-5)


def test_neutral_settings_leave_the_tokens_as_they_are():
    x = tokens_with_spectrum(10, 24, SPECTRUM)
    batch = torch.stack([x, x.flip(0)])
    for mode in ("auto", "fixed", "all"):
        out, ks = space_tokens(batch, None, 1.0, mode, 3)
        assert out is batch and ks.tolist() == [0, 0]
    out, ks = space_tokens(batch, None, 1.3, "fixed", 0)
    assert torch.equal(out, batch) and ks.tolist() == [0, 0]


def _padded_batch():
    lengths = [7, 12, 4]
    x = torch.stack([tokens_with_spectrum(16, 32, SPECTRUM[:3], seed=s, noise=0.01) for s in range(3)])
    mask = torch.arange(16)[None, :] < torch.tensor(lengths)[:, None]
    g = torch.Generator().manual_seed(11)
    x[~mask] = torch.randn(int((~mask).sum()), 32, generator=g) * 50.0  # loud pad embeddings must not leak in
    return x, mask


@pytest.mark.parametrize("mode", ["auto", "fixed", "all"])
def test_padding_rows_are_bit_identical(mode):
    x, mask = _padded_batch()
    out, _ = space_tokens(x, mask, 1.3, mode, 2)
    assert torch.equal(out[~mask], x[~mask])
    assert not torch.equal(out[mask], x[mask])


@pytest.mark.parametrize("mode", ["auto", "fixed", "all"])
def test_padding_does_not_change_the_real_rows(mode):
    x, mask = _padded_batch()
    other = x.clone()
    other[~mask] = float("inf")  # even a non-finite pad embedding stays out of the statistics
    out, ks = space_tokens(x, mask, 1.3, mode, 2)
    out_other, ks_other = space_tokens(other, mask, 1.3, mode, 2)
    assert torch.equal(out[mask], out_other[mask]) and torch.equal(ks, ks_other)


@pytest.mark.parametrize("mode", ["auto", "fixed"])
def test_batch_equals_samples_one_by_one(mode):
    x, mask = _padded_batch()
    out, ks = space_tokens(x, mask, 1.3, mode, 2)
    for b in range(x.shape[0]):
        alone, k = space_one(x[b][mask[b]], mode, 2, 1.3)
        assert int(ks[b]) == k > 0
        torch.testing.assert_close(out[b][mask[b]], alone, rtol=1e-6, atol=1e-6)


def test_batch_mode_all_equals_the_variance_scale_up_on_real_rows():
    x, mask = _padded_batch()
    out, _ = space_tokens(x, mask, 1.6, "all", 0)
    for b in range(x.shape[0]):
        real = x[b][mask[b]]
        mean = real.mean(0, keepdim=True)
        torch.testing.assert_close(out[b][mask[b]], mean + 1.6 * (real - mean))


def test_samples_never_mix():
    x, mask = _padded_batch()
    changed = x.clone()
    changed[1] = changed[1] * 3.0 + 1.0
    out, ks = space_tokens(x, mask, 1.3, "auto", 0)
    out_changed, ks_changed = space_tokens(changed, mask, 1.3, "auto", 0)
    assert ks[0] == ks_changed[0] and ks[2] == ks_changed[2]
    # Not bit-equal: another sample's k can change how many columns the batched product multiplies.
    for b in (0, 2):
        torch.testing.assert_close(out[b], out_changed[b], rtol=0, atol=1e-6)


@pytest.mark.parametrize("mode", ["auto", "fixed", "all"])
def test_sample_with_fewer_than_two_real_tokens_is_left_alone(mode):
    x, mask = _padded_batch()
    mask[0] = False
    mask[2] = False
    mask[2, 5] = True
    out, ks = space_tokens(x, mask, 1.3, mode, 2)
    assert torch.equal(out[0], x[0]) and torch.equal(out[2], x[2])
    assert ks[0] == 0 and ks[2] == 0 and ks[1] > 0


def test_auto_k_finds_the_rank_of_the_prompt_signal():
    # Three strong directions over a floor of small but real variation.
    x = tokens_with_spectrum(20, 64, [8.0, 6.0, 4.0], noise=0.02)
    assert space_one(x, "auto", 0, 1.3)[1] == 3


def test_choose_k_modes():
    x = tokens_with_spectrum(6, 16, [3.0, 2.0, 1.0])
    spectrum = decompose(x[None])
    assert spectrum.rank.tolist() == [3]
    assert choose_k(spectrum, "fixed", 2).tolist() == [2]
    assert choose_k(spectrum, "fixed", 10).tolist() == [3]
    assert choose_k(spectrum, "all", 1).tolist() == [3]
    with pytest.raises(ValueError):
        choose_k(spectrum, "some", 1)
    with pytest.raises(ValueError):
        space_tokens(x[None], None, 1.3, "some", 1)
    with pytest.raises(ValueError, match="mask"):
        space_tokens(x[None], torch.ones(1, 5, dtype=torch.bool), 1.3, "auto", 1)


def test_decomposition_matches_a_float64_svd():
    # A spectrum over four decades, 64 tokens in 512 dimensions.
    spectrum = torch.logspace(1, -3, 60).tolist()
    x = tokens_with_spectrum(64, 512, spectrum, seed=4)
    s_ref, v_ref = centred_svd(x)
    got = decompose(x[None])
    assert got.values.dtype == torch.float32 and torch.isfinite(got.values).all()
    assert torch.all(got.values[0, :-1] >= got.values[0, 1:])
    torch.testing.assert_close(got.values[0, :10].double(), s_ref[:10], rtol=1e-5, atol=0)
    directions = torch.stack([got.direction(torch.tensor([i]))[0] for i in range(10)], dim=1).double()
    cosines = (directions * v_ref[:, :10]).sum(0).abs()
    torch.testing.assert_close(cosines, torch.ones(10, dtype=torch.float64), rtol=0, atol=1e-6)
    torch.testing.assert_close(got.mean[0].double(), x.double().mean(0), rtol=0, atol=1e-6)


def test_projection_onto_the_top_k_span():
    x = tokens_with_spectrum(24, 48, SPECTRUM, seed=2)
    _, v = centred_svd(x)
    y = torch.randn(2, 48, generator=torch.Generator().manual_seed(3))
    spectrum = decompose(torch.stack([x, x]))
    k = torch.tensor([0, 3])
    got = spectrum.project(y, k).double()
    assert torch.equal(got[0], torch.zeros(48, dtype=torch.float64))
    torch.testing.assert_close(got[1], v[:, :3] @ (v[:, :3].T @ y[1].double()), rtol=0, atol=1e-5)


def test_directions_past_the_rank_are_zero():
    x = tokens_with_spectrum(10, 32, [4.0, 2.0])
    spectrum = decompose(x[None])
    assert spectrum.rank.tolist() == [2]
    assert torch.linalg.vector_norm(spectrum.direction(torch.tensor([1]))) == pytest.approx(1.0, abs=1e-5)
    assert torch.equal(spectrum.direction(torch.tensor([2])), torch.zeros(1, 32))


def test_masked_statistics_equal_those_of_the_real_rows_alone():
    x, mask = _padded_batch()
    spectrum = decompose(x, mask)
    for b in range(x.shape[0]):
        alone = decompose(x[b][mask[b]][None])
        n = int(mask[b].sum())
        assert spectrum.rank[b] == alone.rank[0]
        # float32 Gram eigenvalues are good to about eps * s_max^2: small singular values to ~1e-5 s_max^2 / s.
        torch.testing.assert_close(spectrum.values[b, :3], alone.values[0, :3], rtol=1e-5, atol=0)
        torch.testing.assert_close(spectrum.values[b, :n], alone.values[0], rtol=0, atol=1e-4 * float(alone.values[0, 0]))
        torch.testing.assert_close(spectrum.mean[b], alone.mean[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(masked_mean(x, mask), spectrum.mean)


@pytest.mark.parametrize("L,d", SHAPES)
def test_exact_low_rank_tokens_have_that_rank(L, d):
    assert decompose(tokens_with_spectrum(L, d, [4.0, 2.0, 1.0])[None]).rank.tolist() == [3]


_G = torch.Generator().manual_seed(7)
DEGENERATE = {
    "one token": torch.randn(1, 24, generator=_G),
    "identical tokens": torch.full((7, 24), 0.1) + 7.0 * torch.randn(1, 24, generator=_G),  # mean rounds
    "zero variance at zero": torch.zeros(6, 24),
    "more tokens than dims": torch.randn(50, 8, generator=_G),
    "fewer tokens than dims": torch.randn(5, 64, generator=_G),
    "bf16": torch.randn(9, 32, generator=_G).to(torch.bfloat16),
    "fp16": (torch.randn(9, 32, generator=_G) * 100).to(torch.float16),
    "bf16 identical": torch.full((4, 32), 3.3, dtype=torch.bfloat16),
}


@pytest.mark.parametrize("name", list(DEGENERATE))
@pytest.mark.parametrize("mode", ["auto", "fixed", "all"])
def test_degenerate_inputs_give_finite_output(name, mode):
    x = DEGENERATE[name]
    out, _ = space_one(x, mode, 2, 1.3)
    assert out.dtype == x.dtype and out.shape == x.shape and torch.isfinite(out).all()


@pytest.mark.parametrize("name", ["one token", "identical tokens", "zero variance at zero", "bf16 identical"])
@pytest.mark.parametrize("mode", ["auto", "fixed"])
def test_tokens_without_variance_have_rank_zero_and_stay_as_they_are(name, mode):
    x = DEGENERATE[name]
    assert decompose(x[None]).rank.tolist() == [0]
    out, k = space_one(x, mode, 3, 1.3)
    assert k == 0 and torch.equal(out, x)


def test_half_precision_is_computed_in_float32():
    x16 = tokens_with_spectrum(10, 48, SPECTRUM).to(torch.bfloat16)
    out, _ = space_one(x16, "fixed", 3, 1.3)
    ref, _ = space_one(x16.float(), "fixed", 3, 1.3)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out, ref.to(torch.bfloat16), rtol=0, atol=0)


@pytest.mark.parametrize("mode", ["auto", "fixed", "all"])
def test_spacing_compiles_into_one_graph_and_matches_eager(mode):
    # fullgraph=True fails on any graph break; dynamic=False keeps every shape static.
    x, mask = _padded_batch()
    eager = space_tokens(x, mask, 1.3, mode, 2)
    compiled = torch.compile(space_tokens, backend="eager", fullgraph=True, dynamic=False)(x, mask, 1.3, mode, 2)
    assert torch.equal(compiled[1], eager[1])
    torch.testing.assert_close(compiled[0], eager[0], rtol=0, atol=1e-6)
    assert torch.equal(compiled[0][~mask], x[~mask])


def test_padding_between_real_rows_does_not_break_the_decomposition():
    # SD3's uncond text: a few real CLIP rows, CLIP padding, a few real T5 rows, T5 padding. Zero rows
    # between real ones made float32 LAPACK eigh fail to converge ("too many repeated eigenvalues") on
    # this very input before the padding rows were given distinct eigenvalues of their own.
    x = torch.randn(154, 32, generator=torch.Generator().manual_seed(0))
    real = torch.zeros(154, dtype=torch.bool)
    real[:7] = True
    real[77:84] = True
    spectrum = decompose(x[None], real[None])
    alone = decompose(x[real][None])
    assert spectrum.rank.tolist() == alone.rank.tolist() == [13]
    torch.testing.assert_close(spectrum.values[0, :13], alone.values[0, :13], rtol=1e-5, atol=1e-5)
    out, _ = space_tokens(x[None], real[None], 1.3, "auto", 0)
    assert torch.isfinite(out).all() and torch.equal(out[0, ~real], x[~real])


@pytest.mark.parametrize("r", [2, 4, 7])
@pytest.mark.parametrize("noise", [1e-5, 1e-2])
def test_auto_k_gives_the_rank_of_the_signal_through_the_pipeline(r, noise):
    # A rank-r prompt signal plus noise, padded the way the models pad: with noise far under the rank cut
    # (1e-5) or above it (1e-2), the elbow sees every real-token value and finds r.
    spectrum = [10.0 - 1.1 * i for i in range(r)]
    real_rows, rows = 40, 77
    x = torch.zeros(2, rows, 64)
    real = torch.zeros(2, rows, dtype=torch.bool)
    for b in range(2):
        x[b, :real_rows] = tokens_with_spectrum(real_rows, 64, spectrum, seed=b, noise=noise)
        x[b, real_rows:] = 0.5       # a pad-token embedding
        real[b, :real_rows] = True
    _, k = space_tokens(x, real, 1.3, "auto", 0)
    assert k.tolist() == [r, r]
    assert choose_k(decompose(x, real), "auto", 0).tolist() == [r, r]


def test_auto_k_never_exceeds_the_rank():
    x = tokens_with_spectrum(12, 40, [5.0, 4.0, 3.0])   # exact rank 3: the values past it are rounding
    spectrum = decompose(x[None])
    assert spectrum.rank.tolist() == [3]
    assert choose_k(spectrum, "auto", 0).tolist() == [3]
