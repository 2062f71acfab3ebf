"""What the per-family test files share: every TokenFocus node class, a model's sampler with another patcher,
and token weights for its positive prompt (imports the pack only when called: the `comfy` fixture comes first)."""
import dataclasses

import tiny_models as tm


def all_nodes():
    from tokenfocus.nodes.attention_temperature import AttentionTemperatureNode
    from tokenfocus.nodes.dare import ImportanceGuidanceNode, TokenReweightNode
    from tokenfocus.nodes.tora import ResidualAlignmentNode, TokenSpacingNode

    return dict(temperature=AttentionTemperatureNode, spacing=TokenSpacingNode, alignment=ResidualAlignmentNode,
                reweight=TokenReweightNode, guidance=ImportanceGuidanceNode)


def sample_with(model, patcher, steps=3):
    return tm.sample(dataclasses.replace(model, patcher=patcher), steps=steps)


def prompt_weights(model, important=(1, 3), weight=3.0):
    """Weights for every row of the positive conditioning: `weight` on the `important` rows, 1 elsewhere."""
    from tokenfocus.core.importance import TokenWeights
    from tokenfocus.runtime.adapters import detect

    n = model.text_len
    return TokenWeights(labels=tuple(f"t{i}" for i in range(n)),
                        weights=tuple(weight if i in important else 1.0 for i in range(n)),
                        real=tuple(i < model.real_tokens for i in range(n)), encoder=detect(model.patcher).encoder,
                        prompt="a test prompt")
