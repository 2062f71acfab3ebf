"""TokenFocus next to the nodes users put in the same graph: attention overrides that do not chain, caches,
ModelSampling nodes, every guider ComfyUI ships, denoise below 1. The README's composition table is this file.

Real ComfyUI nodes where they run on the CPU; where a pack cannot be installed here, a stand-in from
foreign_packs.py that does to the model what the pack does.
"""
import dataclasses
import logging

import pytest
import torch

import tiny_models as tm
from foreign_packs import CountingKernel, Kernel, attention_backend_lambda, kjnodes_style_sage, teacache_style_forward
from recorders import AttentionRecorder, scaled_by
from test_dare import weights_for

STEPS = 4
GAMMA = 1.35
FOREIGN_OVERRIDES = {"kjnodes_style_sage": kjnodes_style_sage, "attention_backend_lambda": attention_backend_lambda}


@pytest.fixture(scope="module")
def nodes(comfy):
    from tokenfocus.nodes.attention_temperature import AttentionTemperatureNode
    from tokenfocus.nodes.dare import ImportanceGuidanceNode, TokenReweightNode
    from tokenfocus.nodes.inspector import AttentionInspectorNode
    from tokenfocus.nodes.tora import ResidualAlignmentNode
    return dict(temperature=AttentionTemperatureNode, reweight=TokenReweightNode, guidance=ImportanceGuidanceNode,
                alignment=ResidualAlignmentNode, inspector=AttentionInspectorNode)


def weights(nodes, model, rows=(1, 3)):
    import test_dare

    w = weights_for(model, None)
    values = tuple(3.0 if i in rows else 1.0 for i in range(len(w.weights)))
    return dataclasses.replace(w, weights=values) if rows != test_dare.WEIGHTED_ROWS else w


def temperature(nodes, patcher, **kw):
    args = dict(gamma=GAMMA, blocks="all", start_percent=0.0, end_percent=1.0)
    args.update(kw)
    return nodes["temperature"].execute(patcher, **args).args[0]


def reweight(nodes, model, patcher, **kw):
    args = dict(strength=1.0, blocks="all", start_percent=0.0, end_percent=1.0)
    args.update(kw)
    return nodes["reweight"].execute(patcher, weights(nodes, model), **args).args[0]


def guidance(nodes, model, patcher, rows=(1, 3), scale=1.5, **kw):
    args = dict(scale=scale, start_percent=0.0, end_percent=1.0)
    args.update(kw)
    return nodes["guidance"].execute(patcher, weights(nodes, model, rows), **args).args[0]


def sample_with(model, patcher, **kw):
    kw.setdefault("steps", STEPS)
    return tm.sample(dataclasses.replace(model, patcher=patcher), **kw)


def warnings_in(caplog):
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and r.name == "TokenFocus"]


def infos_in(caplog):
    return [r.getMessage() for r in caplog.records if r.levelno == logging.INFO and r.name == "TokenFocus"]


# ------------------------------------------------------------------------ attention overrides that do not chain

NODES_UNDER_A_FOREIGN_OVERRIDE = {
    "temperature": lambda nodes, model, p: temperature(nodes, p),
    "reweight": lambda nodes, model, p: reweight(nodes, model, p),
    "guidance": lambda nodes, model, p: guidance(nodes, model, p),
}


@pytest.mark.parametrize("foreign", list(FOREIGN_OVERRIDES))
@pytest.mark.parametrize("node", list(NODES_UNDER_A_FOREIGN_OVERRIDE))
@pytest.mark.parametrize("family", ["wan21_t2v", "flux", "ltx2"])
def test_an_override_that_drops_what_was_there_keeps_tokenfocus_acting_in_both_orders(tiny, nodes, family, node, foreign):
    model = tiny(family)
    add_node, add_foreign = NODES_UNDER_A_FOREIGN_OVERRIDE[node], FOREIGN_OVERRIDES[foreign]
    foreign_only = sample_with(model, add_foreign(model.patcher, CountingKernel()))
    kernels = CountingKernel(), CountingKernel()
    foreign_after = sample_with(model, add_foreign(add_node(nodes, model, model.patcher), kernels[0]))
    foreign_before = sample_with(model, add_node(nodes, model, add_foreign(model.patcher, kernels[1])))
    assert kernels[0].calls and kernels[1].calls, "the foreign override still runs"
    assert torch.equal(foreign_after, foreign_before), "both node orders give the same output"
    assert (foreign_after - foreign_only).abs().max() > 1e-3, "TokenFocus still acts"


