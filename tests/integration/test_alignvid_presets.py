"""Attention Temperature's AlignVid presets against the authors' published code, per model (tiny models).

The official code (github LAW1223/AlignVid): Wan2.1 i2v scales the cross-attention query by gamma for the image
branch and the text keys by gamma (the scaled query meets them: gamma^2 on text), in 28 calibrated blocks,
while t > 900, with CFG 1.0 and UniPC bh2; its text-to-video path scales the text keys only; its ablation
windows are t > 900 / 600 < t <= 900 / t <= 600 / all.
"""
import dataclasses

import pytest
import torch

import tiny_models as tm

GAMMA = 1.35
CALIBRATED = "0,2-7,10-20,25-32,37,38"


@pytest.fixture(scope="module")
def node(comfy):
    from tokenfocus.nodes.attention_temperature import AttentionTemperatureNode
    return AttentionTemperatureNode


def run(node, patcher, preset, **settings):
    args = dict(gamma=GAMMA, blocks="all", start_percent=0.0, end_percent=1.0, preset=preset)
    args.update(settings)
    return node.execute(patcher, **args).args


def intervention(patched):
    return patched.model_options["transformer_options"]["tokenfocus"].interventions[0]


def test_official_code_on_wan21_i2v_14b_is_the_papers_main_setting(tiny, node):
    from tokenfocus.core.blocklist import parse_block_list, resolve_blocks

    model = tiny("wan21_i2v_40")
    patched, report = run(node, model.patcher, "AlignVid official code", blocks="1", end_percent=0.1)
    iv = intervention(patched)
    assert iv.factors == {"cross_image": (GAMMA, 1.0), "cross_text": (GAMMA, GAMMA)}
    assert iv.blocks == resolve_blocks(parse_block_list(CALIBRATED), 40, 0, "Wan")
    assert iv.steps.contains(0.91) and not iv.steps.contains(0.9)
    assert "CFG 1" in report and "uni_pc_bh2" in report and "calibrated on Wan2.1-I2V-14B" in report


@pytest.mark.parametrize("family", ["wan_t2v_40", "wan22_i2v_a14b_expert"])
def test_official_code_on_40_block_text_to_video_wan_gives_gamma_on_text_keys_and_no_image_branch(tiny, node, family):
    model = tiny(family)
    patched, report = run(node, model.patcher, "AlignVid official code")
    iv = intervention(patched)
    assert iv.factors == {"cross_text": (1.0, GAMMA)}, "the t2v path: gamma, not gamma squared"
    assert len(iv.blocks) == 40, "the i2v list was calibrated on another model: all blocks, said so"
    assert "no calibration exists" in report and "no image branch" in report
    assert "image (CLIP)" not in report


def test_the_former_official_label_is_mapped(tiny, node):
    model = tiny("wan21_i2v_40")
    patched, report = run(node, model.patcher, "AlignVid official Wan2.1 i2v code")
    assert intervention(patched).factors == {"cross_image": (GAMMA, 1.0), "cross_text": (GAMMA, GAMMA)}
    assert "is now called 'AlignVid official code'" in report


@pytest.mark.parametrize("family", ["wan21_t2v", "wan21_i2v", "flux", "sd3", "hunyuan_video"])
def test_no_published_setting_is_a_clear_error(tiny, node, family):
    with pytest.raises(ValueError, match="No published AlignVid setting"):
        run(node, tiny(family).patcher, "AlignVid official code")


@pytest.mark.parametrize("family, boundary", [("wan_t2v_40", 0.875), ("wan22_i2v_a14b_expert", 0.9)])
def test_wan22_high_noise_expert_only(tiny, node, family, boundary):
    model = tiny(family)
    patched, report = run(node, model.patcher, "AlignVid Wan 2.2: text branch, high-noise expert only")
    iv = intervention(patched)
    assert iv.factors == {"cross_text": (1.0, GAMMA)}
    assert iv.steps.contains(boundary + 0.01) and not iv.steps.contains(boundary)
    assert "high-noise expert" in report
    with pytest.raises(ValueError, match="Wan 2.2 A14B"):
        run(node, tiny("wan21_i2v_40").patcher, "AlignVid Wan 2.2: text branch, high-noise expert only")


@pytest.mark.parametrize("preset, inside, outside", [
    ("AlignVid window: early (sigma > 0.9)", [0.95, 0.901], [0.9, 0.5]),
    ("AlignVid window: mid (0.6 < sigma <= 0.9)", [0.9, 0.7, 0.601], [0.95, 0.6, 0.3]),
    ("AlignVid window: late (sigma <= 0.6)", [0.6, 0.3, 0.01], [0.7, 0.95]),
    ("AlignVid window: all steps", [0.99, 0.5, 0.01], []),
])
def test_the_papers_ablation_windows_are_sigma_thresholds(tiny, node, preset, inside, outside):
    model = tiny("wan21_t2v")
    patched, report = run(node, model.patcher, preset, blocks="0")
    iv = intervention(patched)
    assert all(iv.steps.contains(s) for s in inside) and not any(iv.steps.contains(s) for s in outside)
    assert iv.blocks == {("double_block", 0)} and iv.factors == {"cross_text": (GAMMA, 1.0)}, "the widgets stay the user's"


@pytest.mark.parametrize("sampler_node, gated", [("SamplerCustom", 10), ("KSampler", 11)])
def test_the_official_gate_covers_10_of_40_steps_as_the_bundled_workflow_samples(tiny, node, comfy, sampler_node, gated):
    """The official code samples 40 UniPC-bh2 steps at shift 3 and gates t > 900: 10 steps. The bundled workflow's
    SamplerCustom on a 40-step 'simple' schedule evaluates the model at the same grid (10 gated); a KSampler with
    uni_pc_bh2 computes 41 sigmas and drops the penultimate one, so the model sees sigma 0.903 at step 11."""
    import comfy.patcher_extension as ext
    import comfy.sample
    import comfy.samplers
    from comfy_extras.nodes_model_advanced import ModelSamplingSD3

    model = tiny("wan21_t2v")
    shifted = ModelSamplingSD3().patch(model.patcher, 3.0)[0]
    patched, _ = run(node, shifted, "AlignVid window: early (sigma > 0.9)")
    iv = intervention(patched)
    sigmas = []
    counted = patched.clone()
    counted.add_wrapper_with_key(ext.WrappersMP.APPLY_MODEL, "test-counter",
                                 lambda executor, x, t, *a, **k: sigmas.append(float(t.reshape(-1)[0])) or executor(x, t, *a, **k))
    if sampler_node == "KSampler":
        tm.sample(dataclasses.replace(model, patcher=counted), steps=40, cfg=1.0, sampler="uni_pc_bh2", scheduler="simple")
    else:  # what SamplerCustom + KSamplerSelect + BasicScheduler run
        schedule = comfy.samplers.calculate_sigmas(counted.get_model_object("model_sampling"), "simple", 40)
        latent = model.latent["samples"]
        noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(0))
        comfy.sample.sample_custom(counted, noise, 1.0, comfy.samplers.sampler_object("uni_pc_bh2"), schedule,
                                   model.positive, model.negative, latent, seed=0)
    assert len(sigmas) == 40
    assert sum(iv.steps.contains(s) for s in sigmas) == gated
