"""ComfyUI's real diffusion transformers at their real widths, cut to a few blocks, for the benchmark.

Same recipe as the integration harness (tests/integration/tiny_models.py, whose helpers are imported
here): the `comfy.supported_models` class with a unet_config as comfy/model_detection.py would detect it
from the checkpoint, `.get_model()`, deterministic weights, a ModelPatcher. Only the depth is cut (a few
blocks: the per-step overhead relative to the same blocks is what matters) and the token count is set by
the caller (what the machine can run). Widths, heads, FFN sizes and text widths are the real ones
(tiny=True swaps in the test harness's widths, for the torch.compile check at the real depth).

Conditioning follows ComfyUI's CONDITIONING format with the real row counts and widths (T5/umT5/Llama
4096-wide context, CLIP pooled vectors), random values.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from comfy_env import import_comfyui
from tiny_models import _cond, _generator, _init_weights, _randn, with_installed_params
from tiny_models import _text as tiny_text

TEXT_WIDTH = 4096  # T5-XXL, umT5-XXL and Llama hidden states (tiny_models shrinks it to 64)


def _text(gen, rows, real, pad):
    """[1, rows, 4096]: the harness's prompt-then-padding layout at the real text width."""
    return tiny_text(gen, rows, real, pad, width=TEXT_WIDTH)


@dataclass
class BenchModel:
    name: str            # e.g. "Wan 2.1 1.3B"
    family: str          # "wan" | "mmdit" | "flux" | "hunyuan"
    patcher: object
    positive: list
    negative: list
    latent: dict
    sizes: dict = field(default_factory=dict)   # what RESULTS.md prints: dim, heads, blocks, tokens...
    encoder: str = ""                            # the text encoder layout (runtime/tokens.py), for token weights
    prompt_rows: tuple = ()                      # per row of the positive context: a prompt token (not padding)

    def token_weights(self, every: int = 8, weight: float = 2.0):
        """What Token Importance would give for the positive prompt: every `every`-th prompt token weighted
        up, padding and the rest 1.0 (a weight's value does not change the cost)."""
        from tokenfocus.core.importance import TokenWeights

        n = len(self.prompt_rows)
        weights = tuple(weight if real and i % every == 0 else 1.0 for i, real in enumerate(self.prompt_rows))
        return TokenWeights(labels=tuple(f"t{i}" for i in range(n)), weights=weights, real=self.prompt_rows,
                            encoder=self.encoder, prompt="benchmark prompt")


def build_patcher(class_name: str, unet_config: dict, dtype: torch.dtype, seed: int = 0):
    """Like tiny_models._build_patcher, plus the inference dtype (bf16 on a GPU)."""
    env = import_comfyui()
    mm = env.comfy.model_management
    cls = getattr(env.comfy.supported_models, class_name)
    unet_config = with_installed_params(class_name, unet_config)
    assert cls.matches(unet_config), f"{class_name} does not match {unet_config}"
    model_config = cls(unet_config)
    model_config.set_inference_dtype(dtype, None)
    model = model_config.get_model({}, "")
    _init_weights(model.diffusion_model, seed)
    model.eval()
    return env.comfy.model_patcher.ModelPatcher(model, load_device=mm.get_torch_device(),
                                                offload_device=mm.unet_offload_device())