class ChainingOverride:
    """A pack's override that keeps the one it found and calls it (what a well-behaved pack does)."""

    def __init__(self, patcher):
        self.patched = patcher.clone()
        options = self.patched.model_options["transformer_options"]
        self.previous, self.queries = options.get("optimized_attention_override"), []
        options["optimized_attention_override"] = self

    def __call__(self, func, *args, **kwargs):
        self.queries.append(args[0].detach().clone())
        return self.previous(func, *args, **kwargs) if self.previous is not None else func(*args, **kwargs)


def test_an_override_that_chains_is_left_outside_tokenfocus(tiny, nodes):
    model = tiny("sd3")
    plain = ChainingOverride(model.patcher)
    sample_with(model, plain.patched)
    chained = ChainingOverride(temperature(nodes, model.patcher))
    out = sample_with(model, chained.patched)
    # It still sees the q ComfyUI made (TokenFocus edits inside it, as installed), and TokenFocus acts. The
    # first call is the one both runs share (later ones follow the changed sampling).
    assert len(chained.queries) == len(plain.queries)
    assert torch.equal(chained.queries[0], plain.queries[0])
    assert not torch.equal(out, sample_with(model, model.patcher))


@pytest.mark.parametrize("foreign", list(FOREIGN_OVERRIDES))
def test_the_inspector_records_under_an_override_placed_after_it(tiny, nodes, foreign):
    model = tiny("sd3")
    patched, handle, _ = nodes["inspector"].execute(model.patcher, blocks="all", start_percent=0.0, end_percent=1.0,
                                                    queries=16, heatmaps=False, prompt="positive").args
    out = sample_with(model, FOREIGN_OVERRIDES[foreign](patched, CountingKernel()))
    assert len(handle.snapshot().records) == model.double_blocks * STEPS
    assert torch.equal(out, sample_with(model, FOREIGN_OVERRIDES[foreign](model.patcher, CountingKernel())))


def test_attributes_comfyui_reads_from_the_override_are_carried_over(tiny, nodes):
    model = tiny("wan21_t2v")
    # TokenFocus after the backend node: it wraps the lambda and says what the lambda says.
    wrapped = temperature(nodes, attention_backend_lambda(model.patcher, CountingKernel()))
    assert wrapped.model_options["transformer_options"]["optimized_attention_override"].memory_efficient is True
    # TokenFocus before it: the override each attention call really goes through carries it too.
    seen = []

    def block_patch(args, extra):
        seen.append(args["transformer_options"]["optimized_attention_override"])
        return extra["original_block"](args)

    watched = model.patcher.clone()
    watched.set_model_patch_replace(block_patch, "dit", "double_block", 0)
    sample_with(model, attention_backend_lambda(temperature(nodes, watched), CountingKernel()))
    assert seen and all(getattr(o, "memory_efficient", None) is True for o in seen)
    assert len({id(o) for o in seen}) == 1, "one wrapper for the whole run (no per-step object)"


def test_a_foreign_override_after_tokenfocus_compiles_once_per_run(tiny, nodes):
    from test_compile import sample_compiled

    model = tiny("wan21_t2v")
    foreign_only, both = [], []
    sample_compiled(model, attention_backend_lambda(model.patcher, Kernel()), foreign_only)
    out = sample_compiled(model, attention_backend_lambda(temperature(nodes, model.patcher), Kernel()), both)
    assert foreign_only == both == [1]
    assert not torch.equal(out, sample_with(model, attention_backend_lambda(model.patcher, Kernel())))


# ------------------------------------------------------------------------------------------ the report

def test_the_log_counts_the_attention_calls_edited(tiny, nodes, caplog):
    model = tiny("wan21_t2v")
    with caplog.at_level(logging.INFO, logger="TokenFocus"):
        sample_with(model, temperature(nodes, model.patcher, blocks="0"))
    # Cond and uncond run batched: one text cross-attention call in block 0 per step.
    assert any("Attention Temperature acted on blocks 0 at 4 sigma(s)" in m and "(4 edits" in m for m in infos_in(caplog))


