"""Wan 2.2 A14B as ComfyUI runs it: two expert models, the high-noise one for the first steps and the low-noise one
for the rest (two KSamplerAdvanced nodes), each patched by its own TokenFocus node (tiny 40-block experts)."""
import pytest
import torch

import tiny_models as tm

STEPS = 8
HIGH_NOISE_ONLY = "AlignVid Wan 2.2: text branch, high-noise expert only"


@pytest.fixture(scope="module")
def experts(comfy):
    high, low = tm.build("wan_t2v_40", seed=0), tm.build("wan_t2v_40", seed=1)
    return high, low


def split_step(model, boundary):
    """The first step the low-noise expert takes: where the schedule falls to the boundary (as the templates do)."""
    import comfy.samplers

    sigmas = comfy.samplers.calculate_sigmas(model.patcher.get_model_object("model_sampling"), "simple", STEPS)
    return next(i for i, s in enumerate(sigmas.tolist()) if s <= boundary)


def two_expert_sample(high, low, high_patcher=None, low_patcher=None, cfg=3.0):
    env = tm.import_comfyui()
    switch = split_step(high, 0.875)
    common = dict(seed=0, steps=STEPS, cfg=cfg, sampler_name="euler", scheduler="simple",
                  positive=high.positive, negative=high.negative)
    (first,) = env.nodes.common_ksampler(high_patcher or high.patcher, latent=high.latent, start_step=0, last_step=switch,
                                         force_full_denoise=False, **common)
    (out,) = env.nodes.common_ksampler(low_patcher or low.patcher, latent=first, start_step=switch, last_step=STEPS,
                                       disable_noise=True, force_full_denoise=True, **common)
    return out["samples"]


def temperature(patcher, preset, **kw):
    from tokenfocus.nodes.attention_temperature import AttentionTemperatureNode

    args = dict(gamma=1.35, blocks="all", start_percent=0.0, end_percent=1.0, preset=preset)
    args.update(kw)
    return AttentionTemperatureNode.execute(patcher, **args).args


def test_the_high_noise_preset_acts_in_the_high_noise_expert_only(experts):
    high, low = experts
    base = two_expert_sample(high, low)
    assert 0 < split_step(high, 0.875) < STEPS, "both experts take steps"
    high_patched, report = temperature(high.patcher, HIGH_NOISE_ONLY)
    low_patched, _ = temperature(low.patcher, HIGH_NOISE_ONLY)
    out = two_expert_sample(high, low, high_patched, low_patched)
    assert not torch.equal(out, base)
    assert torch.equal(two_expert_sample(high, low, high_patched, low.patcher), out), \
        "patched or not, the low-noise expert's steps are below the boundary: it changes nothing there"
    assert torch.equal(two_expert_sample(high, low, high_patched, low_patched), out), "the same graph twice"
    assert torch.equal(two_expert_sample(high, low), base), "the input experts are untouched"


def test_a_node_on_each_expert_acts_where_each_experts_steps_fall(experts):
    high, low = experts
    base = two_expert_sample(high, low)
    late_only = temperature(low.patcher, "custom", start_percent=0.6, end_percent=1.0)[0]
    assert not torch.equal(two_expert_sample(high, low, None, late_only), base)
    neutral_high = temperature(high.patcher, "custom", start_percent=0.6, end_percent=1.0)[0]
    assert torch.equal(two_expert_sample(high, low, neutral_high, None), base), \
        "a step range the high-noise expert never reaches leaves it bit-identical"


@pytest.fixture(scope="module")
def shallow_experts(comfy):
    # The two-expert graph with 3-block experts: what the nodes do across the hand-over does not depend on the
    # depth (only the presets above do), and 40-block experts cost seconds per graph on a CPU.
    return tm.build("wan21_t2v", seed=0), tm.build("wan21_t2v", seed=1)


@pytest.mark.parametrize("node", ["spacing", "alignment", "reweighting", "guidance", "inspector"])
def test_every_node_on_both_experts_acts_and_its_neutral_settings_are_bit_identical(shallow_experts, node):
    from test_wan_variants import apply, node_classes

    nodes = node_classes()
    experts = high, low = shallow_experts
    base = two_expert_sample(high, low)
    neutral = [apply(nodes, node, m, m.patcher, neutral=True)[0] for m in experts]
    assert torch.equal(two_expert_sample(high, low, *neutral), base), "neutral settings on both experts"
    (high_patched, high_handle), (low_patched, low_handle) = [apply(nodes, node, m, m.patcher) for m in experts]
    out = two_expert_sample(high, low, high_patched, low_patched)
    if node == "inspector":
        assert torch.equal(out, base), "the Inspector changes nothing"
        assert high_handle.snapshot().records and low_handle.snapshot().records, "each expert's steps are recorded"
    else:
        assert not torch.equal(out, base)
        assert not torch.equal(two_expert_sample(high, low, high_patched, None), out), "the low-noise expert's node acts"
    assert torch.equal(two_expert_sample(high, low, high_patched, low_patched), out), "the same graph twice"
    assert torch.equal(two_expert_sample(high, low), base), "the input experts are untouched"
