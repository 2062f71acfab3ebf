"""The bundled Wan 2.2 i2v A14B workflow run as it is wired, with its own widget values, on two tiny 40-block
i2v experts: TokenFocus Prompt's weights ride through what WanImageToVideo adds to the conditioning, each
expert's model chain is applied node by node (ComfyUI's own ModelSamplingSD3 and KSampler (Advanced), the
pack's nodes), and the high-noise expert's sampler hands its noisy latent to the low-noise one's, at CFG 1.
Only the loaders are stand-ins: each tiny expert replaces the diffusion model and LoRA the workflow loads."""
import sys
from pathlib import Path

import pytest
import torch

import tiny_models as tm
from test_prompt import TINY_T5, real_clip

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # workflow_lib, next to tests/test_workflows.py
import workflow_lib as wl  # noqa: E402

NAME = "wan2.2_i2v_A14B_4step_alignvid_prompt_weights"
LOADERS = {"UNETLoader", "LoraLoaderModelOnly"}


def run_node(cls, **inputs):
    """A node's outputs, called as ComfyUI calls it (the pack's nodes are V3, the core ones here V1)."""
    if hasattr(cls, "define_schema"):
        return cls.execute(**inputs).args
    return getattr(cls(), cls.FUNCTION)(**inputs)


def node_classes(comfy):
    """The classes of the workflow's nodes, imported directly: no registry is loaded here, so none is cached
    that later tests would see (workflow_lib.registry() loads ComfyUI's extras for the workflow checks)."""
    import asyncio

    from comfy_extras.nodes_model_advanced import ModelSamplingSD3
    from tokenfocus.nodes.extension import TokenFocusExtension

    classes = {kind: comfy.nodes.NODE_CLASS_MAPPINGS[kind] for kind in ("CLIPTextEncode", "KSamplerAdvanced")}
    classes["ModelSamplingSD3"] = ModelSamplingSD3
    classes.update({cls.GET_SCHEMA().node_id: cls for cls in asyncio.run(TokenFocusExtension().get_node_list())})
    return classes


class Graph:
    def __init__(self, comfy):
        import comfy.text_encoders.wan as wan
        try:
            import node_helpers
        except ImportError:  # a pip-packaged ComfyUI keeps it in its comfy package
            from comfy import node_helpers

        self.workflow = wl.load(wl.WORKFLOW_DIR / f"{NAME}.json")
        self.registry = node_classes(comfy)
        prompt = self.node("TokenFocus_Prompt")
        spiece = Path(comfy.path) / "comfy" / "text_encoders" / "t5_pile_tokenizer" / "tokenizer.model"
        clip = real_clip(wan.te(), wan.WanT5Tokenizer, {"umt5xxl_model_config": {**TINY_T5, "d_model": tm.TEXT_DIM}},
                         {"spiece_model": spiece.read_bytes()})
        positive = run_node(self.cls(prompt), clip=clip, **self.values(prompt))[0]
        negative = run_node(self.cls(self.node("CLIPTextEncode")), clip=clip, **self.values(self.node("CLIPTextEncode")))[0]
        # What WanImageToVideo adds to both prompts, with its own helper: the start image's latent and its mask.
        mask = torch.ones(1, 1, 2, 8, 8)
        mask[:, :, :1] = 0.0
        image = {"concat_latent_image": torch.randn(1, 16, 2, 8, 8, generator=torch.Generator().manual_seed(0)),
                 "concat_mask": mask}
        self.positive, self.negative = (node_helpers.conditioning_set_values(c, image) for c in (positive, negative))
        self.experts = {"high_noise": tm.build("wan22_i2v_a14b_expert", seed=0),
                        "low_noise": tm.build("wan22_i2v_a14b_expert", seed=1)}
        self.samplers = sorted((n for n in self.workflow["nodes"] if n["type"] == "KSamplerAdvanced"),
                               key=lambda n: self.values(n)["start_at_step"])

    def node(self, kind):
        (found,) = [n for n in self.workflow["nodes"] if n["type"] == kind]
        return found

    def cls(self, node):
        return self.registry[node["type"]]

    def values(self, node):
        values = wl.widget_values(node, self.cls(node))
        values.pop("control_after_generate", None)
        return values

    def model_chain(self, sampler):
        """The nodes from the loaders to `sampler`'s model input, in the order the model passes them."""
        chain, node = [], wl.upstream(self.workflow, sampler, "model")
        while node["type"] not in LOADERS:
            chain.insert(0, node)
            node = wl.upstream(self.workflow, node, "model")
        loader = wl.model_loader(self.workflow, sampler)
        return next(e for name, e in self.experts.items() if name in wl.model_files(loader)[0]), chain

    def sample(self, bypass=()):
        """The video latent, with the TokenFocus nodes of `bypass` (node types or ids) bypassed (Ctrl+B)."""
        latent, reports = self.experts["high_noise"].latent, {}
        for sampler in self.samplers:
            expert, chain = self.model_chain(sampler)
            model = expert.patcher.clone()
            for node in chain:
                if node["type"] in bypass or node["id"] in bypass:
                    continue
                outputs = run_node(self.cls(node), model=model, **self.values(node))
                model = outputs[0]
                reports[node["id"]] = outputs[1] if len(outputs) > 1 else None
            latent = run_node(self.cls(sampler), model=model, positive=self.positive, negative=self.negative,
                              latent_image=latent, **self.values(sampler))[0]
        return latent["samples"], reports


@pytest.fixture(scope="module")
def graph(comfy):
    return Graph(comfy)


def test_the_workflow_samples_two_experts_at_cfg_one_and_hands_over_a_noisy_latent(graph):
    first, second = (graph.values(s) for s in graph.samplers)
    assert first["cfg"] == second["cfg"] == 1.0 and first["end_at_step"] == second["start_at_step"]
    assert first["return_with_leftover_noise"] == "enable" and second["add_noise"] == "disable"
    assert [graph.model_chain(s)[0] for s in graph.samplers] == [graph.experts["high_noise"], graph.experts["low_noise"]]
    weights = graph.positive[0][1]["tokenfocus_weights"]
    assert max(weights.weights) > 1.0, "the prompt's inline weights ride in the conditioning past WanImageToVideo"


def test_each_tokenfocus_node_acts_on_its_experts_steps(graph):
    base, _ = graph.sample(bypass={"TokenFocus_AttentionTemperature", "TokenFocus_TokenReweight"})
    out, reports = graph.sample()
    assert not torch.equal(out, base)
    reweights = {s["id"]: [n for n in graph.model_chain(s)[1] if n["type"] == "TokenFocus_TokenReweight"] for s in graph.samplers}
    assert all(len(found) == 1 for found in reweights.values()), "Token Reweighting on both experts"
    for sampler in graph.samplers:
        (node,) = reweights[sampler["id"]]
        assert not torch.equal(graph.sample(bypass={node["id"]})[0], out), f"{node.get('title')} changed nothing"
    temperature = graph.node("TokenFocus_AttentionTemperature")
    assert graph.model_chain(graph.samplers[0])[1].count(temperature) == 1, "the temperature is on the high-noise expert"
    assert not torch.equal(graph.sample(bypass={temperature["id"]})[0], out)
    assert "high-noise expert" in reports[temperature["id"]]
    assert torch.equal(graph.sample()[0], out), "the same graph twice, the same video"
