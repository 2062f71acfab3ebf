import torch

from tokenfocus.core.temperature import (
    CHUNK_FLOOR, MAX_CHUNKS, adaptive_gamma, attention_entropy, logit_spread, qk_factors,
)


def attention(q, k, v):
    return torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, dim=-1) @ v


def make_qkv(seed=0, b=2, h=3, lq=17, lk=11, d=8):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, h, n, d, generator=g, dtype=torch.float64) for n in (lq, lk, lk)]


def test_scaling_q_equals_scaling_k_equals_inverse_temperature():
    q, k, v = make_qkv()
    a = 1.35
    by_q = attention(q * a, k, v)
    by_k = attention(q, k * a, v)
    logits = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5
    by_temperature = torch.softmax(logits / (1 / a), dim=-1) @ v
    assert torch.allclose(by_q, by_k, atol=1e-12) and torch.allclose(by_q, by_temperature, atol=1e-12)


def test_factors_for_query_key_and_both():
    assert qk_factors(1.35, "query") == (1.35, 1.0)
    assert qk_factors(1.35, "key") == (1.0, 1.35)
    assert qk_factors(1.35, "both") == (1.35, 1.35)


def test_entropy_is_non_increasing_in_the_factor():
    q, k, _ = make_qkv(seed=1)
    entropies = [float(attention_entropy(q * a, k)) for a in (0.5, 1.0, 1.2, 1.35, 1.8, 3.0)]
    assert all(later <= earlier + 1e-12 for earlier, later in zip(entropies, entropies[1:]))
    assert entropies[-1] < entropies[1]


def test_logit_spread_matches_the_materialised_logits():
    q, k, _ = make_qkv(seed=2)
    logits = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5
    expected = logits.var(dim=-1, unbiased=False).mean(dim=-1).sqrt()
    assert torch.allclose(logit_spread(q, k).double(), expected, rtol=1e-5)


def test_adaptive_gamma_is_monotone_and_neutral_at_one():
    spread = torch.tensor([0.0, 0.5, 1.0, 2.0, 10.0])
    gammas = adaptive_gamma(1.35, spread)
    assert torch.all(gammas[:-1] >= gammas[1:])
    assert abs(float(gammas[2]) - 1.35) < 1e-6
    assert torch.equal(adaptive_gamma(1.0, spread), torch.ones(5))


class LargestFloat32Tensor:
    """Records the largest float32 tensor any torch op creates while active (a dispatch mode)."""

    def __enter__(self):
        from torch.utils._python_dispatch import TorchDispatchMode

        record = self

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                for t in out if isinstance(out, (tuple, list)) else (out,):
                    if isinstance(t, torch.Tensor) and t.dtype == torch.float32:
                        record.largest = max(record.largest, t.untyped_storage().nbytes())
                return out

        self.largest = 0
        self.mode = Mode()
        self.mode.__enter__()
        return self

    def __exit__(self, *exc):
        self.mode.__exit__(*exc)


def test_logit_spread_of_a_long_bf16_call_makes_no_full_float32_copy():
    """Adaptive temperature at video lengths: the moments are taken a chunk of rows at a time, so no float32
    copy of q or k exists (a full one of this q is 64 MiB, twice the bf16 q)."""
    g = torch.Generator().manual_seed(3)
    q = torch.randn(1, 4, 65536, 64, generator=g).to(torch.bfloat16)      # 32 MiB as bf16
    k = torch.randn(1, 4, 65536, 64, generator=g).to(torch.bfloat16)
    with LargestFloat32Tensor() as seen:
        chunked = logit_spread(q, k)
    full_copy = q.numel() * 4
    assert seen.largest <= max(CHUNK_FLOOR, full_copy // MAX_CHUNKS) < full_copy
    q32, k32 = q.double(), k.double()
    exact = ((k32 - k32.mean(-2, keepdim=True)).transpose(-1, -2) @ (k32 - k32.mean(-2, keepdim=True)) / k.shape[-2]
             * (q32.transpose(-1, -2) @ q32 / q.shape[-2])).sum((-1, -2)).div(64).sqrt()
    torch.testing.assert_close(chunked.double(), exact, rtol=1e-4, atol=0)
