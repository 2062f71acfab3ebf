"""TokenFocus Prompt against ComfyUI's own CLIP Text Encode and samplers.

The CLIPs are real comfy.sd.CLIP objects built from ComfyUI's text-encoder classes, shrunk through their
`<name>_model_config` options and given seeded random weights, so encoding runs ComfyUI's own code end to
end. Stand-in: the umT5 vocabulary is ComfyUI's pile-T5 SentencePiece model (the real one ships inside the
checkpoint), as in test_tokens.py. The Wan CLIP is 64 wide, as the tiny WanModel's text input, so its
conditioning drives a tiny Wan sampled on the CPU.
"""
import dataclasses
import logging
import math
import types
from pathlib import Path

import pytest
import torch

import tiny_models as tm

TINY_T5 = {"num_layers": 1, "d_ff": 8, "num_heads": 1, "d_kv": 8}
TINY_CLIP = {"num_hidden_layers": 3, "hidden_size": 8, "intermediate_size": 8, "num_attention_heads": 1,
             "projection_dim": 8}
WEIGHTED = "a (red:1.5) kite over (snowy mountains:1.3), \\(literal\\)"
PLAIN = "a red kite over snowy mountains, \\(literal\\)"     # the same prompt without its weights
STEPS = 3


def real_clip(clip_class, tokenizer_class, options, tokenizer_data=None, seed=0):
    import comfy.sd

    target = types.SimpleNamespace(params={}, clip=clip_class, tokenizer=tokenizer_class)
    clip = comfy.sd.CLIP(target=target, tokenizer_data=tokenizer_data or {}, model_options=options)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in clip.cond_stage_model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float32).to(p.dtype) * 0.5)
    return clip


@pytest.fixture(scope="module")
def clips(comfy):
    import comfy.text_encoders.flux as flux
    import comfy.text_encoders.sd3_clip as sd3
    import comfy.text_encoders.wan as wan

    spiece = Path(comfy.path) / "comfy" / "text_encoders" / "t5_pile_tokenizer" / "tokenizer.model"
    built = {}

    def get(name):
        if name not in built:
            if name == "wan":
                built[name] = real_clip(wan.te(), wan.WanT5Tokenizer, {"umt5xxl_model_config": {**TINY_T5, "d_model": tm.TEXT_DIM}},
                                        {"spiece_model": spiece.read_bytes()})
            elif name == "flux":
                built[name] = real_clip(flux.flux_clip(), flux.FluxTokenizer,
                                        {"clip_l_model_config": TINY_CLIP, "t5xxl_model_config": {**TINY_T5, "d_model": 64}})
            else:   # SD3 pads CLIP-L/G to 4096 wide and puts the T5 rows after them: T5 keeps d_model 4096
                built[name] = real_clip(sd3.sd3_clip(), sd3.SD3Tokenizer,
                                        {"clip_l_model_config": TINY_CLIP, "clip_g_model_config": TINY_CLIP, "t5xxl_model_config": TINY_T5})
        return built[name]
    return get


@pytest.fixture(scope="module")
def prompt_node(comfy):
    from tokenfocus.nodes.prompt import TokenFocusPromptNode
    return TokenFocusPromptNode


def encode(node, clip, text, density=False):
    return node.execute(clip, text, density).args


def clip_text_encode(comfy, clip, text):
    return comfy.nodes.CLIPTextEncode().encode(clip, text)[0]


def same_conditioning(a, b):
    assert len(a) == len(b)
    for (ta, da), (tb, db) in zip(a, b):
        assert torch.equal(ta, tb)
        pa, pb = da["pooled_output"], db["pooled_output"]
        assert (pa is None and pb is None) or torch.equal(pa, pb)


