"""Token Spacing: principal basis, choice of k, spacing of one sample and of a padded batch."""
import pytest
import torch

from tokenfocus.core.spacing import (
    TokenBasis,
    principal_basis,
    resolve_k,
    scale_variance,
    space_tokens,
    space_tokens_batch,
)


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


def centred_svdvals(x):
    x = x.double()
    return torch.linalg.svdvals(x - x.mean(0, keepdim=True))


SPECTRUM = [9.0, 7.0, 5.0, 3.5, 2.0, 1.2, 0.7, 0.4]
SHAPES = [(12, 40), (30, 16)]  # L < d (Gram path) and L > d (full SVD path)


@pytest.mark.parametrize("L,d", SHAPES)
@pytest.mark.parametrize("k,sigma", [(1, 1.3), (3, 1.3), (3, 0.6), (5, 2.5)])
def test_spacing_keeps_the_token_mean(L, d, k, sigma):
    x = tokens_with_spectrum(L, d, SPECTRUM)
    out = space_tokens(x, principal_basis(x), k, sigma)
    torch.testing.assert_close(out.double().mean(0), x.double().mean(0), rtol=0, atol=2e-6)


@pytest.mark.parametrize("L,d", SHAPES)
@pytest.mark.parametrize("k,sigma", [(1, 1.3), (3, 1.3), (3, 0.6), (5, 2.5)])
def test_spacing_scales_the_top_k_singular_values_only(L, d, k, sigma):
    x = tokens_with_spectrum(L, d, SPECTRUM)
    before = centred_svdvals(x)
    after = centred_svdvals(space_tokens(x, principal_basis(x), k, sigma))
    expected = torch.sort(torch.cat([sigma * before[:k], before[k:]]), descending=True).values
    torch.testing.assert_close(after, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("L,d", SHAPES)
def test_spacing_changes_tokens_only_along_the_top_k_directions(L, d):
    x = tokens_with_spectrum(L, d, SPECTRUM)
    basis = principal_basis(x)
    change = space_tokens(x, basis, 2, 1.7) - x
    vk = basis.directions[:, :2]
    residual_change = change - (change @ vk) @ vk.T
    assert residual_change.abs().max() < 1e-5
    assert change.abs().max() > 0.1


@pytest.mark.parametrize("L,d", SHAPES)
def test_k_all_equals_the_variance_scale_up(L, d):
    x = tokens_with_spectrum(L, d, SPECTRUM)
    basis = principal_basis(x)
    mean = x.mean(0, keepdim=True)
    expected = mean + 1.4 * (x - mean)
    torch.testing.assert_close(space_tokens(x, basis, resolve_k(basis, "all", 0), 1.4), expected)
    torch.testing.assert_close(scale_variance(x, 1.4), expected)


def test_neutral_settings_return_the_input_object():
    x = tokens_with_spectrum(10, 24, SPECTRUM)
    basis = principal_basis(x)
    assert space_tokens(x, basis, 3, 1.0) is x
    assert space_tokens(x, basis, 0, 1.3) is x
    assert scale_variance(x, 1.0) is x
    batch = torch.stack([x, x.flip(0)])
    for mode in ("auto", "fixed", "all"):
        out, ks = space_tokens_batch(batch, None, 1.0, mode, 3)
        assert out is batch and ks == [0, 0]


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
    out, _ = space_tokens_batch(x, mask, 1.3, mode, 2)
    assert torch.equal(out[~mask], x[~mask])
    assert not torch.equal(out[mask], x[mask])


@pytest.mark.parametrize("mode", ["auto", "fixed", "all"])
def test_padding_does_not_change_the_real_rows(mode):
    x, mask = _padded_batch()
    other = x.clone()
    other[~mask] = 0.0
    out, ks = space_tokens_batch(x, mask, 1.3, mode, 2)
    out_other, ks_other = space_tokens_batch(other, mask, 1.3, mode, 2)
    assert torch.equal(out[mask], out_other[mask]) and ks == ks_other


@pytest.mark.parametrize("mode", ["auto", "fixed"])
def test_batch_equals_samples_one_by_one(mode):
    x, mask = _padded_batch()
    out, ks = space_tokens_batch(x, mask, 1.3, mode, 2)
    for b in range(x.shape[0]):
        real = x[b][mask[b]]
        basis = principal_basis(real)
        k = resolve_k(basis, mode, 2)
        assert ks[b] == k
        torch.testing.assert_close(out[b][mask[b]], space_tokens(real, basis, k, 1.3), rtol=0, atol=0)


def test_batch_mode_all_equals_the_variance_scale_up_on_real_rows():
    x, mask = _padded_batch()
    out, _ = space_tokens_batch(x, mask, 1.6, "all", 0)
    for b in range(x.shape[0]):
        real = x[b][mask[b]]
        mean = real.mean(0, keepdim=True)
        torch.testing.assert_close(out[b][mask[b]], mean + 1.6 * (real - mean))


def test_samples_never_mix():
    x, mask = _padded_batch()
    changed = x.clone()
    changed[1] = changed[1] * 3.0 + 1.0
    out, _ = space_tokens_batch(x, mask, 1.3, "auto", 0)
    out_changed, _ = space_tokens_batch(changed, mask, 1.3, "auto", 0)
    assert torch.equal(out[0], out_changed[0]) and torch.equal(out[2], out_changed[2])


def test_sample_with_fewer_than_two_real_tokens_is_left_alone():
    x, mask = _padded_batch()
    mask[0] = False
    mask[2] = False
    mask[2, 5] = True
    out, ks = space_tokens_batch(x, mask, 1.3, "all", 0)
    assert torch.equal(out[0], x[0]) and torch.equal(out[2], x[2])
    assert ks[0] == 0 and ks[2] == 0 and ks[1] > 0


def test_auto_k_finds_the_rank_of_the_prompt_signal():
    # Three strong directions over a floor of small but real variation.
    x = tokens_with_spectrum(20, 64, [8.0, 6.0, 4.0], noise=0.02)
    assert resolve_k(principal_basis(x), "auto", 0) == 3


def test_resolve_k_modes():
    x = tokens_with_spectrum(6, 16, [3.0, 2.0, 1.0])
    basis = principal_basis(x)
    assert basis.rank == 3
    assert resolve_k(basis, "fixed", 2) == 2
    assert resolve_k(basis, "fixed", 10) == 3
    assert resolve_k(basis, "all", 1) == 3
    with pytest.raises(ValueError):
        resolve_k(basis, "some", 1)
    with pytest.raises(ValueError):
        space_tokens_batch(x[None], None, 1.3, "some", 1)


def _assert_valid_basis(basis: TokenBasis, d: int):
    r = basis.rank
    assert basis.mean.shape == (1, d) and basis.directions.shape == (d, r)
    assert all(t.dtype == torch.float32 for t in (basis.mean, basis.directions, basis.singular_values))
    assert torch.isfinite(basis.directions).all() and torch.isfinite(basis.singular_values).all()
    torch.testing.assert_close(basis.directions.T @ basis.directions, torch.eye(r), rtol=0, atol=1e-5)
    assert torch.all(basis.singular_values[:-1] >= basis.singular_values[1:])


def test_gram_path_equals_full_svd_on_the_top_directions():
    # A spectrum over four decades: dividing Cc^T U by tiny singular values alone would not give
    # orthonormal directions in float32.
    spectrum = torch.logspace(1, -3, 60).tolist()
    x = tokens_with_spectrum(64, 512, spectrum, seed=4)
    basis = principal_basis(x)
    _assert_valid_basis(basis, 512)
    xc = x.double() - x.double().mean(0, keepdim=True)
    _, s_ref, vh_ref = torch.linalg.svd(xc, full_matrices=False)
    torch.testing.assert_close(basis.singular_values[:10].double(), s_ref[:10], rtol=1e-5, atol=0)
    cosines = (basis.directions[:, :10].double() * vh_ref[:10].T).sum(0).abs()
    torch.testing.assert_close(cosines, torch.ones(10, dtype=torch.float64), rtol=0, atol=1e-6)


def test_exact_low_rank_tokens_have_that_rank():
    for L, d in SHAPES:
        basis = principal_basis(tokens_with_spectrum(L, d, [4.0, 2.0, 1.0]))
        _assert_valid_basis(basis, d)
        assert basis.rank == 3


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
    basis = principal_basis(x)
    _assert_valid_basis(basis, x.shape[1])
    out = space_tokens(x, basis, resolve_k(basis, mode, 2), 1.3)
    assert out.dtype == x.dtype and out.shape == x.shape and torch.isfinite(out).all()
    out_b, _ = space_tokens_batch(x[None], None, 1.3, mode, 2)
    assert out_b.dtype == x.dtype and torch.isfinite(out_b).all()


@pytest.mark.parametrize("name", ["one token", "identical tokens", "zero variance at zero", "bf16 identical"])
def test_tokens_without_variance_have_rank_zero_and_stay_as_they_are(name):
    x = DEGENERATE[name]
    basis = principal_basis(x)
    assert basis.rank == 0 and resolve_k(basis, "auto", 0) == 0
    assert space_tokens(x, basis, resolve_k(basis, "all", 0), 1.3) is x


def test_half_precision_is_computed_in_float32():
    x32 = tokens_with_spectrum(10, 48, SPECTRUM)
    x16 = x32.to(torch.bfloat16)
    basis = principal_basis(x16)
    ref = space_tokens(x16.float(), principal_basis(x16.float()), 3, 1.3)
    out = space_tokens(x16, basis, 3, 1.3)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out, ref.to(torch.bfloat16), rtol=0, atol=0)
