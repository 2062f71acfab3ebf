"""All TokenFocus nodes chained and compiled as ComfyUI's TorchCompileModel node compiles a model
(comfy_api's set_torch_compile_wrapper). fullgraph=True turns any graph break into an error."""
import dataclasses

import pytest
import torch

import tiny_models as tm
from test_dare import weights_for

FAMILIES = ["wan21_t2v", "wan21_i2v", "sd35_medium", "flux", "hunyuan_video", "ltx2"]


@pytest.fixture(scope="module")
def nodes(comfy):
    from tokenfocus.nodes.attention_temperature import AttentionTemperatureNode
    from tokenfocus.nodes.dare import ImportanceGuidanceNode, TokenReweightNode
    from tokenfocus.nodes.tora import ResidualAlignmentNode, TokenSpacingNode
    return dict(temperature=AttentionTemperatureNode, spacing=TokenSpacingNode, alignment=ResidualAlignmentNode,
                reweight=TokenReweightNode, guidance=ImportanceGuidanceNode)


def every_step_nodes(nodes, model):
    """The nodes that act inside the model call, on at every step."""
    steps = dict(start_percent=0.0, end_percent=1.0)
    weights = weights_for(model, None)
    p = nodes["temperature"].execute(model.patcher, gamma=1.35, blocks="all", **steps).args[0]
    p = nodes["spacing"].execute(p, sigma=1.3, k_mode="auto", fixed_k=2, blocks="all", **steps).args[0]
    p = nodes["alignment"].execute(p, strength=0.5, k_mode="auto", fixed_k=2, blocks="all", **steps).args[0]
    return nodes["reweight"].execute(p, weights, strength=1.0, blocks="all", **steps).args[0]


def all_nodes(nodes, model):
    """Every node on the model; Importance Guidance's range ends half-way, so the run switches programs."""
    weights = weights_for(model, None)
    patched = every_step_nodes(nodes, model)
    return nodes["guidance"].execute(patched, weights, scale=1.0, start_percent=0.0, end_percent=0.5).args[0]


def on_pytorch_attention(model):
    """The model with an attention override that sends every call to ComfyUI's attention_pytorch (what
    `--use-pytorch-cross-attention` or a GPU would pick). Here ComfyUI picks sub-quadratic attention,
    which asks psutil for free memory on every call: a graph break of its own, TokenFocus or not."""
    from comfy.ldm.modules.attention import attention_pytorch

    patcher = model.patcher.clone()
    patcher.model_options["transformer_options"]["optimized_attention_override"] = (
        lambda func, *args, **kwargs: attention_pytorch(*args, **kwargs))
    return dataclasses.replace(model, patcher=patcher)


def sample_compiled(model, patcher, graphs=None):
    """Sample 4 steps compiled; graphs (a list) receives how many programs dynamo compiled."""
    from comfy_api.torch_helpers import set_torch_compile_wrapper
    from torch._dynamo.utils import counters

    compiled = patcher.clone()
    torch._dynamo.reset()
    counters.clear()
    try:
        set_torch_compile_wrapper(model=compiled, backend="eager", fullgraph=True)
        out = tm.sample(dataclasses.replace(model, patcher=compiled), steps=4)
        if graphs is not None:
            graphs.append(counters["stats"]["unique_graphs"])
        return out
    finally:
        torch._dynamo.reset()


@pytest.mark.parametrize("family", FAMILIES)
def test_every_node_compiles_into_whole_graphs_and_matches_eager(tiny, nodes, family):
    model = on_pytorch_attention(tiny(family))
    unpatched = tm.sample(model, steps=4)
    assert torch.equal(sample_compiled(model, model.patcher), unpatched)    # the control: compiles whole
    patched = all_nodes(nodes, model)
    eager = tm.sample(dataclasses.replace(model, patcher=patched), steps=4)
    assert not torch.equal(eager, unpatched)
    # Eagerly the TORA decomposition runs on the prompt's rows only, in a graph on all rows: rounding.
    torch.testing.assert_close(sample_compiled(model, patched), eager, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("family", ["wan21_t2v", "sd35_medium", "flux"])
def test_nodes_on_at_every_step_compile_once_per_run(tiny, nodes, family):
    # Nothing the hooks note during a step may change the compiled graph's guards: a new sigma, a new
    # block touched, a warning. Cond and uncond run batched here, so unpatched compiles once.
    model = on_pytorch_attention(tiny(family))
    unpatched, patched = [], []
    sample_compiled(model, model.patcher, unpatched)
    sample_compiled(model, every_step_nodes(nodes, model), patched)
    assert unpatched == patched == [1]