@pytest.mark.parametrize("name", ["wan", "flux", "sd3"])
def test_conditioning_is_clip_text_encode_of_the_plain_text(comfy, clips, prompt_node, name):
    clip = clips(name)
    conditioning, weights, _ = encode(prompt_node, clip, PLAIN)
    same_conditioning(conditioning, clip_text_encode(comfy, clip, PLAIN))
    assert weights.is_neutral()
    conditioning, weights, tokens = encode(prompt_node, clip, WEIGHTED)
    same_conditioning(conditioning, clip_text_encode(comfy, clip, PLAIN))     # weights leave the embedding alone
    assert conditioning[0][1]["tokenfocus_weights"] == weights and len(weights) == conditioning[0][0].shape[1]
    by_weight = {}
    for label, w, real in zip(weights.labels, weights.weights, weights.real):
        if real:
            by_weight.setdefault(w, []).append(label.replace("▁", "").replace("</w>", ""))
    segments = 2 if name == "sd3" else 1      # SD3: the CLIP-L/G rows, then the T5 rows
    assert sorted(by_weight[1.5]) == ["red"] * segments
    assert "".join(by_weight[1.3]) == "snowymountains" * segments
    assert "literal" in "".join(by_weight[1.0]) and "red" in tokens


def test_plain_parentheses_one_one_and_zero(comfy, clips, prompt_node):
    _, weights, _ = encode(prompt_node, clips("wan"), "a (red) ((kite)) and (no birds:0)")
    real = {label: w for label, w, r in zip(weights.labels, weights.weights, weights.real) if r}
    assert real["▁red"] == pytest.approx(1.1) and real["▁birds"] == 0.0 and real["▁and"] == 1.0
    assert math.isclose(weights.weights[weights.labels.index("ite")], 1.1 * 1.1)


def test_density_on_top(comfy, clips, prompt_node):
    _, plain, _ = encode(prompt_node, clips("wan"), "the (mountains:2), with a sunflower")
    _, dense, _ = encode(prompt_node, clips("wan"), "the (mountains:2), with a sunflower", density=True)
    row = plain.labels.index("▁mountains")
    assert plain.weights[row] == 2.0 and dense.weights[row] > 2.0
    assert dense.weights[plain.labels.index("▁the")] < 1.0


@pytest.mark.parametrize("text, message", [
    ("a (red kite", "never closed"), ("a red) kite", "closes nothing"), ("(red:big)", "not a number"),
    ("(red:-2)", "≥ 0"), ("(red:inf)", "≥ 0"),
])
def test_bad_syntax_is_refused_at_queue_time(comfy, clips, prompt_node, text, message):
    assert message in prompt_node.validate_inputs(text=text)
    assert prompt_node.validate_inputs(text=WEIGHTED) is True
    assert prompt_node.validate_inputs() is True          # text linked from another node: checked when it runs
    with pytest.raises(ValueError, match=message):
        encode(prompt_node, clips("wan"), text)


# ------------------------------------------------------------------------------ sampling a tiny Wan


@pytest.fixture(scope="module")
def dare(comfy):
    from tokenfocus.nodes.dare import ImportanceGuidanceNode, TokenReweightNode
    return TokenReweightNode, ImportanceGuidanceNode


def sample(model, patcher, positive, negative, **kw):
    return tm.sample(dataclasses.replace(model, patcher=patcher), positive=positive, negative=negative, steps=STEPS, **kw)


@pytest.fixture(scope="module")
def wan_prompts(comfy, clips, prompt_node):
    clip = clips("wan")
    return types.SimpleNamespace(
        weighted=encode(prompt_node, clip, "a (red:3) kite over snowy mountains"),
        other=encode(prompt_node, clip, "a blue boat on a (calm:0.2) lake"),      # same 512 rows
        plain=encode(prompt_node, clip, "a red kite over snowy mountains"),
        negative=clip_text_encode(comfy, clip, "blurry"),
    )


def test_reweighting_reads_the_weights_from_the_conditioning(tiny, dare, wan_prompts):
    model = tiny("wan21_t2v")
    p = wan_prompts
    base = sample(model, model.patcher, p.weighted[0], p.negative)
    unconnected = dare[0].execute(model.patcher, None, strength=1.0).args[0]
    from_conditioning = sample(model, unconnected, p.weighted[0], p.negative)
    assert not torch.equal(from_conditioning, base)
    connected = dare[0].execute(model.patcher, p.weighted[1], strength=1.0).args[0]
    assert torch.equal(sample(model, connected, p.weighted[0], p.negative), from_conditioning)
    # A prompt without weights: nothing to reweight, bit-identical.
    plain_base = sample(model, model.patcher, p.plain[0], p.negative)
    assert torch.equal(sample(model, unconnected, p.plain[0], p.negative), plain_base)