def test_an_override_placed_after_tokenfocus_is_reported_as_acting_only_because_it_does(tiny, nodes, caplog):
    model = tiny("flux")
    patched = attention_backend_lambda(temperature(nodes, model.patcher, blocks="0"), CountingKernel())
    with caplog.at_level(logging.INFO, logger="TokenFocus"):
        out = sample_with(model, patched)
    assert any("Attention Temperature acted on blocks 0" in m for m in infos_in(caplog))
    assert not torch.equal(out, sample_with(model, attention_backend_lambda(model.patcher, CountingKernel())))


def test_alignment_without_an_uncond_pass_is_not_reported_as_acting(tiny, nodes, caplog):
    model = tiny("sd3")
    patched = nodes["alignment"].execute(model.patcher, strength=1.0, k_mode="auto", fixed_k=2, blocks="all",
                                         start_percent=0.0, end_percent=1.0).args[0]
    with caplog.at_level(logging.INFO, logger="TokenFocus"):
        sample_with(model, patched, cfg=1.0)
    assert not any("Residual Alignment acted" in m for m in infos_in(caplog))
    said = [m for m in warnings_in(caplog) if "Residual Alignment" in m]
    assert len(said) == 1 and "changed nothing" in said[0] and "no uncond pass" in said[0]


def test_denoise_below_the_range_says_no_step_is_reached(tiny, nodes, caplog):
    model = tiny("wan21_t2v")
    patched = temperature(nodes, model.patcher, end_percent=0.3)
    with caplog.at_level(logging.WARNING, logger="TokenFocus"):
        out = sample_with(model, patched, denoise=0.5)
    assert torch.equal(out, sample_with(model, model.patcher, denoise=0.5))
    said = warnings_in(caplog)
    assert len(said) == 1 and "Attention Temperature changed nothing" in said[0]
    assert "no step of this run is inside its range" in said[0]


@pytest.mark.parametrize("cache_node", ["LazyCacheNode", "EasyCacheNode"])
def test_a_cache_that_skips_every_step_in_range_is_named(tiny, nodes, caplog, cache_node):
    import comfy_extras.nodes_easycache as caches

    from tokenfocus.core.schedule import percent_for_sigma

    model = tiny("wan21_t2v")
    node = getattr(caches, cache_node)
    cache = lambda p: node.execute(p, reuse_threshold=3.0, start_percent=0.0, end_percent=1.0, verbose=False).args[0]
    # Steps these caches skip on this model at 8 steps: LazyCache all from the third, EasyCache sigma 0.96 and 0.93.
    to_sigma = model.patcher.get_model_object("model_sampling").percent_to_sigma
    start, end = percent_for_sigma(0.97, to_sigma), percent_for_sigma(0.91, to_sigma)
    patched = cache(temperature(nodes, model.patcher, start_percent=start, end_percent=end))
    with caplog.at_level(logging.WARNING, logger="TokenFocus"):
        out = sample_with(model, patched, steps=8)
    assert torch.equal(out, sample_with(model, cache(model.patcher), steps=8)), "the cache skipped those steps"
    said = [m for m in warnings_in(caplog) if "Attention Temperature" in m]
    assert len(said) == 1 and "changed nothing" in said[0] and "cached" in said[0]


def test_a_teacache_style_forward_replacement_is_named(tiny, nodes, caplog):
    model = tiny("flux")
    patched = teacache_style_forward(temperature(nodes, model.patcher, blocks="0"))
    with caplog.at_level(logging.WARNING, logger="TokenFocus"):
        out = sample_with(model, patched)
    assert torch.equal(out, sample_with(model, model.patcher)), "the stand-in runs the same model"
    said = warnings_in(caplog)
    assert len(said) == 1 and "Attention Temperature changed nothing" in said[0] and "forward" in said[0]


# ------------------------------------------------------------------------------- step ranges at run time

def test_a_model_sampling_node_after_tokenfocus_moves_the_range_with_it(tiny, nodes):
    from comfy_extras.nodes_model_advanced import ModelSamplingSD3

    model = tiny("sd3")
    recorder = AttentionRecorder(model.double_blocks)
    patched = temperature(nodes, recorder.before(model.patcher), blocks="0", end_percent=0.5)
    (shifted,) = ModelSamplingSD3().patch(recorder.after(patched), shift=6.0)
    sample_with(model, shifted, steps=8)
    old_end = float(model.patcher.get_model_object("model_sampling").percent_to_sigma(0.5))
    new_end = float(shifted.get_model_object("model_sampling").percent_to_sigma(0.5))
    calls = [(o, i) for o, i in recorder.pairs() if o.block == ("double_block", 0)]
    assert any(old_end < o.sigma <= new_end for o, _ in calls), "a step between the two conversions"
    for outer, inner in calls:
        if outer.sigma > new_end:
            assert scaled_by(outer.q, inner.q, GAMMA), outer.sigma
        else:
            assert torch.equal(outer.q, inner.q), outer.sigma


