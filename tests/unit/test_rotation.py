"""Givens rotations and Residual Alignment."""
import math

import pytest
import torch

from tokenfocus.core.rotation import align_residual, givens_rotate
from tokenfocus.core.spacing import decompose


def _plane(d, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, 2, generator=g))
    return q[:, 0], q[:, 1]


def _vectors(n, d, seed=1):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("theta", [0.3, -1.1, math.pi / 2, 2.9])
def test_givens_preserves_norms_and_inner_products(theta):
    u, w = _plane(32)
    x = _vectors(20, 32)
    y = givens_rotate(x, u, w, theta)
    torch.testing.assert_close(y.norm(dim=-1), x.norm(dim=-1), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(y @ y.T, x @ x.T, rtol=1e-5, atol=1e-4)
    assert (y - x).abs().max() > 1e-2


def test_givens_fixes_vectors_orthogonal_to_the_plane():
    u, w = _plane(32)
    x = _vectors(20, 32)
    x_perp = x - (x @ u)[:, None] * u - (x @ w)[:, None] * w
    torch.testing.assert_close(givens_rotate(x_perp, u, w, 1.2), x_perp, rtol=0, atol=1e-6)


def test_givens_turns_u_towards_w():
    u, w = _plane(16)
    torch.testing.assert_close(givens_rotate(u, u, w, math.pi / 2), w, rtol=0, atol=1e-6)
    torch.testing.assert_close(givens_rotate(w, u, w, math.pi / 2), -u, rtol=0, atol=1e-6)
    theta = 0.4
    expected = math.cos(theta) * u + math.sin(theta) * w
    torch.testing.assert_close(givens_rotate(u, u, w, theta), expected, rtol=0, atol=1e-6)


def test_givens_theta_zero_is_the_identity():
    u, w = _plane(16)
    x = _vectors(5, 16)
    assert torch.equal(givens_rotate(x, u, w, 0.0), x)
    xb = x.to(torch.bfloat16)
    assert torch.equal(givens_rotate(xb, u, w, torch.tensor(0.0)), xb)


def test_givens_per_row_angles_and_dtype():
    u, w = _plane(16)
    x = _vectors(3, 16)
    thetas = torch.tensor([0.0, 0.5, -0.5])
    y = givens_rotate(x, u, w, thetas)
    for i in range(3):
        torch.testing.assert_close(y[i], givens_rotate(x[i], u, w, float(thetas[i])))
    assert givens_rotate(x.half(), u, w, 0.5).dtype == torch.float16


def _tokens(L=24, d=48, seed=0):
    """Tokens with distinct centred singular values, so the principal directions are well defined."""
    g = torch.Generator().manual_seed(seed)
    spectrum = torch.tensor([10.0, 7.0, 5.0, 3.0, 2.0, 1.4, 1.0, 0.7], dtype=torch.float64)
    u = torch.randn(L, len(spectrum), generator=g, dtype=torch.float64)
    u, _ = torch.linalg.qr(u - u.mean(0, keepdim=True))
    v, _ = torch.linalg.qr(torch.randn(d, len(spectrum), generator=g, dtype=torch.float64))
    mean = 2.0 * torch.randn(1, d, generator=g, dtype=torch.float64)
    return ((u * spectrum) @ v.T + mean).float()


def _semantic(d=48, seed=5):
    return torch.randn(d, generator=torch.Generator().manual_seed(seed))


def _directions(x):
    """float64 reference: right singular vectors of the centred tokens (columns) and singular values."""
    x = x.double()
    _, s, vh = torch.linalg.svd(x - x.mean(0), full_matrices=False)
    return vh.T, s


def _residual_unit(x, k, s):
    vk = _directions(x)[0][:, :k]
    s_res = s.double() - vk @ (vk.T @ s.double())
    return s_res / s_res.norm()


def align(x, k, semantic, strength, real=None):
    """Residual Alignment of one sample (x: L x d) with a fixed k."""
    batch = x[None]
    mask = None if real is None else real[None]
    spectrum = decompose(batch, mask)
    return align_residual(batch, mask, spectrum, torch.tensor([k]), semantic[None], strength)[0]


@pytest.mark.parametrize("k", [0, 2, 4])
@pytest.mark.parametrize("strength", [0.3, 1.0])
def test_alignment_keeps_mean_principal_part_and_centred_geometry(k, strength):
    x = _tokens()
    out = align(x, k, _semantic(), strength)
    torch.testing.assert_close(out.mean(0), x.mean(0), rtol=0, atol=1e-5)
    xc, oc = x - x.mean(0), out - out.mean(0)
    vk = _directions(x)[0][:, :k].float()
    torch.testing.assert_close(oc @ vk, xc @ vk, rtol=0, atol=1e-5)
    torch.testing.assert_close(oc.norm(dim=1), xc.norm(dim=1), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(oc @ oc.T, xc @ xc.T, rtol=1e-5, atol=1e-4)
    assert (out - x).abs().max() > 1e-2


@pytest.mark.parametrize("k", [0, 2, 4])
def test_full_strength_aligns_the_first_residual_direction_with_the_semantic_direction(k):
    x = _tokens()
    s = _semantic()
    v, values = _directions(x)
    s_r = _residual_unit(x, k, s)
    assert abs(torch.dot(v[:, k], s_r)) < 0.9  # not aligned to begin with
    out = align(x, k, s, 1.0)
    new_v, new_values = _directions(out)
    assert abs(torch.dot(new_v[:, k], s_r)) > 1 - 1e-5
    # The principal directions and the spectrum stay as they were.
    cos_top = (new_v[:, :k] * v[:, :k]).sum(0).abs()
    torch.testing.assert_close(cos_top, torch.ones(k, dtype=torch.float64), rtol=0, atol=1e-5)
    torch.testing.assert_close(new_values, values, rtol=1e-5, atol=1e-5)


def test_strength_scales_the_angle():
    x = _tokens()
    s = _semantic()
    k = 2
    s_r = _residual_unit(x, k, s)
    before = math.acos(abs(torch.dot(_directions(x)[0][:, k], s_r).item()))
    after_v = _directions(align(x, k, s, 0.5))[0]
    after = math.acos(min(1.0, abs(torch.dot(after_v[:, k], s_r).item())))
    assert after == pytest.approx(before / 2, abs=1e-4)


def test_nothing_to_align_leaves_the_tokens_as_they_are():
    x = _tokens()
    s = _semantic()
    v = _directions(x)[0].float()
    batch = x[None]
    assert align_residual(batch, None, decompose(batch), torch.tensor([2]), s[None], 0.0) is batch
    assert torch.equal(align(x, 8, s, 1.0), x)  # k = rank: no residual direction left
    assert torch.equal(align(x, 2, torch.zeros(48), 1.0), x)
    assert torch.equal(align(x, 2, v[:, :2] @ torch.tensor([0.6, -0.8]), 1.0), x)  # in the principal span
    r1 = v[:, 2]
    assert torch.equal(align(x, 2, 3.0 * r1, 1.0), x)
    assert torch.equal(align(x, 2, -r1 + v[:, 0], 1.0), x)  # parallel once residual


def test_padding_rows_and_other_samples_are_untouched():
    x = torch.cat([_tokens(), 40.0 * torch.randn(6, 48, generator=torch.Generator().manual_seed(9))])
    real = torch.arange(30) < 24
    out = align(x, 2, _semantic(), 1.0, real)
    assert torch.equal(out[~real], x[~real])
    torch.testing.assert_close(out[real], align(x[real], 2, _semantic(), 1.0), rtol=0, atol=1e-5)
    # One sample with something to align, one without (k = rank): the second comes back as it is.
    batch = torch.stack([_tokens(), _tokens(seed=3)])
    semantic = torch.stack([_semantic(), _semantic(seed=6)])
    out = align_residual(batch, None, decompose(batch), torch.tensor([2, 8]), semantic, 1.0)
    assert torch.equal(out[1], batch[1]) and not torch.equal(out[0], batch[0])


def test_alignment_in_half_precision():
    x = _tokens().to(torch.bfloat16)
    s = _semantic().to(torch.bfloat16)
    out = align(x, 2, s, 1.0)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
    torch.testing.assert_close(out, align(x.float(), 2, s, 1.0).to(torch.bfloat16), rtol=0, atol=0)


def test_alignment_compiles_into_one_graph_and_matches_eager():
    batch = torch.stack([_tokens(), _tokens(seed=3)])
    real = torch.ones(2, 24, dtype=torch.bool)
    real[1, 20:] = False
    semantic = torch.stack([_semantic(), _semantic(seed=6)])

    def run(tokens, mask, semantic):
        spectrum = decompose(tokens, mask)
        return align_residual(tokens, mask, spectrum, torch.tensor([2, 3]), semantic, 0.7)

    eager = run(batch, real, semantic)
    compiled = torch.compile(run, backend="eager", fullgraph=True, dynamic=False)(batch, real, semantic)
    torch.testing.assert_close(compiled, eager, rtol=0, atol=1e-6)
    assert torch.equal(compiled[1, 20:], batch[1, 20:])


@pytest.mark.parametrize("scale", [1e-12, 1e6])
def test_alignment_does_not_depend_on_the_tokens_scale(scale):
    # Scale-equivariant over the range the float32 Gram matrix (the tokens' squares) can hold.
    x, s = _tokens(), _semantic()
    torch.testing.assert_close(align(x * scale, 2, s * scale, 1.0), align(x, 2, s, 1.0) * scale,
                               rtol=1e-4, atol=1e-4 * scale)