def test_weights_of_another_prompt_of_the_same_length_fail_before_the_first_step(comfy, tiny, dare, wan_prompts):
    model = tiny("wan21_t2v")
    p = wan_prompts
    connected = dare[0].execute(model.patcher, p.weighted[1]).args[0]
    with pytest.raises(ValueError, match="made for another conditioning"):
        sample(model, counting(connected), p.other[0], p.negative)
    # A node that changes the rows but keeps the dict (ConditioningAverage): the carried weights no longer fit.
    averaged = comfy.nodes.ConditioningAverage().addWeighted(p.weighted[0], p.other[0], 0.5)[0]
    unconnected = dare[0].execute(model.patcher, None).args[0]
    with pytest.raises(ValueError, match="made for another conditioning"):
        sample(model, counting(unconnected), averaged, p.negative)


def counting(patcher):
    """The patcher, failing the test if the model runs at all (the error must come first)."""
    import comfy.patcher_extension as ext

    watched = patcher.clone()

    def wrapper(executor, *args, **kwargs):
        raise AssertionError("the model ran before the error")

    watched.add_wrapper_with_key(ext.WrappersMP.APPLY_MODEL, "test-no-step", wrapper)
    return watched


def text_key_biases(model, patcher, positive, negative):
    """Every distinct per-sample key bias the text cross-attention received (from the folded k), whole rows."""
    seen = set()
    previous = patcher.model_options.get("transformer_options", {}).get("optimized_attention_override")
    recording = patcher.clone()

    head_dim = model.unet_config["dim"] // model.unet_config["num_heads"]

    def override(func, *args, **kwargs):
        k, heads = args[1], kwargs["heads"]
        if k.shape[-1] // heads == head_dim + 8:      # a call with the key bias folded in
            bias = k.view(k.shape[0], k.shape[1], heads, head_dim + 8)[:, :, 0, head_dim] / (head_dim + 8) ** 0.5
            for row in bias:
                seen.add(tuple(round(float(x), 4) for x in row))
        return func(*args, **kwargs) if previous is None else previous(func, *args, **kwargs)

    recording.model_options.setdefault("transformer_options", {})["optimized_attention_override"] = override
    return recording, seen


def test_combined_prompts_keep_their_own_weights(comfy, tiny, dare, wan_prompts):
    model = tiny("wan21_t2v")
    p = wan_prompts
    combined = comfy.nodes.ConditioningCombine().combine(p.weighted[0], p.other[0])[0]
    recording, seen = text_key_biases(model, model.patcher, combined, p.negative)
    patched = dare[0].execute(recording, None).args[0]
    sample(model, patched, combined, p.negative)
    expected = {log_bias(p.weighted[1].weights), log_bias(p.other[1].weights)}
    assert expected <= seen, (expected, seen)


def log_bias(weights):
    return tuple(round(math.log(max(w, math.exp(-20))), 4) for w in weights)


def test_concatenated_prompts_keep_the_first_prompts_weights_and_say_the_rest_are_unweighted(
        comfy, tiny, dare, wan_prompts, caplog):
    """ConditioningConcat keeps only the first prompt's dict: its weights stay on the leading rows, the
    appended rows are left unweighted, and the log says so (the ComfyUI node, on the tiny Wan)."""
    model = tiny("wan21_t2v")
    p = wan_prompts
    concat = comfy.nodes.ConditioningConcat().concat(p.weighted[0], p.other[0])[0]
    assert concat[0][0].shape[1] == 2 * len(p.weighted[1])
    recording, seen = text_key_biases(model, model.patcher, concat, p.negative)
    patched = dare[0].execute(recording, None).args[0]
    with caplog.at_level(logging.WARNING):
        out = sample(model, patched, concat, p.negative)
    assert log_bias(p.weighted[1].weights) + (0.0,) * len(p.other[1]) in seen, seen
    assert "ConditioningConcat keeps only the first prompt's weights" in caplog.text
    # The same through the weights connected to the node.
    connected = dare[0].execute(model.patcher, p.weighted[1]).args[0]
    assert torch.equal(sample(model, connected, concat, p.negative), out)