# ---------------------------------------------------------------------------------- which prompt is which

class PromptsSeen:
    """Which cond uuid each batch chunk is (from the guider, as ComfyUI's own wrappers read it) and whether the
    backend got a key bias (Token Reweighting's folded head dimension) for that chunk."""

    def __init__(self, head_dim: int):
        self.head_dim = head_dim
        self.keys = {}          # uuid -> the guider's conds key
        self.biased = {}        # uuid -> set of bool

    def install(self, patcher):
        import comfy.patcher_extension as ext

        watched = patcher.clone()

        def outer_sample(executor, *args, **kwargs):
            for key, conds in executor.class_obj.conds.items():
                for c in conds:
                    self.keys[c["uuid"]] = key
            return executor(*args, **kwargs)

        def override(func, *args, **kwargs):
            q, heads = args[0], kwargs.get("heads", args[3] if len(args) > 3 else None)
            uuids = kwargs["transformer_options"].get("uuids") or []
            width = q.shape[-1] // heads
            if uuids and width == self.head_dim + 8:
                flags = q.view(q.shape[0], q.shape[1], heads, width)[..., self.head_dim].abs().flatten(1).sum(1) > 0
                per = q.shape[0] // len(uuids)
                for i, u in enumerate(uuids):
                    self.biased.setdefault(u, set()).add(bool(flags[i * per:(i + 1) * per].any()))
            return func(*args, **kwargs)

        watched.add_wrapper_with_key(ext.WrappersMP.OUTER_SAMPLE, "test-prompts-seen", outer_sample)
        watched.model_options["transformer_options"]["optimized_attention_override"] = override
        return watched

    def check_only_the_positive_is_weighted(self):
        assert any(True in flags for u, flags in self.biased.items() if self.keys.get(u) == "positive")
        for u, flags in self.biased.items():
            which = self.keys.get(u, "a conditioning outside the guider (PerpNeg's empty prompt)")
            assert (True in flags) == (which == "positive"), which


def other_prompt(model):
    context, extras = model.negative[0]
    return [[context.flip(1), dict(extras)]]


def run_guider(model, make_guider, patcher, steps=STEPS):
    import comfy.sample
    import comfy.samplers

    guider = make_guider(patcher)
    latent = model.latent["samples"]
    sigmas = comfy.samplers.calculate_sigmas(patcher.get_model_object("model_sampling"), "simple", steps)
    return guider.sample(comfy.sample.prepare_noise(latent, 0), latent, comfy.samplers.sampler_object("euler"),
                         sigmas, seed=0)


def guider_cases(model):
    import comfy.samplers
    from comfy_extras.nodes_custom_sampler import Guider_Basic, Guider_DualCFG
    from comfy_extras.nodes_perpneg import Guider_PerpNeg, PerpNeg

    def cfg(p):
        g = comfy.samplers.CFGGuider(p)
        g.set_conds(model.positive, model.negative)
        g.set_cfg(4.0)
        return g

    def dual_cfg(p):
        g = Guider_DualCFG(p)
        g.set_conds(model.positive, other_prompt(model), model.negative)
        g.set_cfg(4.0, 2.0)
        return g

    def perpneg_guider(p):
        g = Guider_PerpNeg(p)
        g.set_conds(model.positive, model.negative, other_prompt(model))
        g.set_cfg(4.0, 1.0)
        return g

    def basic(p):
        g = Guider_Basic(p)
        g.set_conds(model.positive)
        return g

    def perpneg_node(p):
        return cfg(PerpNeg.execute(p, other_prompt(model), 1.0).args[0])

    return dict(cfg=cfg, dual_cfg=dual_cfg, perpneg_guider=perpneg_guider, basic=basic, perpneg_node=perpneg_node)


