"""TokenFocus Prompt: one text box with inline weights, as in CLIP Text Encode, that go to the attention."""
from __future__ import annotations

from comfy_api.latest import io

from ..core.prompt_syntax import check_prompt_syntax, prompt_syntax_error
from .common import CATEGORY
from .dare import DARE, TokenWeightsType


def parse_weights(text: str) -> list[tuple[str, float]]:
    """(text, weight) segments of the prompt, by ComfyUI's own parser (the one CLIP Text Encode uses)."""
    from comfy.sd1_clip import escape_important, token_weights, unescape_important

    return [(unescape_important(part), weight) for part, weight in token_weights(escape_important(text), 1.0)]


class TokenFocusPromptNode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="TokenFocus_Prompt",
            display_name="TokenFocus Prompt",
            category=CATEGORY,
            description=(
                "Encodes a prompt with inline weights, 'a (red:1.5) kite over (snowy mountains:1.3)', in CLIP Text "
                "Encode's own syntax ('(word)' = 1.1, '\\(' for a literal parenthesis). The CONDITIONING is exactly "
                "what CLIP Text Encode gives for the text without the weights; the weights go to the attention "
                "instead of the embedding, through Token Reweighting and Importance Guidance, which read them "
                "from the conditioning (leave their token_weights unconnected). Below 1 a word gets less "
                "attention, 0 none. " + DARE
            ),
            inputs=[
                io.Clip.Input("clip", tooltip="The CLIP / text encoder of the model, as for CLIP Text Encode."),
                io.String.Input(
                    "text", multiline=True, dynamic_prompts=True, default="",
                    tooltip="The prompt; '(word:1.5)' weights a word's attention, '(word)' = 1.1, '(word:0)' removes "
                    "it; write \\( and \\) for literal parentheses.",
                ),
                io.Boolean.Input(
                    "density", default=False,
                    tooltip="Multiply in the automatic semantic-density estimate (function words and punctuation "
                    "low, rare content words high), as in Token Importance.",
                ),
                io.Image.Input(
                    "image", optional=True,
                    tooltip="Qwen-Image-Edit: the image to edit. The prompt is then encoded as ComfyUI's "
                    "TextEncodeQwenImageEdit does (its vision rows in front of the prompt's), and the weights sit on "
                    "the prompt's own rows.",
                ),
                io.Vae.Input(
                    "vae", optional=True,
                    tooltip="Qwen-Image-Edit: the VAE that makes the image's reference latent, as for "
                    "TextEncodeQwenImageEdit.",
                ),
            ],
            outputs=[
                io.Conditioning.Output(display_name="CONDITIONING", tooltip="The prompt, encoded as CLIP Text Encode does; the weights ride along."),
                TokenWeightsType.Output(display_name="token_weights", tooltip="The same weights, for nodes that take them as an input."),
                io.String.Output(display_name="tokens", tooltip="The prompt's tokens and their weights."),
            ],
        )

    @classmethod
    def validate_inputs(cls, text=None, **kwargs):
        problem = prompt_syntax_error(text) if isinstance(text, str) else None
        return f"TokenFocus Prompt: {problem}" if problem else True

    @classmethod
    def execute(cls, clip, text, density=False, image=None, vae=None) -> io.NodeOutput:
        from ..runtime.prompt_weights import attach
        from ..runtime.tokens import prompt_token_weights

        if clip is None:
            raise ValueError("TokenFocus Prompt needs a CLIP: the checkpoint or loader gave none.")
        check_prompt_syntax(text)
        weights, plain = prompt_token_weights(clip, parse_weights(text), text, use_density=bool(density))
        if image is None and vae is None:
            # What CLIP Text Encode does with the plain text: the same tokens, the same conditioning.
            conditioning, attached = attach(clip.encode_from_tokens_scheduled(clip.tokenize(plain)), weights)
        else:
            conditioning, attached = attach(_qwen_image_edit(clip, plain, image, vae, weights.encoder), weights,
                                            prompt_last=True)
        return io.NodeOutput(conditioning, attached[0], attached[0].describe())


def _qwen_image_edit(clip, plain: str, image, vae, encoder: str) -> list:
    """The conditioning ComfyUI's TextEncodeQwenImageEdit makes (its own node, called as it is)."""
    import importlib

    if image is None:
        raise ValueError("TokenFocus Prompt: a VAE is connected but no image; connect the image to edit "
                         "(Qwen-Image-Edit), or neither.")
    if encoder != "qwen25_7b":
        raise ValueError(f"TokenFocus Prompt: an image is connected, which only Qwen-Image-Edit's text encoder takes; "
                         f"this CLIP encodes with the '{encoder}' layout. Disconnect the image, or load Qwen-Image's "
                         "text encoder.")
    for module in ("comfy_extras.nodes_qwen", "comfy_extras.nodes.nodes_qwen"):    # upstream; packaged ComfyUI
        try:
            node = getattr(importlib.import_module(module), "TextEncodeQwenImageEdit", None)
        except ImportError:
            continue
        if node is not None:
            return node.execute(clip, plain, vae=vae, image=image).args[0]
    raise ValueError("TokenFocus Prompt: this ComfyUI has no TextEncodeQwenImageEdit node to encode the image with.")
