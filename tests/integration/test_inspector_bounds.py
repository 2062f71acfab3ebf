"""The Attention Inspector View's pictures are bounded whatever it is given: at most 16 tokens (a range counts
each row), at most 8 frame columns of tiles of at most 256 px, and of a decoded video only the frames under
those columns, cut down before they are copied; an IMAGE with no frames draws without a backdrop."""
import dataclasses

import pytest
import torch

import tiny_models as tm


@pytest.fixture(scope="module")
def view(comfy):
    from tokenfocus.nodes.inspector import AttentionInspectorNode, AttentionInspectorViewNode

    return AttentionInspectorNode, AttentionInspectorViewNode


@pytest.fixture(scope="module")
def recorded(tiny, view):
    """A Wan run recorded by the inspector (512 text rows), and its latent."""
    model = tiny("wan21_t2v")
    patched, handle, _ = view[0].execute(model.patcher, blocks="all", start_percent=0.0, end_percent=1.0, queries=16,
                                         heatmaps=True, prompt="positive").args
    latent = tm.sample(dataclasses.replace(model, patcher=patched), steps=2)
    return handle, {"samples": latent}


def peak_growth(run) -> int:
    """Bytes the process's resident set grew to while run() ran (VmHWM after resetting it; large tensors
    are their own mappings, so they show in it)."""
    def status(key):
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key))

    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = status("VmRSS")
    run()
    return status("VmHWM") - before


def test_a_long_range_of_rows_is_refused_before_anything_is_drawn(recorded, view):
    from tokenfocus.core import charts

    handle, latent = recorded
    assert "at most 16 tokens" in view[1].validate_inputs(tokens="0-511", max_tokens=6)
    with pytest.raises(ValueError, match="at most 16 tokens"):
        view[1].execute(handle, "0-511", 6, latent=latent)
    heat, *_ = view[1].execute(handle, "0-15", 6, latent=latent).args
    height, width = charts.max_heat_size(16)
    assert heat.shape[1] <= height and heat.shape[2] <= width
    assert (height, width) == (4264, 2292), "the bound the help page states"


def test_an_image_with_no_frames_draws_without_a_backdrop(recorded, view):
    handle, latent = recorded
    heat, _, _, summary = view[1].execute(handle, "", 6, latent=latent, image=torch.zeros(0, 64, 96, 3)).args
    assert heat.ndim == 4 and float(heat.std()) > 0.05
    assert "no frames" in summary


def test_only_the_shown_frames_of_a_long_decoded_video_are_copied(recorded, view):
    """33 frames of 720p as float32 are 364 MiB; the View copies at most 8 frames cut to 512 px a side."""
    handle, latent = recorded
    video = torch.rand(1, 1, 1, 3).expand(33, 720, 1280, 3)          # no memory of its own
    grew = peak_growth(lambda: view[1].execute(handle, "", 6, latent=latent, image=video))
    assert grew < 128 * 2 ** 20, f"the View grew the process by {grew / 2 ** 20:.0f} MiB"