@pytest.mark.parametrize("guider", ["cfg", "dual_cfg", "perpneg_guider", "basic", "perpneg_node", "skip_layer_guidance"])
def test_token_weights_go_to_the_positive_prompt_only(tiny, nodes, guider):
    model = tiny("wan21_t2v")
    seen = PromptsSeen(head_dim=32)
    patched = reweight(nodes, model, seen.install(model.patcher))
    if guider == "skip_layer_guidance":
        from comfy_extras.nodes_slg import SkipLayerGuidanceDiT

        patched = SkipLayerGuidanceDiT.execute(patched, scale=3.0, start_percent=0.0, end_percent=1.0,
                                               double_layers="1", single_layers="").args[0]
        guider = "cfg"
    out = run_guider(model, guider_cases(model)[guider], patched)
    assert torch.isfinite(out).all()
    seen.check_only_the_positive_is_weighted()


def test_alignment_rotates_the_positive_prompt_only_under_dual_cfg(tiny, nodes):
    from recorders import BlockInputRecorder

    model = tiny("sd3")
    recorder = BlockInputRecorder([("double_block", 0)])
    patched = nodes["alignment"].execute(recorder.before(model.patcher), strength=1.0, k_mode="auto", fixed_k=2,
                                         blocks="0", start_percent=0.0, end_percent=1.0).args[0]
    seen = PromptsSeen(head_dim=64)
    run_guider(model, guider_cases(model)["dual_cfg"], seen.install(recorder.after(patched)))
    positive_chunk = 2          # Guider_DualCFG batches [negative, middle, positive]
    for block, sigma, chunks, before, after in recorder.pairs():
        per = before.shape[0] // len(chunks)
        for i, index in enumerate(chunks):
            same = torch.equal(before[i * per:(i + 1) * per], after[i * per:(i + 1) * per])
            assert same == (index != positive_chunk), (chunks, index)


# ------------------------------------------------------------------------------ Importance Guidance's pass

@pytest.mark.parametrize("order", ["guidance_then_cache", "cache_then_guidance"])
def test_importance_guidance_pass_stays_out_of_easycache(tiny, nodes, order):
    from comfy_extras.nodes_easycache import EasyCacheNode

    model = tiny("wan21_t2v")
    cache = lambda p: EasyCacheNode.execute(p, reuse_threshold=3.0, start_percent=0.0, end_percent=1.0, verbose=False).args[0]
    tiny_scale = lambda p: guidance(nodes, model, p, scale=1e-4)
    cached = sample_with(model, cache(model.patcher), steps=8)
    assert not torch.equal(cached, sample_with(model, model.patcher, steps=8)), "EasyCache skipped steps"
    both = cache(tiny_scale(model.patcher)) if order == "guidance_then_cache" else tiny_scale(cache(model.patcher))
    # A guidance scale of 1e-4 moves the result by about 1e-4 of the difference it guides along, no more.
    assert (sample_with(model, both, steps=8) - cached).abs().max() < 1e-2


def test_two_importance_guidance_nodes_each_suppress_their_own_tokens(tiny, nodes):
    model = tiny("wan21_t2v")
    suppressed = []
    head_dim, heads = 32, 2

    def override(func, *args, **kwargs):
        k = args[1]
        width = k.shape[-1] // heads
        if width == head_dim + 8:
            extra = k.view(k.shape[0], k.shape[1], heads, width)[..., 0, head_dim]     # [B, keys]
            for row in extra:
                rows = tuple((row < -1.0).nonzero().flatten().tolist())
                if rows:
                    suppressed.append(rows)
        return func(*args, **kwargs)

    watched = model.patcher.clone()
    watched.model_options["transformer_options"]["optimized_attention_override"] = override
    patched = guidance(nodes, model, guidance(nodes, model, watched, rows=(1, 3)), rows=(5, 7))
    sample_with(model, patched)
    assert set(suppressed) == {(1, 3), (5, 7)}


def test_importance_guidance_under_skip_layer_guidance_in_both_orders(tiny, nodes):
    from comfy_extras.nodes_slg import SkipLayerGuidanceDiT

    model = tiny("sd3")
    slg = lambda p: SkipLayerGuidanceDiT.execute(p, scale=3.0, start_percent=0.0, end_percent=1.0, double_layers="1", single_layers="").args[0]
    ours = lambda p: guidance(nodes, model, p)
    slg_only = sample_with(model, slg(model.patcher))
    first, second = sample_with(model, ours(slg(model.patcher))), sample_with(model, slg(ours(model.patcher)))
    # Post-CFG functions add up: each guidance term is computed from the sampler's own cond pass.
    torch.testing.assert_close(first, second, rtol=1e-5, atol=1e-5)
    assert not torch.equal(first, slg_only)
