import pytest
import torch

from tokenfocus.core.region import as_frames, latent_frames, token_weights_of_mask


def test_a_mask_is_area_averaged_onto_the_token_grid():
    mask = torch.zeros(1, 8, 8)
    mask[:, :, :4] = 1.0
    mask[:, :2, 4:6] = 1.0          # half of token (0, 2)
    weights = token_weights_of_mask(mask, (1, 2, 4)).view(2, 4)
    assert weights.tolist() == [[1.0, 1.0, 0.5, 0.0], [1.0, 1.0, 0.0, 0.0]]


def test_video_frames_are_grouped_as_the_vae_groups_them():
    frames = torch.zeros(9, 4, 4)       # 9 pixel frames -> 3 latent frames (1 + 4 + 4)
    frames[0] = 1.0
    frames[1:5, :, :2] = 1.0
    frames[7:9] = 1.0
    per_latent = latent_frames(frames, 3)
    assert per_latent[0].mean() == 1.0 and per_latent[1].mean() == 0.5 and per_latent[2].mean() == 0.5
    assert latent_frames(frames[:1], 3).shape == (3, 4, 4)
    weights = token_weights_of_mask(frames, (3, 2, 2)).view(3, 2, 2)
    assert weights[1].tolist() == [[1.0, 0.0], [1.0, 0.0]]
    with pytest.raises(ValueError, match="give 1 frame"):
        latent_frames(frames[:4], 3)


def test_masks_are_checked_and_clamped():
    assert as_frames(torch.full((4, 4), 2.0)).shape == (1, 4, 4) and as_frames(torch.full((4, 4), 2.0)).max() == 1.0
    with pytest.raises(ValueError, match="not finite"):
        as_frames(torch.full((1, 4, 4), float("nan")))
    with pytest.raises(ValueError, match="MASK is"):
        as_frames(torch.zeros(1, 1, 4, 4))
