"""The auto k of Token Spacing: Maximum-Distance-to-Chord elbow of the singular values."""
import pytest
import torch

from tokenfocus.core.elbow import elbow_counts, elbow_k


def _rank_plus_noise(r: int, n: int, seed: int, flat_top: bool = False) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    top = torch.full((r,), 5.0) if flat_top else 1.0 + 9.0 * torch.rand(r, generator=g)
    noise = 1e-3 * torch.rand(n - r, generator=g)
    return torch.sort(torch.cat([top, noise]), descending=True).values


@pytest.mark.parametrize("r", [1, 2, 3, 5, 10, 40])
def test_rank_r_plus_noise_gives_r(r):
    for seed in range(5):
        assert elbow_k(_rank_plus_noise(r, 64, seed)) == r


@pytest.mark.parametrize("r", [2, 30, 50, 60])
def test_rank_r_plus_noise_gives_r_with_a_flat_top(r):
    # With a flat top and r past the middle the farthest point is s_r (above the chord), not s_{r+1}.
    assert elbow_k(_rank_plus_noise(r, 64, seed=0, flat_top=True)) == r


@pytest.mark.parametrize("scale", [1e-4, 0.37, 3.0, 2.5e5])
def test_scaling_the_spectrum_does_not_change_k(scale):
    g = torch.Generator().manual_seed(1)
    for _ in range(20):
        n = int(torch.randint(3, 80, (1,), generator=g))
        s = torch.sort(torch.rand(n, generator=g) ** 4, descending=True).values
        assert elbow_k(s * scale) == elbow_k(s)


def test_smooth_decay_bend_is_found():
    s = torch.tensor([100.0, 60.0, 30.0, 8.0, 6.0, 5.0, 4.5, 4.0, 3.6, 3.3, 3.0])
    assert elbow_k(s) == 3


def test_ties_go_to_the_smallest_index_despite_float_noise():
    # Normalised, s_2 lies 0.2/sqrt(2) above the chord and s_4 as far below it: the shoulder at index 2
    # (k = 2) and the knee at index 4 (k = 3) tie, and the smaller index must win at any scale.
    s = torch.tensor([1.0, 0.95, 0.5, 0.05, 0.0])
    for scale in [1.0, 3.7, 1e-3, 123.456]:
        assert elbow_k(s * scale) == 2


def test_order_of_the_input_does_not_matter():
    s = _rank_plus_noise(4, 20, seed=3)
    assert elbow_k(s[torch.randperm(20)]) == elbow_k(s) == 4


def test_degenerate_spectra():
    assert elbow_k(torch.tensor([])) == 0
    assert elbow_k(torch.zeros(7)) == 0
    assert elbow_k(torch.tensor([2.5])) == 1
    assert elbow_k(torch.tensor([3.0, 1.0])) == 1
    assert elbow_k(torch.tensor([4.0, 3.0, 2.0, 1.0])) == 1  # linear: no bend
    # Flat: equal singular values make the directions arbitrary, so all of them are taken.
    assert elbow_k(torch.full((6,), 2.0)) == 6
    assert elbow_k(torch.full((6,), 2.0) + 1e-7 * torch.arange(6)) == 6


def test_accepts_half_precision():
    s = _rank_plus_noise(3, 32, seed=0).to(torch.bfloat16)
    assert elbow_k(s) == 3


def test_batched_counts_equal_one_spectrum_at_a_time():
    # Each row counts over its own rank; the values past it (here: junk) are ignored.
    spectra = [_rank_plus_noise(3, 20, seed=0), _rank_plus_noise(7, 12, seed=1), torch.tensor([2.5]),
               torch.full((5,), 2.0), torch.zeros(4), torch.tensor([1.0, 0.95, 0.5, 0.05, 0.0])]
    width = max(s.numel() for s in spectra)
    rows = torch.stack([torch.cat([s, torch.full((width - s.numel(),), 99.0)]) for s in spectra])
    rank = torch.tensor([s.numel() for s in spectra])
    expected = [elbow_k(s) for s in spectra]
    assert expected == [3, 7, 1, 5, 0, 2]
    assert elbow_counts(rows, rank).tolist() == expected
    assert elbow_counts(rows, torch.zeros(len(spectra), dtype=torch.long)).tolist() == [0] * len(spectra)
    compiled = torch.compile(elbow_counts, backend="eager", fullgraph=True, dynamic=False)
    assert compiled(rows, rank).tolist() == expected
