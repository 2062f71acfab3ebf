"""Which models TokenFocus serves, and a clear refusal (naming the variant and why) for the ones it does not.

Variants that share a class with a served family (HunyuanImage 2.1 and HunyuanVideo 1.5 with HunyuanVideo, Flux.2
with Flux.1) are told apart by their parameters; classes that cannot be hooked are refused with the reason.
Each is a tiny random-weight instance of ComfyUI's own class; skipped, saying why, where this ComfyUI lacks it.
"""

import pytest
import torch

import comfy_env
import tiny_models as tm

NODE_SETTINGS = {
    "TokenFocus_AttentionTemperature": dict(gamma=1.35, blocks="all", start_percent=0.0, end_percent=1.0),
    "TokenFocus_TokenSpacing": dict(sigma=1.3, k_mode="auto", fixed_k=8, blocks="all", start_percent=0.0, end_percent=1.0),
    "TokenFocus_ResidualAlignment": dict(strength=1.0, k_mode="auto", fixed_k=8, blocks="all", start_percent=0.0, end_percent=1.0),
    "TokenFocus_AttentionInspector": dict(blocks="all", start_percent=0.0, end_percent=1.0),
}


@pytest.fixture(scope="module")
def registry(comfy):
    import asyncio

    from comfy_env import REPO_ROOT

    assert asyncio.run(comfy.nodes.load_custom_node(str(REPO_ROOT)))
    return comfy.nodes.NODE_CLASS_MAPPINGS


def patcher_around(diffusion_model):
    """A ModelPatcher of ComfyUI's around a bare diffusion model (detection reads only the diffusion model)."""
    env = tm.import_comfyui()
    base = torch.nn.Module()
    base.diffusion_model = diffusion_model
    base.model_sampling = None
    return env.comfy.model_patcher.ModelPatcher(base, load_device=torch.device("cpu"), offload_device=torch.device("cpu"))


def pixart():
    from comfy.ldm.pixart.pixartms import PixArtMS
    import comfy.ops
    return PixArtMS(input_size=8, hidden_size=64, depth=1, num_heads=2, caption_channels=tm.TEXT_DIM,
                    dtype=torch.float32, operations=comfy.ops.disable_weight_init)


def hunyuan_dit():
    from comfy.ldm.hydit.models import HunYuanDiT
    import comfy.ops
    return HunYuanDiT(input_size=(8, 8), hidden_size=64, depth=2, num_heads=2, text_states_dim=tm.TEXT_DIM,
                      text_states_dim_t5=tm.TEXT_DIM, dtype=torch.float32, operations=comfy.ops.disable_weight_init)


REFUSED = {
    "PixArt": (pixart, "cannot act on PixArt: .*copying its forward"),
    "HunyuanDiT": (hunyuan_dit, "cannot act on HunyuanDiT: .*transformer_options"),
}


@pytest.mark.parametrize("variant", list(REFUSED))
@pytest.mark.parametrize("node_id", list(NODE_SETTINGS))
def test_a_known_class_but_unhandled_variant_is_refused_naming_it(comfy, registry, variant, node_id):
    build, message = REFUSED[variant]
    patcher = patcher_around(build())
    with pytest.raises(ValueError, match=message):
        registry[node_id].execute(patcher, **NODE_SETTINGS[node_id])


def test_a_model_no_family_knows_is_refused_naming_what_is_supported(comfy, registry):
    patcher = patcher_around(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="does not support Linear. Supported: Wan .*SD3.*Flux.1.*HunyuanVideo"):
        registry["TokenFocus_AttentionTemperature"].execute(patcher, **NODE_SETTINGS["TokenFocus_AttentionTemperature"])


@pytest.mark.parametrize("family", sorted(tm.FAMILIES))
def test_every_tiny_model_is_served_by_a_family_module(tiny, family):
    from tokenfocus.families import FAMILIES, detect

    adapter = detect(tiny(family).patcher)
    assert adapter.name in {f.name for f in FAMILIES}
    assert adapter.profile.variant and adapter.profile.encoder and adapter.profile.padding_note


def test_chroma_radiance_is_served_as_chroma_and_named_as_itself(tiny):
    from tokenfocus.families import detect

    adapter = detect(tiny("chroma_radiance").patcher)
    assert adapter.name == "Chroma" and adapter.profile.variant == "Chroma Radiance"
    assert (adapter.n_double, adapter.n_single) == (2, 2)


def next_dit(**params):
    from comfy.ldm.lumina.model import NextDiT
    import comfy.ops
    config = {"patch_size": 2, "in_channels": 16, "dim": 64, "cap_feat_dim": tm.TEXT_DIM, "n_layers": 1,
              "n_refiner_layers": 1, "qk_norm": True, "n_heads": 2, "n_kv_heads": 2, "axes_dims": [8, 12, 12],
              "axes_lens": [300, 512, 512], "multiple_of": 32}
    return NextDiT(**{**config, **params}, dtype=torch.float32, operations=comfy.ops.disable_weight_init)


def test_lumina2_is_served_where_comfyui_marks_its_blocks_and_refused_saying_why_where_not(comfy):
    import inspect

    from tokenfocus.families import detect
    from comfy.ldm.lumina.model import NextDiT

    patcher = patcher_around(next_dit())
    if '"block_index"' in inspect.getsource(NextDiT._forward):
        adapter = detect(patcher)
        assert adapter.profile.variant == "Lumina 2 / Neta" and adapter.n_double == 1
    else:
        with pytest.raises(ValueError, match="Lumina 2 is not supported on this ComfyUI: .*mark its blocks"):
            detect(patcher)


def test_z_image_omni_is_refused_naming_it(comfy):
    import inspect

    from tokenfocus.families import detect
    from comfy.ldm.lumina.model import NextDiT

    if "siglip_feat_dim" not in inspect.signature(NextDiT.__init__).parameters:
        comfy_env.host_lacks("Z-Image Omni (NextDiT's siglip_feat_dim)")
    model = next_dit(dim=256, axes_dims=[32, 48, 48], z_image_modulation=True, pad_tokens_multiple=32, siglip_feat_dim=32)
    with pytest.raises(ValueError, match="Z-Image Omni is not supported: .*SigLIP"):
        detect(patcher_around(model))


def test_flux2_is_told_apart_from_flux1_by_its_parameters_and_its_zero_rows_are_padding(tiny):
    from tokenfocus.families import detect

    flux1, flux2 = detect(tiny("flux").patcher), detect(tiny("flux2").patcher)
    assert (flux1.name, flux1.profile.variant) == ("Flux", "Flux.1")
    assert flux2.name == "Flux.2" and flux2.profile.variant == "Flux.2"   # tiny text width: no named variant
    context = torch.cat([torch.zeros(1, 5, 4), torch.ones(1, 3, 4)], dim=1)    # left-padded as ComfyUI does
    assert flux2.inspect_inputs(context, {}).real_mask.tolist() == [[False] * 5 + [True] * 3]
    assert flux1.inspect_inputs(context, {}).real_mask is None


@pytest.mark.parametrize("family, variant", [("hunyuan_video", "HunyuanVideo"), ("hunyuan_video_15", "HunyuanVideo 1.5"),
                                             ("hunyuan_image_21", "HunyuanImage 2.1")])
def test_hunyuan_variants_are_told_apart_by_their_parameters(tiny, family, variant):
    from tokenfocus.families import detect

    adapter = detect(tiny(family).patcher)
    assert adapter.profile.variant == variant
    assert ("ByT5" in adapter.profile.padding_note) == (family != "hunyuan_video")