def _video_latent(tokens, channels: int = 16):
    """[1, C, F, H, W] and its token count (patch 1x2x2). tokens: a count, laid out as frames of 16x16
    patches, or the latent's (F, H, W), e.g. (21, 60, 104) for 480p x 81 frames (32760 tokens)."""
    if isinstance(tokens, tuple):
        frames, h, w = tokens
    else:
        frames = max(1, tokens // 256)
        h = w = 2 * round(math.sqrt(tokens / frames))
    return torch.zeros(1, channels, frames, h, w), frames * (h // 2) * (w // 2)


def _image_latent(tokens: int, channels: int = 16):
    """[1, C, H, W] with (H/2) * (W/2) = tokens (patch 2x2)."""
    side = 2 * round(math.sqrt(tokens))
    return torch.zeros(1, channels, side, side), (side // 2) ** 2


def _rows(rows: int, real: int) -> tuple:
    return tuple(i < real for i in range(rows))


# ---------------------------------------------------------------------------------------------------
# families: (blocks, image tokens, dtype, tiny=False); tiny = the test harness's widths, for the compile
# check at the real depth


def wan(variant: str, blocks: int, tokens: int, dtype, tiny=False) -> BenchModel:
    dim, heads, ffn = (64, 2, 128) if tiny else {"1.3B": (1536, 12, 8960), "14B": (5120, 40, 13824)}[variant]
    config = {  # keys as model_detection.py detects a Wan 2.1 t2v checkpoint
        "image_model": "wan2.1", "model_type": "t2v", "dim": dim, "ffn_dim": ffn, "num_heads": heads,
        "num_layers": blocks, "in_dim": 16, "out_dim": 16, "text_dim": TEXT_WIDTH, "patch_size": (1, 2, 2),
        "freq_dim": 256, "window_size": (-1, -1), "qk_norm": True, "cross_attn_norm": True, "eps": 1e-6,
    }
    gen = _generator(1)
    text = 512  # umT5 context, zero-padded to 512 rows
    latent, n = _video_latent(tokens)
    return BenchModel(
        f"Wan 2.1 {variant}", "wan", build_patcher("WAN21_T2V", config, dtype),
        _cond(_text(gen, text, 40, "zeros")), _cond(_text(gen, text, 12, "zeros")), {"samples": latent},
        dict(dim=dim, heads=heads, ffn=ffn, blocks=f"{blocks}", image_tokens=n, text_tokens=text),
        "umt5xxl", _rows(text, 40),
    )


def sd35(variant: str, blocks: int, tokens: int, dtype, tiny=False) -> BenchModel:
    # MMDiT ties width to depth (hidden = 64 * depth, heads = depth); num_blocks sets the number of blocks.
    depth, x_self = {"medium": (24, list(range(13))), "large": (38, [])}[variant]
    depth = 3 if tiny else depth
    config = {
        "in_channels": 16, "out_channels": 16, "patch_size": 2, "depth": depth, "num_blocks": blocks,
        "input_size": None, "adm_in_channels": 2048,
        "context_embedder_config": {"target": "torch.nn.Linear", "params": {"in_features": TEXT_WIDTH, "out_features": 64 * depth}},
        # The real table is 384^2 (medium) / 192^2 (large) positions; a crop of it costs the same per step.
        "pos_embed_max_size": 64, "num_patches": 64 * 64, "pos_embed_scaling_factor": None,
        "qk_norm": "rms", "x_block_self_attn_layers": [i for i in x_self if i < blocks],
    }
    gen = _generator(2)
    clip_rows, t5_rows = 77, 256  # CLIP-L/G side by side, then T5 (333 rows)

    def context(real):
        return torch.cat([_text(gen, clip_rows, real, "token"), _text(gen, t5_rows, real, "token")], dim=1)

    latent, n = _image_latent(tokens)
    return BenchModel(
        f"SD3.5 {variant}", "mmdit", build_patcher("SD3", config, dtype),
        _cond(context(40), pooled_output=_randn(gen, 1, 2048)), _cond(context(12), pooled_output=_randn(gen, 1, 2048)),
        {"samples": latent},
        dict(dim=64 * depth, heads=depth, ffn=4 * 64 * depth, blocks=f"{blocks}", image_tokens=n,
             text_tokens=clip_rows + t5_rows),
        "sd3", _rows(clip_rows, 40) + _rows(t5_rows, 40),
    )


def _double_single(name, family, class_name, image_model, blocks, tokens, dtype, text, negative_text, tiny):
    double, single = blocks if isinstance(blocks, tuple) else (max(1, blocks // 2), max(1, blocks - blocks // 2))
    hidden, heads, axes = (64, 2, [8, 12, 12]) if tiny else (3072, 24, [16, 56, 56])
    config = {
        "image_model": image_model, "in_channels": 16, "out_channels": 16, "vec_in_dim": 768,
        "context_in_dim": TEXT_WIDTH, "hidden_size": hidden, "mlp_ratio": 4.0, "num_heads": heads,
        "depth": double, "depth_single_blocks": single, "axes_dim": axes, "qkv_bias": True,
        "guidance_embed": True,
    }
    gen = _generator(3)
    if family == "hunyuan":
        # Llama hidden states cropped to the prompt: cond and uncond differ in length (two model calls).
        config.update({"patch_size": [1, 2, 2], "theta": 256, "byt5": False, "meanflow": False})
        latent, n = _video_latent(tokens)
        pos, neg = _text(gen, text, text, None), _text(gen, negative_text, negative_text, None)
    else:  # Flux: T5 rows padded with pad tokens; cond and uncond padded alike
        config.update({"patch_size": 2, "theta": 10000})
        latent, n = _image_latent(tokens)
        pos, neg = _text(gen, text, 40, "token"), _text(gen, negative_text, 12, "token")
    extras = dict(guidance=3.5 if family == "flux" else 6.0)
    return BenchModel(
        name, family, build_patcher(class_name, config, dtype),
        _cond(pos, pooled_output=_randn(gen, 1, 768), **extras), _cond(neg, pooled_output=_randn(gen, 1, 768), **extras),
        {"samples": latent},
        dict(dim=hidden, heads=heads, ffn=4 * hidden, blocks=f"{double} double + {single} single", image_tokens=n,
             text_tokens=text if family == "flux" else f"{text} (uncond {negative_text})"),
        "t5xxl" if family == "flux" else "llama", _rows(text, 40 if family == "flux" else text),
    )


def flux(blocks, tokens: int, dtype, text=(512, 512), tiny=False) -> BenchModel:
    """Flux dev: T5 rows, 512 at most (ComfyUI pads short prompts to 256). blocks: a total split half
    double, half single, or (double, single)."""
    return _double_single("Flux dev", "flux", "Flux", "flux", blocks, tokens, dtype, *text, tiny)


def hunyuan(blocks, tokens: int, dtype, text=(256, 64), tiny=False) -> BenchModel:
    """HunyuanVideo: Llama rows cropped to the prompt (cond, uncond)."""
    return _double_single("HunyuanVideo", "hunyuan", "HunyuanVideo", "hunyuan_video", blocks, tokens, dtype, *text, tiny)


def zimage(blocks, tokens: int, dtype, text=(96, 24), tiny=False) -> BenchModel:
    """Z-Image: NextDiT at 3840 wide, 30 heads, over [caption padded to 32; image]; the caption is Qwen3-4B's
    2560-wide hidden states of the whole chat template, unpadded (cond, uncond rows)."""
    width = 64 if tiny else 2560
    config = {  # keys as model_detection.py detects Z-Image
        "image_model": "lumina2", "patch_size": 2, "in_channels": 16, "dim": 256 if tiny else 3840,
        "cap_feat_dim": width, "n_layers": blocks, "qk_norm": True, "n_heads": 2 if tiny else 30,
        "n_kv_heads": 2 if tiny else 30, "axes_dims": [32, 48, 48], "axes_lens": [1536, 512, 512],
        "rope_theta": 256.0, "ffn_dim_multiplier": 8.0 / 3.0, "z_image_modulation": True, "time_scale": 1000.0,
        "pad_tokens_multiple": 32,
    }
    gen = _generator(4)
    latent, n = _image_latent(tokens)
    cond, uncond = text
    # supported_models.ZImage matches only the real width; the tiny one builds through its base class Lumina2.
    patcher = build_patcher("Lumina2" if tiny else "ZImage", config, dtype)
    return BenchModel(
        "Z-Image", "zimage", patcher, _cond(tiny_text(gen, cond, cond, None, width=width)),
        _cond(tiny_text(gen, uncond, uncond, None, width=width)), {"samples": latent},
        dict(dim=config["dim"], heads=config["n_heads"], ffn=_next_dit_ffn(config["dim"]), blocks=f"{blocks}", image_tokens=n,
             text_tokens=f"{cond} (uncond {uncond}), padded to 32"),
        "qwen3_4b", _rows(cond, cond),
    )


def qwen_image(blocks, tokens: int, dtype, text=(96, 24), tiny=False) -> BenchModel:
    """Qwen-Image: 60 double-stream blocks 3072 wide (24 heads of 128) over [txt; img]; the text is Qwen2.5-VL
    7B's 3584-wide hidden states with the chat template's system prefix cropped by ComfyUI, unpadded (cond, uncond
    rows differ: two model calls). The latent is Wan 2.1's format, [B, 16, 1, H, W], patch 2x2."""
    width = 64 if tiny else 3584
    heads, head_dim = (2, 32) if tiny else (24, 128)
    config = {  # keys as model_detection.py detects Qwen-Image (the rest are the class's defaults, the real ones)
        "image_model": "qwen_image", "in_channels": 64, "out_channels": 16, "num_layers": blocks,
        "attention_head_dim": head_dim, "num_attention_heads": heads, "joint_attention_dim": width,
        "axes_dims_rope": (8, 12, 12) if tiny else (16, 56, 56),
    }
    gen = _generator(6)
    image, n = _image_latent(tokens)
    cond, uncond = text
    return BenchModel(
        "Qwen-Image", "qwen_image", build_patcher("QwenImage", config, dtype),
        _cond(tiny_text(gen, cond, cond, None, width=width)), _cond(tiny_text(gen, uncond, uncond, None, width=width)),
        {"samples": image.unsqueeze(2)},
        dict(dim=heads * head_dim, heads=heads, ffn=4 * heads * head_dim, blocks=f"{blocks}", image_tokens=n,
             text_tokens=f"{cond} (uncond {uncond})"),
        "qwen25_7b", _rows(cond, cond),
    )


def _next_dit_ffn(dim: int, multiplier: float = 8.0 / 3.0, multiple_of: int = 256) -> int:
    """NextDiT's feed-forward width (lumina/model.py FeedForward): dim x multiplier, rounded up to multiple_of."""
    hidden = int(multiplier * dim)
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)


def flux2(blocks, tokens: int, dtype, text=(128, 32), tiny=False, klein=False) -> BenchModel:
    """Flux.2 dev (6144 wide, 48 heads, Mistral 3 text 3 x 5120 wide, left-padded with zero rows to 512 by
    ComfyUI) or Klein 4B (3072 wide, 24 heads, Qwen3 text 3 x 2560, padded to 512 by its tokenizer)."""
    double, single = blocks if isinstance(blocks, tuple) else (max(1, blocks // 2), max(1, blocks - blocks // 2))
    hidden, heads, width = (64, 2, 64) if tiny else (3072, 24, 7680) if klein else (6144, 48, 15360)
    config = {  # keys as model_detection.py detects Flux.2
        "image_model": "flux2", "in_channels": 128, "out_channels": 128, "vec_in_dim": None, "context_in_dim": width,
        "hidden_size": hidden, "mlp_ratio": 3.0, "num_heads": heads, "depth": double, "depth_single_blocks": single,
        "axes_dim": [8, 8, 8, 8] if tiny else [32, 32, 32, 32], "theta": 2000, "qkv_bias": False,
        "guidance_embed": not klein, "patch_size": 1, "global_modulation": True, "mlp_silu_act": True,
        "ops_bias": False, "txt_ids_dims": [3], "default_ref_method": "index", "ref_index_scale": 10.0,
    }
    gen = _generator(5)
    side = max(1, round(math.sqrt(tokens)))     # patch 1: one token per latent pixel
    cond, uncond = (512, 512) if klein else text
    extras = dict(pooled_output=None, guidance=4.0)
    return BenchModel(
        "Flux.2 Klein 4B" if klein else "Flux.2 dev", "flux2", build_patcher("Flux2", config, dtype),
        _cond(tiny_text(gen, cond, cond, None, width=width), **extras),
        _cond(tiny_text(gen, uncond, uncond, None, width=width), **extras),
        {"samples": torch.zeros(1, 128, side, side)},
        dict(dim=hidden, heads=heads, ffn=3 * hidden, blocks=f"{double} double + {single} single",
             image_tokens=side * side, text_tokens=f"{cond} (uncond {uncond}), 512 in the blocks"),
        _flux2_encoder(width), _rows(cond, cond),
    )


def _flux2_encoder(width: int) -> str:
    """The text-encoder layout the pack detects for a Flux.2 of this text width (its family module's table)."""
    from tokenfocus.families.flux2 import VARIANTS

    return VARIANTS.get(width, ("", "mistral3_24b"))[1]


def ltx2(blocks, tokens, dtype, tiny=False) -> BenchModel:
    """LTX-2 (LTXAV): a video stream 4096 wide (32 heads) and an audio stream 2048 wide (32 heads) in every block;
    the text is Gemma 3's rows through the text connectors, 1024 rows, the video and audio contexts side by side
    (2 x 3840 wide). tokens: video tokens (patch 1x1x1 over a 128-channel latent); the audio latent gets one
    frame per 50 of them, about LTX-2's ratio at 480p."""
    heads, video_head, audio_head, caption = (2, 32, 16, 64) if tiny else (32, 128, 64, 3840)
    video, audio = heads * video_head, heads * audio_head
    config = {  # keys as model_detection.py and the checkpoint's config give them
        "image_model": "ltxav", "num_layers": blocks, "in_channels": 128, "audio_in_channels": 128,
        "attention_head_dim": video_head, "num_attention_heads": heads, "cross_attention_dim": video,
        "audio_attention_head_dim": audio_head, "audio_num_attention_heads": heads, "audio_cross_attention_dim": audio,
        "caption_channels": caption,
    }
    gen = _generator(6)
    if isinstance(tokens, tuple):
        frames, h, w = tokens
    else:
        frames = max(1, tokens // 256)
        h = w = max(1, round(math.sqrt(tokens / frames)))
    n = frames * h * w
    nested = import_comfyui().comfy.nested_tensor.NestedTensor
    latent = nested((torch.zeros(1, 128, frames, h, w), torch.zeros(1, 8, max(1, n // 50), 16)))
    rows, prompt = 1024, 64     # the connector pads every prompt with registers to 1024 rows
    return BenchModel(
        "LTX-2", "ltx2", build_patcher("LTXAV", config, dtype),
        _cond(tiny_text(gen, rows, rows, None, width=2 * caption)), _cond(tiny_text(gen, rows, rows, None, width=2 * caption)),
        {"samples": latent},
        dict(dim=f"{video} video + {audio} audio", heads=heads, ffn=4 * video, blocks=f"{blocks}",
             image_tokens=n, text_tokens=rows),
        "gemma3_12b", _rows(rows, prompt),
    )


# name -> (builder(blocks, tokens, dtype, **options), GPU only). tiny=True: widths of the harness's tiny
# models (for the compile check at the real depth).
MODELS = {
    "wan1.3b": (lambda b, t, d, **kw: wan("1.3B", b, t, d, **kw), False),
    "wan14b": (lambda b, t, d, **kw: wan("14B", b, t, d, **kw), True),
    "sd35m": (lambda b, t, d, **kw: sd35("medium", b, t, d, **kw), False),
    "sd35l": (lambda b, t, d, **kw: sd35("large", b, t, d, **kw), False),
    "flux": (flux, False),
    "hunyuan": (hunyuan, False),
    "zimage": (zimage, False),
    "qwen_image": (qwen_image, False),
    "flux2": (flux2, True),         # 6144 wide: a few GB a block in float32
    "flux2klein": (lambda b, t, d, **kw: flux2(b, t, d, klein=True, **kw), False),
    "ltx2": (ltx2, False),          # about 1.5 GB a block in float32
}
REAL_DEPTH = {"wan1.3b": 30, "wan14b": 40, "sd35m": 24, "sd35l": 38, "flux": (19, 38), "hunyuan": (20, 40),
              "zimage": 30, "qwen_image": 60, "flux2": (8, 48), "flux2klein": (5, 20), "ltx2": 48}

