"""The harness itself: every tiny family builds and samples through ComfyUI, reproducibly.

Later integration tests compare a patched run with an unpatched one and read any difference as the
pack's effect, which is only sound if a run is bit-reproducible and the metadata describes what the
blocks really receive.
"""
import pytest
import torch

import tiny_models

FAMILIES = sorted(tiny_models.FAMILIES)


@pytest.mark.parametrize("family", FAMILIES)
def test_builds_and_samples(tiny, family):
    model = tiny(family)
    out = tiny_models.sample(model)
    assert out.shape == tiny_models.flat(model.latent["samples"]).shape
    assert torch.isfinite(out).all()
    assert out.abs().max() > 0


@pytest.mark.parametrize("family", FAMILIES)
def test_same_seed_is_bit_identical(tiny, family):
    model = tiny(family)
    assert torch.equal(tiny_models.sample(model, seed=0), tiny_models.sample(model, seed=0))


@pytest.mark.parametrize("family", FAMILIES)
def test_rebuilt_model_is_bit_identical(tiny, family):
    # Seeded weights and conds: two builds are the same model, not just the same shapes.
    assert torch.equal(tiny_models.sample(tiny(family)), tiny_models.sample(tiny_models.build(family)))


@pytest.mark.parametrize("family", FAMILIES)
def test_different_seed_differs(tiny, family):
    model = tiny(family)
    assert not torch.equal(tiny_models.sample(model, seed=0), tiny_models.sample(model, seed=1))


@pytest.mark.parametrize("family", FAMILIES)
def test_metadata_matches_what_the_blocks_see(tiny, family):
    """Block counts, the rows of `txt`, and that cfg > 1 runs both cond (0) and uncond (1)."""
    model = tiny(family)
    calls = []

    def recorder(kind, index):
        def patch(args, extra):
            txt = args.get("txt", args.get("v_context"))     # LTX-2: the video's text
            calls.append((kind, index, None if txt is None else txt.shape[1],
                          tuple(args["transformer_options"]["cond_or_uncond"])))
            return extra["original_block"](args)
        return patch

    if model.block_access == "marked":
        # No block-replace hook: the model marks its blocks and calls patches["double_block"] after each.
        model.patcher.set_model_patch(lambda args: calls.append((
            "double_block", args["block_index"], args["txt"].shape[1],
            tuple(args["transformer_options"]["cond_or_uncond"]))) or {}, "double_block")
    if not model.block_patches_work:
        # Kandinsky 5: neither works; its cross-attention call (keys other than its queries) shows the text rows.
        def override(func, q, k, *args, **kwargs):
            options = kwargs["transformer_options"]
            if options.get("block_index") is not None and k.shape[2] != q.shape[2]:
                calls.append(("double_block", options["block_index"], k.shape[2], tuple(options["cond_or_uncond"])))
            return func(q, k, *args, **kwargs)
        model.patcher.model_options["transformer_options"]["optimized_attention_override"] = override
    for kind, count in (("double_block", model.double_blocks * model.block_patches_work), ("single_block", model.single_blocks)):
        for i in range(count):
            model.patcher.set_model_patch_replace(recorder(kind, i), "dit", kind, i)
    tiny_models.sample(model, steps=1)

    doubles = [c for c in calls if c[0] == "double_block"]
    assert sorted({c[1] for c in doubles}) == list(range(model.double_blocks))
    assert len({c[1] for c in calls if c[0] == "single_block"}) == model.single_blocks
    assert {c for call in calls for c in call[3]} == {0, 1}
    extra_rows = model.txt_layout[-1].stop - model.text_len  # Wan i2v: CLIP image rows before the text
    padded = model.text_tokens_for  # Z-Image and Flux.2 pad the text inside the model, Hunyuan 1.5 adds rows
    if model.pad_text_multiple > 1:
        assert model.pad_text_multiple == model.unet_config["pad_tokens_multiple"]
    for _, _, rows, cond_or_uncond in doubles:
        if cond_or_uncond == (1,):
            assert rows == padded(model.negative_text_len, uncond=True) + extra_rows
        else:  # cond alone, or cond and uncond batched (equal lengths)
            assert rows == padded(model.text_len) + extra_rows


@pytest.mark.parametrize("family", [f for f in FAMILIES if f.startswith("wan")])
def test_wan_context_is_zero_padded(tiny, family):
    model = tiny(family)
    for cond, real in ((model.positive, model.real_tokens), (model.negative, model.negative_real_tokens)):
        nonzero_rows = cond[0][0].abs().sum(-1).ne(0).sum().item()
        assert nonzero_rows == real and cond[0][0].shape[1] == model.text_len == 512


def test_torchvision_stand_in_refuses_to_run(comfy):
    if not comfy.torchvision_stand_in:
        pytest.skip("the real torchvision is installed")
    import torchvision

    assert torchvision.STAND_IN
    with pytest.raises(NotImplementedError, match="stand-in"):
        torchvision.transforms.Normalize(0.5, 0.5)
    with pytest.raises(NotImplementedError, match="stand-in"):
        torchvision.models.efficientnet_v2_s()