def test_conditioning_nodes_users_chain_keep_each_prompts_weights(comfy, tiny, dare, wan_prompts):
    """SetArea, SetMask and SetTimestepRange keep the rows and the dict: the weights stay on the prompt; a
    zeroed-out prompt as the negative is left alone, and as the positive its weights no longer fit (error)."""
    model = tiny("wan21_t2v")
    p = wan_prompts
    nodes = comfy.nodes
    mask = torch.zeros(1, 64, 64)
    mask[:, :, :32] = 1.0
    chained = {
        "area": nodes.ConditioningSetArea().append(p.weighted[0], 32, 64, 0, 0, 1.0)[0],
        "mask": nodes.ConditioningSetMask().append(p.weighted[0], mask, "default", 1.0)[0],
        "range": nodes.ConditioningSetTimestepRange().set_range(p.weighted[0], 0.0, 0.5)[0],
    }
    for name, positive in chained.items():
        # The whole prompt where the node keeps only part of it: the other prompt covers the rest.
        positive = nodes.ConditioningCombine().combine(positive, p.other[0])[0]
        recording, seen = text_key_biases(model, model.patcher, positive, p.negative)
        sample(model, dare[0].execute(recording, None).args[0], positive, p.negative)
        assert log_bias(p.weighted[1].weights) in seen, name
    zeroed = nodes.ConditioningZeroOut().zero_out(p.weighted[0])[0]
    unconnected = dare[0].execute(model.patcher, None).args[0]
    base = sample(model, model.patcher, p.other[0], zeroed)
    assert not torch.equal(sample(model, unconnected, p.other[0], zeroed), base)
    with pytest.raises(ValueError, match="made for another conditioning"):
        sample(model, counting(unconnected), zeroed, p.negative)


def test_token_importance_weights_must_belong_to_the_prompt_they_meet(comfy, clips, tiny, dare, wan_prompts):
    """Token Importance's weights next to CLIP Text Encode of the same text work (also in another precision);
    with another prompt of the same length they are an error before the first step, in every node."""
    from tokenfocus.nodes.dare import TokenImportanceNode
    from tokenfocus.nodes.tora import ResidualAlignmentNode, TokenSpacingNode

    model = tiny("wan21_t2v")
    clip, p = clips("wan"), wan_prompts
    text = "a red kite over snowy mountains"
    positive = clip_text_encode(comfy, clip, text)
    other = clip_text_encode(comfy, clip, "a blue boat on a calm lake")       # the same 512 rows
    weights = TokenImportanceNode.execute(clip, text, "kite:3", False).args[0]
    reweight = dare[0].execute(model.patcher, weights).args[0]
    base = sample(model, model.patcher, positive, p.negative)
    weighted = sample(model, reweight, positive, p.negative)
    assert not torch.equal(weighted, base)
    rounded = [[positive[0][0].to(torch.bfloat16).float(), positive[0][1]]]     # encoded in lower precision
    assert not torch.equal(sample(model, reweight, rounded, p.negative), base)
    tora = dict(k_mode="fixed", fixed_k=2, blocks="all", start_percent=0.0, end_percent=1.0, token_weights=weights)
    patched = {
        "Token Reweighting": reweight,
        "Importance Guidance": dare[1].execute(model.patcher, weights, scale=1.0, start_percent=0.0, end_percent=1.0).args[0],
        "Token Spacing": TokenSpacingNode.execute(model.patcher, sigma=1.3, **tora).args[0],
        "Residual Alignment": ResidualAlignmentNode.execute(model.patcher, strength=1.0, **tora).args[0],
    }
    for label, patcher in patched.items():
        with pytest.raises(ValueError, match=f"{label}: the token weights were made for another prompt"):
            sample(model, counting(patcher), other, p.negative)


def test_importance_guidance_from_the_conditioning(tiny, dare, wan_prompts):
    model = tiny("wan21_t2v")
    p = wan_prompts
    base = sample(model, model.patcher, p.weighted[0], p.negative)
    guided = dare[1].execute(model.patcher, None, scale=1.5, start_percent=0.0, end_percent=1.0).args[0]
    assert not torch.equal(sample(model, guided, p.weighted[0], p.negative), base)
    with pytest.raises(ValueError, match="nothing to suppress"):
        sample(model, counting(guided), p.plain[0], p.negative)
