"""Tiny random-weight instances of ComfyUI's real diffusion transformers, and a sampler for them.

Each family is built the way ComfyUI builds a loaded checkpoint: its `comfy.supported_models` class with
a unet_config shaped like the detected one (only smaller), `.get_model()`, then a
`comfy.model_patcher.ModelPatcher`. The pack's patches therefore run through ComfyUI's own blocks,
attention calls, conds and samplers; only the sizes and the weights are fake. Everything is float32 on
the CPU and seeded, so a family built twice is identical and sampling is bit-reproducible.

    tm = build("flux")                       # or FAMILIES["flux"]()
    out = sample(tm, steps=3, cfg=4.0, seed=0)   # -> latent tensor

Conditioning follows ComfyUI's CONDITIONING format, `[[context, {extras}]]`, with the row layout each
real text encoder produces (`context_layout`), so tests can aim at "prompt" rows and at padding.
Text and pooled widths are shrunk (the model classes take them as parameters); row counts are real.
"""
import dataclasses
import importlib
from dataclasses import dataclass, field

import torch

from comfy_env import host_lacks, import_comfyui

TEXT_DIM = 64  # real: 4096 (T5 / Llama); the classes take the width as a parameter
POOLED_DIM = 32  # real: 768 (CLIP-L, Flux/Hunyuan) or 2048 (CLIP-L+G, SD3)
CLIP_VISION_TOKENS, CLIP_VISION_DIM = 257, 1280  # fixed by WanModel's img_emb (MLPProj(1280, dim))
PROMPT_TOKENS, NEGATIVE_TOKENS = 9, 5  # rows carrying the prompt in positive / negative


@dataclass(frozen=True)
class Segment:
    """Rows [start, stop) of a context from one encoder; the first `real` rows hold the prompt, the
    rest is that encoder's padding."""
    name: str
    start: int
    stop: int
    real: int


@dataclass
class TinyModel:
    family: str
    patcher: object  # comfy.model_patcher.ModelPatcher
    positive: list  # CONDITIONING: [[context, {...}]]
    negative: list
    latent: dict  # {"samples": tensor}, what an empty-latent node would give
    unet_config: dict
    model_config: object  # the comfy.supported_models instance
    double_blocks: int  # Wan blocks, MMDiT joint blocks, Flux/Hunyuan double-stream blocks
    single_blocks: int  # Flux/Hunyuan single-stream blocks; 0 elsewhere
    text_len: int  # rows of the positive context
    real_tokens: int  # prompt rows of the positive context (per encoder segment)
    context_layout: tuple  # Segments of the positive context
    txt_layout: tuple  # Segments of the `txt` the blocks receive (Wan i2v puts 257 CLIP rows first)
    negative_text_len: int
    negative_real_tokens: int
    joint_order: str = None  # "txt_img" (SD3, Flux), "img_txt" (Hunyuan), None (Wan: cross attention)
    # "replace": patches_replace["dit"] per block; "marked": the model sets transformer_options["block_index"]
    # and calls patches["double_block"] after each block (Z-Image / Lumina 2 on ComfyUI 0.12)
    block_access: str = "replace"
    # False where ComfyUI's own block-replace path fails (Kandinsky 5: its block wrapper passes keyword names the
    # block does not take): no test may install a patches_replace["dit"] patch there.
    block_patches_work: bool = True
    # Where the model pads the conditioning itself: to a multiple (Z-Image: 32) or up to a length (Flux.2:
    # 512, in front of the prompt, with zero rows).
    pad_text_multiple: int = 1
    pad_text_to: int = 0
    # Rows the model adds around the conditioning's rows from other conds (HunyuanVideo 1.5: vision and ByT5 in
    # front; HunyuanImage 2.1: ByT5 after): (before, after) for the positive prompt, then for the negative.
    extra_text_rows: tuple = (0, 0, 0, 0)
    x_block_layers: tuple = ()  # MMDiT-X blocks with an extra image-only self attention
    extras: dict = field(default_factory=dict)  # per-family notes (e.g. the CLIP vision tensor)

    @property
    def pads_text(self):
        return self.pad_text_multiple > 1 or self.pad_text_to > 0 or any(self.extra_text_rows)

    def text_tokens_for(self, rows, uncond=False):
        """Text tokens the blocks see for a conditioning of `rows` rows."""
        before, after = self.extra_text_rows[2:] if uncond else self.extra_text_rows[:2]
        rows = max(rows, self.pad_text_to) + (-max(rows, self.pad_text_to)) % self.pad_text_multiple
        return before + rows + after

    @property
    def text_tokens(self):
        return self.text_tokens_for(self.text_len)

    def prompt_rows(self, uncond=False):
        """The rows of the text the blocks see that hold the prompt (the rest is padding or other rows)."""
        n = self.negative_real_tokens if uncond else self.real_tokens
        rows = self.text_tokens_for(self.negative_text_len if uncond else self.text_len, uncond)
        before = self.extra_text_rows[2] if uncond else self.extra_text_rows[0]
        before += self.extras.get("vision_rows", 0)     # Qwen-Image-Edit: the image's rows in front of the prompt
        return slice(rows - n, rows) if self.pad_text_to else slice(before, before + n)

    def clone(self):
        """A copy with its own ModelPatcher clone (shared weights), for tests that add patches."""
        return dataclasses.replace(self, patcher=self.patcher.clone())


# ---------------------------------------------------------------------------------------------------
# building blocks


def _generator(seed):
    return torch.Generator().manual_seed(seed)


def _randn(gen, *shape, std=1.0):
    return torch.randn(*shape, generator=gen) * std


def _init_weights(module, seed):
    """Fill every weight deterministically. ComfyUI's ops skip torch's init (the weights come from a
    checkpoint), so a fresh model holds uninitialised memory. Scales keep activations O(1) through the
    random stack: fan-in scaled matrices, unit norms, small biases and modulation tables."""
    gen = _generator(seed)
    with torch.no_grad():
        for mod_name, mod in module.named_modules():
            is_norm = "norm" in type(mod).__name__.lower()
            for name, p in mod.named_parameters(recurse=False):
                if is_norm and name in ("weight", "scale"):
                    p.fill_(1.0)
                elif is_norm and name == "bias":
                    p.zero_()
                elif name == "weight" and p.ndim >= 2:
                    p.copy_(_randn(gen, *p.shape, std=p[0].numel() ** -0.5))
                else:  # biases, Wan's modulation tables, position embeddings
                    p.copy_(_randn(gen, *p.shape, std=0.1))
            for name, b in mod.named_buffers(recurse=False):
                if name == "pos_embed":  # MMDiT registers it with torch.empty: it is a checkpoint weight
                    b.copy_(_randn(gen, *b.shape, std=0.1))


# Required parameters that newer ComfyUI versions added to a family's params dataclass, with the value
# ComfyUI's own model detection gives for the original model of that class (Flux.1, HunyuanVideo 1.0), per
# `comfy.supported_models` class. Filled only where the installed dataclass declares the field: feature
# detection, not a version check.
NEWER_REQUIRED_PARAMS = {
    "Flux": ("comfy.ldm.flux.model", "FluxParams", {"txt_ids_dims": []}),
    "HunyuanVideo": ("comfy.ldm.hunyuan_video.model", "HunyuanVideoParams",
                     {"use_cond_type_embedding": False, "vision_in_dim": None, "meanflow_sum": False}),
    "Chroma": ("comfy.ldm.chroma.model", "ChromaParams", {"txt_ids_dims": [], "vec_in_dim": None}),
    "ChromaRadiance": ("comfy.ldm.chroma_radiance.model", "ChromaRadianceParams",
                       {"txt_ids_dims": [], "vec_in_dim": None, "use_x0": False}),
}


def with_installed_params(class_name, unet_config):
    """unet_config plus the newer required fields that the installed params class of `class_name` declares."""
    import dataclasses
    import importlib

    if class_name not in NEWER_REQUIRED_PARAMS:
        return dict(unet_config)
    module, params_class, values = NEWER_REQUIRED_PARAMS[class_name]
    declared = {f.name for f in dataclasses.fields(getattr(importlib.import_module(module), params_class))}
    return {**unet_config, **{k: v for k, v in values.items() if k in declared and k not in unet_config}}


def _build_patcher(class_name, unet_config, seed, match=True):
    """match=False: a class whose detection keys on a full-size width (ZImage: dim 3840) built at a tiny one."""
    env = import_comfyui()
    mm = env.comfy.model_management
    cls = getattr(env.comfy.supported_models, class_name, None)
    if cls is None:
        host_lacks(f"comfy.supported_models.{class_name}")
    unet_config = with_installed_params(class_name, unet_config)
    assert not match or cls.matches(unet_config), f"{class_name} does not match {unet_config}"
    model_config = cls(unet_config)
    model_config.set_inference_dtype(torch.float32, None)  # what load_diffusion_model does on a CPU
    model = model_config.get_model({}, "")
    _init_weights(model.diffusion_model, seed)
    model.eval()
    patcher = env.comfy.model_patcher.ModelPatcher(
        model, load_device=mm.get_torch_device(), offload_device=mm.unet_offload_device()
    )
    return patcher, model_config


def _text(gen, rows, real, pad, width=TEXT_DIM):
    """[1, rows, width]: `real` random prompt rows then padding. pad="zeros": Wan's UMT5 output;
    pad="token": rows of an encoded pad token (T5 and CLIP), nearly equal to each other; None: no padding."""
    out = _randn(gen, 1, rows, width)
    if pad == "zeros":
        out[:, real:] = 0.0
    elif pad == "token":
        out[:, real:] = _randn(gen, 1, 1, width) + _randn(gen, 1, rows - real, width, std=0.05)
    return out


def _cond(context, **extras):
    return [[context, extras]]


# ---------------------------------------------------------------------------------------------------
# families


def _wan(family, class_name, unet_config, channels, seed, i2v=False, conds=None):
    """conds(gen, frames, h, w): the variant's own conditioning keys (what its ComfyUI nodes add to both prompts)."""
    gen = _generator(seed + 1)
    text_len = 512  # UMT5 context is zero-padded to 512 rows (min_length=512 in comfy/text_encoders/wan.py)
    frames, h, w = 2, 8, 8
    pos, neg = _text(gen, text_len, PROMPT_TOKENS, "zeros"), _text(gen, text_len, NEGATIVE_TOKENS, "zeros")
    extra = {}
    txt_layout = (Segment("text", 0, text_len, PROMPT_TOKENS),)
    if i2v:
        env = import_comfyui()
        clip = env.comfy.clip_vision.Output()  # what CLIPVisionEncode returns; WAN21.extra_conds reads it
        clip.penultimate_hidden_states = _randn(gen, 1, CLIP_VISION_TOKENS, CLIP_VISION_DIM)
        # WanImageToVideo: the encoded start image, and a mask that is 0 on the frames it fixes.
        mask = torch.ones(1, 1, frames, h, w)
        mask[:, :, :1] = 0.0
        extra = {
            "clip_vision_output": clip,
            "concat_latent_image": _randn(gen, 1, channels, frames, h, w),
            "concat_mask": mask,
        }
        txt_layout = (Segment("clip_image", 0, CLIP_VISION_TOKENS, CLIP_VISION_TOKENS),
                      Segment("text", CLIP_VISION_TOKENS, CLIP_VISION_TOKENS + text_len, PROMPT_TOKENS))
    if conds is not None:
        extra.update(conds(gen, frames, h, w))
    patcher, model_config = _build_patcher(class_name, unet_config, seed)
    return TinyModel(
        family=family, patcher=patcher, positive=_cond(pos, **extra), negative=_cond(neg, **extra),
        latent={"samples": torch.zeros(1, channels, frames, h, w)},
        unet_config=unet_config, model_config=model_config,
        double_blocks=unet_config["num_layers"], single_blocks=0,
        text_len=text_len, real_tokens=PROMPT_TOKENS,
        context_layout=(Segment("text", 0, text_len, PROMPT_TOKENS),), txt_layout=txt_layout,
        negative_text_len=text_len, negative_real_tokens=NEGATIVE_TOKENS, extras=extra,
    )


def _wan_config(model_type, in_dim, out_dim, layers=3):
    # Keys as comfy/model_detection.py detects them for Wan; text_dim is a WanModel parameter.
    return {
        "image_model": "wan2.1", "model_type": model_type, "dim": 64, "ffn_dim": 128, "num_heads": 2,
        "num_layers": layers, "in_dim": in_dim, "out_dim": out_dim, "text_dim": TEXT_DIM,
        "patch_size": (1, 2, 2), "freq_dim": 256, "window_size": (-1, -1), "qk_norm": True,
        "cross_attn_norm": True, "eps": 1e-6,
    }


def wan21_t2v(seed=0):
    return _wan("wan21_t2v", "WAN21_T2V", _wan_config("t2v", 16, 16), 16, seed)


def wan21_i2v(seed=0):
    # in_dim 36 = 16 noise + 4 mask + 16 image latent channels (model_base.WAN21.concat_cond)
    return _wan("wan21_i2v", "WAN21_I2V", _wan_config("i2v", 36, 16), 16, seed, i2v=True)


def wan21_i2v_40(seed=0):
    # The depth of Wan2.1-I2V-14B (40 blocks), where AlignVid's published block list was calibrated.
    return _wan("wan21_i2v_40", "WAN21_I2V", _wan_config("i2v", 36, 16, layers=40), 16, seed, i2v=True)


def wan_t2v_40(seed=0):
    # 40 blocks, text cross-attention only: Wan 2.1 t2v 14B, or one expert of Wan 2.2 t2v A14B.
    return _wan("wan_t2v_40", "WAN21_T2V", _wan_config("t2v", 16, 16, layers=40), 16, seed)


def wan22_i2v_a14b_expert(seed=0):
    # One expert of Wan 2.2 i2v A14B: 40 blocks, the image comes in as 20 extra latent channels, no CLIP branch.
    return _wan("wan22_i2v_a14b_expert", "WAN21_T2V", _wan_config("t2v", 36, 16, layers=40), 16, seed)


def wan22_ti2v_5b(seed=0):
    # The 5B TI2V model is t2v-shaped with the 48-channel Wan 2.2 VAE latent (supported_models.WAN22_T2V).
    return _wan("wan22_ti2v_5b", "WAN22_T2V", _wan_config("t2v", 48, 48), 48, seed)


# Wan 2.2 variants on their own model classes (comfy/ldm/wan): each adds attention calls or tokens of its own
# that are not the prompt's text cross-attention. Conditioning keys as their ComfyUI nodes set them.


def wan_vace(seed=0, layers=4):
    # VaceWanModel: VACE blocks after some main blocks, each with its own self- and text cross-attention, called
    # outside the main blocks' hooks. vace_in_dim 96 = 32 control-video latent channels + 64 mask channels.
    def conds(gen, frames, h, w):
        return {"vace_frames": [_randn(gen, 1, 32, frames, h, w)], "vace_mask": [torch.ones(1, 64, frames, h, w)],
                "vace_strength": [1.0]}

    config = {**_wan_config("vace", 16, 16, layers=layers), "vace_layers": 2, "vace_in_dim": 96}
    return _wan("wan_vace", "WAN21_Vace", config, 16, seed, conds=conds)


def wan_camera(seed=0):
    # CameraWanModel (Wan 2.1 Fun camera): the i2v block layout (CLIP image rows before the text); the camera
    # embedding (24 Plücker channels at pixel size) is added to the patches. in_dim 32 = noise + image latent.
    def conds(gen, frames, h, w):
        return {"camera_conditions": _randn(gen, 1, 24, frames, h * 8, w * 8)}

    return _wan("wan_camera", "WAN21_Camera", _wan_config("camera", 32, 16), 16, seed, i2v=True, conds=conds)


def wan22_camera(seed=0):
    # Wan 2.2 Fun camera (A14B experts): CameraWanModel with the t2v block layout (no CLIP branch), in_dim 36.
    def conds(gen, frames, h, w):
        return {"camera_conditions": _randn(gen, 1, 24, frames, h * 8, w * 8),
                "concat_latent_image": _randn(gen, 1, 16, frames, h, w)}    # + 4 mask channels

    return _wan("wan22_camera", "WAN22_Camera", _wan_config("camera_2.2", 36, 16), 16, seed, conds=conds)


def wan_humo(seed=0, layers=3):
    # HumoWanModel (1.7B layout, in_dim 16): each block adds an audio cross-attention after the text one; a
    # reference image's latent frame is appended after the video's tokens.
    def conds(gen, frames, h, w):
        return {"audio_embed": _randn(gen, 1, frames, 8, 5, 1280), "reference_latents": [_randn(gen, 1, 16, 1, h, w)]}

    return _wan("wan_humo", "WAN21_HuMo", _wan_config("humo", 16, 16, layers=layers), 16, seed, conds=conds)


def wan_animate(seed=0, face_video=False):
    # AnimateWanModel: i2v blocks (CLIP image rows before the text); WanAnimateToVideo puts the reference
    # image's latent frame first in the latent itself (no extra tokens); pose latents are added to the later
    # frames' patches, and face adapter blocks (their own attention calls, made without transformer_options)
    # run after every fifth block on the motion of the 512x512 face video (5 blocks: one face block).
    # face_video=False leaves the face video out: its motion encoder costs seconds per model call on a CPU.
    def conds(gen, frames, h, w):
        out = {"pose_video_latent": _randn(gen, 1, 16, frames - 1, h, w)}
        if face_video:
            out["face_video_pixels"] = _randn(gen, 1, 3, frames - 1, 512, 512).clamp(-1, 1)
        return out

    return _wan("wan_animate", "WAN22_Animate", _wan_config("animate", 36, 16, layers=5), 16, seed, i2v=True, conds=conds)


def wan_fun_control(seed=0):
    # Wan Fun control (1.1, with a reference image): the i2v class at in_dim 48 (noise + 16 control-video + 16
    # start-image channels), the reference frame's tokens in front of the video's (ref_conv).
    def conds(gen, frames, h, w):
        return {"concat_latent_image": _randn(gen, 1, 32, frames, h, w), "reference_latents": [_randn(gen, 1, 16, 1, h, w)]}

    config = {**_wan_config("i2v", 48, 16), "in_dim_ref_conv": 16}
    return _wan("wan_fun_control", "WAN21_FunControl2V", config, 16, seed, i2v=True, conds=conds)


def wan_s2v(seed=0, any_host=False):
    # WanModel_S2V: t2v blocks; audio injected by its own attention after some blocks; reference-image and
    # control-video latents. Its blocks get transformer_options on ComfyUI 0.12, not on 0.3.64 (there TokenFocus
    # refuses it: any_host=True builds it anyway, for that test).
    import inspect

    env = import_comfyui()
    source = inspect.getsource(env.comfy.ldm.wan.model.WanModel_S2V.forward_orig)
    if 'transformer_options=args["transformer_options"]' not in source and not any_host:
        host_lacks("transformer_options in Wan 2.2 S2V's blocks")

    def conds(gen, frames, h, w):
        return {"audio_embed": _randn(gen, 1, 25, 32, frames * 4), "reference_latents": [_randn(gen, 1, 16, 1, h, w)],
                "control_video": _randn(gen, 1, 16, frames, h, w)}

    config = {**_wan_config("s2v", 16, 16), "audio_dim": 32, "num_audio_token": 4, "enable_adain": True,
              "cond_dim": 16, "audio_inject_layers": [0, 2]}
    return _wan("wan_s2v", "WAN22_S2V", config, 16, seed, conds=conds)


def _mmdit(family, x_block_layers, qk_norm, seed, depth=3):
    # MMDiT ties width to depth: hidden = 64 * depth, heads = depth
    size = 16  # latent pixels; pos_embed_max_size (in patches) bounds it to 2 * 16
    unet_config = {
        "in_channels": 16, "out_channels": 16, "patch_size": 2, "depth": depth, "input_size": None,
        "adm_in_channels": POOLED_DIM,
        "context_embedder_config": {"target": "torch.nn.Linear",
                                    "params": {"in_features": TEXT_DIM, "out_features": 64 * depth}},
        "num_patches": size * size, "pos_embed_max_size": size, "pos_embed_scaling_factor": None,
        "x_block_self_attn_layers": list(x_block_layers),
    }
    if qk_norm:
        unet_config["qk_norm"] = "rms"
    gen = _generator(seed + 1)
    clip_rows, t5_rows = 77, 77  # SD3TokenizerL/G + T5 at min_length 77: cat([clip_lg, t5], rows)

    def context(real):
        return torch.cat([_text(gen, clip_rows, real, "token"), _text(gen, t5_rows, real, "token")], dim=1)

    pos = _cond(context(PROMPT_TOKENS), pooled_output=_randn(gen, 1, POOLED_DIM))
    neg = _cond(context(NEGATIVE_TOKENS), pooled_output=_randn(gen, 1, POOLED_DIM))
    patcher, model_config = _build_patcher("SD3", unet_config, seed)
    layout = (Segment("clip_lg", 0, clip_rows, PROMPT_TOKENS),
              Segment("t5", clip_rows, clip_rows + t5_rows, PROMPT_TOKENS))
    return TinyModel(
        family=family, patcher=patcher, positive=pos, negative=neg,
        latent={"samples": torch.zeros(1, 16, size, size)}, unet_config=unet_config, model_config=model_config,
        double_blocks=depth, single_blocks=0, text_len=clip_rows + t5_rows, real_tokens=PROMPT_TOKENS,
        context_layout=layout, txt_layout=layout, negative_text_len=clip_rows + t5_rows,
        negative_real_tokens=NEGATIVE_TOKENS, joint_order="txt_img", x_block_layers=tuple(x_block_layers),
    )


def sd3(seed=0, depth=3):
    return _mmdit("sd3", (), False, seed, depth)


def sd35_medium(seed=0):
    # SD3.5 Medium (MMDiT-X): RMS q/k norm everywhere, a second image-only attention in the first blocks.
    return _mmdit("sd35_medium", (0, 1), True, seed)


def _double_single(family, class_name, image_model, guidance, seed, video, double=2, single=2):
    heads, head_dim = 2, 32  # axes_dim must sum to head_dim
    unet_config = {
        "image_model": image_model, "in_channels": 16, "out_channels": 16, "vec_in_dim": POOLED_DIM,
        "context_in_dim": TEXT_DIM, "hidden_size": heads * head_dim, "mlp_ratio": 4.0, "num_heads": heads,
        "depth": double, "depth_single_blocks": single, "axes_dim": [8, 12, 12], "qkv_bias": True,
        "guidance_embed": True,
    }
    gen = _generator(seed + 1)
    if video:  # HunyuanVideo: Llama hidden states cropped to the prompt, so cond and uncond differ in length
        unet_config.update({"patch_size": [1, 2, 2], "theta": 256, "byt5": False, "meanflow": False})
        text_len, neg_len, pad = PROMPT_TOKENS, NEGATIVE_TOKENS, None
        latent = torch.zeros(1, 16, 2, 8, 8)
        joint_order, segment = "img_txt", "llama"
    else:  # Flux: T5 padded with pad tokens to min_length 256 (comfy/text_encoders/flux.py)
        unet_config.update({"patch_size": 2, "theta": 10000})
        text_len = neg_len = 256
        pad = "token"
        latent = torch.zeros(1, 16, 16, 16)
        joint_order, segment = "txt_img", "t5"
    pos = _cond(_text(gen, text_len, PROMPT_TOKENS, pad), pooled_output=_randn(gen, 1, POOLED_DIM),
                guidance=guidance)
    neg = _cond(_text(gen, neg_len, NEGATIVE_TOKENS, pad), pooled_output=_randn(gen, 1, POOLED_DIM),
                guidance=guidance)
    patcher, model_config = _build_patcher(class_name, unet_config, seed)
    layout = (Segment(segment, 0, text_len, PROMPT_TOKENS),)
    return TinyModel(
        family=family, patcher=patcher, positive=pos, negative=neg, latent={"samples": latent},
        unet_config=unet_config, model_config=model_config,
        double_blocks=unet_config["depth"], single_blocks=unet_config["depth_single_blocks"],
        text_len=text_len, real_tokens=PROMPT_TOKENS, context_layout=layout, txt_layout=layout,
        negative_text_len=neg_len, negative_real_tokens=NEGATIVE_TOKENS, joint_order=joint_order,
    )


def hunyuan_video(seed=0, double=2, single=2):
    return _double_single("hunyuan_video", "HunyuanVideo", "hunyuan_video", 6.0, seed, True, double, single)


def flux(seed=0, double=2, single=2):
    # Built directly: comfy.sd's Flux detection hard-codes full-size widths and would not fit tiny weights.
    return _double_single("flux", "Flux", "flux", 3.5, seed, False, double, single)


def qwen_image(seed=0):
    # QwenImageTransformer2DModel: double-stream blocks over [txt; img]; ComfyUI crops the Qwen2.5-VL chat
    # template to the prompt, so the text has no padding and cond and uncond differ in length.
    unet_config = {
        "image_model": "qwen_image", "in_channels": 64, "out_channels": 16, "num_layers": 2,
        "attention_head_dim": 32, "num_attention_heads": 2, "joint_attention_dim": TEXT_DIM,
        "axes_dims_rope": (8, 12, 12),
    }
    gen = _generator(seed + 1)
    pos = _cond(_text(gen, PROMPT_TOKENS, PROMPT_TOKENS, None))
    neg = _cond(_text(gen, NEGATIVE_TOKENS, NEGATIVE_TOKENS, None))
    patcher, model_config = _build_patcher("QwenImage", unet_config, seed)
    layout = (Segment("qwen25_7b", 0, PROMPT_TOKENS, PROMPT_TOKENS),)
    return TinyModel(
        # Qwen-Image's latent is Wan 2.1's format: [B, 16, 1 frame, H, W] (EmptySD3LatentImage gives it 4-D).
        family="qwen_image", patcher=patcher, positive=pos, negative=neg, latent={"samples": torch.zeros(1, 16, 1, 16, 16)},
        unet_config=unet_config, model_config=model_config, double_blocks=unet_config["num_layers"], single_blocks=0,
        text_len=PROMPT_TOKENS, real_tokens=PROMPT_TOKENS, context_layout=layout, txt_layout=layout,
        negative_text_len=NEGATIVE_TOKENS, negative_real_tokens=NEGATIVE_TOKENS, joint_order="txt_img",
    )


def ltxv(seed=0):
    # LTXVModel: self-attention then cross-attention to the projected T5 context in each block; ComfyUI pads the
    # T5 text to 128 rows and hands the T5 attention mask over with the conditioning.
    unet_config = {"image_model": "ltxv", "in_channels": 128, "cross_attention_dim": 64, "attention_head_dim": 32,
                   "num_attention_heads": 2, "caption_channels": TEXT_DIM, "num_layers": 2}
    gen = _generator(seed + 1)
    rows = 128

    def cond(real):
        mask = torch.zeros(1, rows, dtype=torch.long)
        mask[:, :real] = 1
        return _cond(_text(gen, rows, real, "token"), attention_mask=mask)

    pos, neg = cond(PROMPT_TOKENS), cond(NEGATIVE_TOKENS)
    patcher, model_config = _build_patcher("LTXV", unet_config, seed)
    layout = (Segment("t5", 0, rows, PROMPT_TOKENS),)
    return TinyModel(
        family="ltxv", patcher=patcher, positive=pos, negative=neg, latent={"samples": torch.zeros(1, 128, 2, 4, 4)},
        unet_config=unet_config, model_config=model_config, double_blocks=2, single_blocks=0,
        text_len=rows, real_tokens=PROMPT_TOKENS, context_layout=layout, txt_layout=layout,
        negative_text_len=rows, negative_real_tokens=NEGATIVE_TOKENS,
    )


LTX2_TEXT_ROWS = 1024  # Gemma 3's prompt rows, then the text connector's registers up to 1024 rows
LTX2_AUDIO_CHANNELS, LTX2_AUDIO_BINS = 8, 16  # fixed by LTXAVModel (its audio latent: [B, 8, frames, 16])


def ltx2(seed=0):
    # LTXAVModel: each block carries the video and the audio stream. The conditioning is the video and the audio
    # text contexts side by side in the width (each caption_channels wide), 1024 rows, no mask; the latent is the
    # video and the audio latent together (a NestedTensor, as LTXVConcatAVLatent makes it).
    env = import_comfyui()
    av_model = _module_or_none("comfy.ldm.lightricks.av_model")
    if av_model is None or not hasattr(av_model, "LTXAVModel"):
        host_lacks("LTX-2 (comfy.ldm.lightricks.av_model.LTXAVModel)")
    unet_config = {"image_model": "ltxav", "in_channels": 128, "cross_attention_dim": 64, "attention_head_dim": 32,
                   "num_attention_heads": 2, "audio_in_channels": LTX2_AUDIO_CHANNELS * LTX2_AUDIO_BINS,
                   "audio_cross_attention_dim": 32, "audio_attention_head_dim": 16, "audio_num_attention_heads": 2,
                   "caption_channels": TEXT_DIM, "num_layers": 2}
    gen = _generator(seed + 1)
    rows = LTX2_TEXT_ROWS
    pos = _cond(_text(gen, rows, rows, None, width=2 * TEXT_DIM))
    neg = _cond(_text(gen, rows, rows, None, width=2 * TEXT_DIM))
    patcher, model_config = _build_patcher("LTXAV", unet_config, seed)
    latent = env.comfy.nested_tensor.NestedTensor(
        (torch.zeros(1, 128, 2, 4, 4), torch.zeros(1, LTX2_AUDIO_CHANNELS, 5, LTX2_AUDIO_BINS)))
    layout = (Segment("gemma3", 0, rows, PROMPT_TOKENS),)
    return TinyModel(
        family="ltx2", patcher=patcher, positive=pos, negative=neg, latent={"samples": latent},
        unet_config=unet_config, model_config=model_config, double_blocks=2, single_blocks=0,
        text_len=rows, real_tokens=PROMPT_TOKENS, context_layout=layout, txt_layout=layout,
        negative_text_len=rows, negative_real_tokens=NEGATIVE_TOKENS,
    )


def kandinsky5(seed=0):
    # Kandinsky 5 (video): text blocks over the Qwen2.5-VL rows, then visual blocks with self-attention and
    # cross-attention to that text; the model marks its blocks itself (transformer_options["block_index"]). Its
    # input is the latent plus ComfyUI's concat_cond (an image latent and a mask): 33 channels, 1x2x2 patches.
    env = import_comfyui()
    module = _module_or_none("comfy.ldm.kandinsky5.model")
    if module is None or not hasattr(module, "Kandinsky5"):
        host_lacks("Kandinsky 5 (comfy.ldm.kandinsky5.model.Kandinsky5)")
    unet_config = {"image_model": "kandinsky5", "in_visual_dim": 16, "out_visual_dim": 16, "in_text_dim": TEXT_DIM,
                   "in_text_dim2": POOLED_DIM, "time_dim": 32, "model_dim": 64, "ff_dim": 128,
                   "visual_embed_dim": 33 * 4, "num_text_blocks": 1, "num_visual_blocks": 2, "axes_dims": (8, 12, 12)}
    gen = _generator(seed + 1)
    pos = _cond(_text(gen, PROMPT_TOKENS, PROMPT_TOKENS, None), pooled_output=_randn(gen, 1, POOLED_DIM))
    neg = _cond(_text(gen, NEGATIVE_TOKENS, NEGATIVE_TOKENS, None), pooled_output=_randn(gen, 1, POOLED_DIM))
    patcher, model_config = _build_patcher("Kandinsky5", unet_config, seed)
    layout = (Segment("qwen25_7b", 0, PROMPT_TOKENS, PROMPT_TOKENS),)
    return TinyModel(
        family="kandinsky5", patcher=patcher, positive=pos, negative=neg, latent={"samples": torch.zeros(1, 16, 2, 8, 8)},
        unet_config=unet_config, model_config=model_config, double_blocks=2, single_blocks=0,
        text_len=PROMPT_TOKENS, real_tokens=PROMPT_TOKENS, context_layout=layout, txt_layout=layout,
        negative_text_len=NEGATIVE_TOKENS, negative_real_tokens=NEGATIVE_TOKENS, block_access="marked",
        block_patches_work=False,
    )


def _module_or_none(name):
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


CHROMA_CONFIG = {
    "image_model": "chroma", "in_channels": 64, "out_channels": 64, "context_in_dim": TEXT_DIM,
    "hidden_size": 64, "mlp_ratio": 4.0, "num_heads": 2, "depth": 2, "depth_single_blocks": 2,
    "axes_dim": [8, 12, 12], "theta": 10000, "patch_size": 2, "qkv_bias": True, "in_dim": 64, "out_dim": 64,
    "hidden_dim": 32, "n_layers": 1,
}


def chroma(seed=0):
    # Chroma: Flux's double/single blocks with a modulation approximator instead of vec; its T5 text is not
    # padded (PixArt-style tokenizer, min_length 1). Flux's encode_adm reads pooled_output, so conds carry one.
    return _chroma("chroma", "Chroma", dict(CHROMA_CONFIG), seed, torch.zeros(1, 16, 16, 16))


def chroma_radiance(seed=0):
    # Chroma Radiance: Chroma's blocks on RGB pixels, 16 x 16 pixel patches as comfy/model_detection.py sets
    # them, decoded per patch by a small NeRF head; a 64 x 64 image is a 4 x 4 token grid.
    unet_config = {
        **CHROMA_CONFIG, "image_model": "chroma_radiance", "in_channels": 3, "out_channels": 3, "patch_size": 16,
        "nerf_hidden_size": 16, "nerf_mlp_ratio": 2, "nerf_depth": 1, "nerf_max_freqs": 4, "nerf_tile_size": 0,
        "nerf_final_head_type": "conv", "nerf_embedder_dtype": torch.float32,
    }
    return _chroma("chroma_radiance", "ChromaRadiance", unet_config, seed, torch.zeros(1, 3, 64, 64))


def _chroma(family, class_name, unet_config, seed, latent):
    gen = _generator(seed + 1)
    pos = _cond(_text(gen, PROMPT_TOKENS, PROMPT_TOKENS, None), pooled_output=_randn(gen, 1, POOLED_DIM))
    neg = _cond(_text(gen, NEGATIVE_TOKENS, NEGATIVE_TOKENS, None), pooled_output=_randn(gen, 1, POOLED_DIM))
    patcher, model_config = _build_patcher(class_name, unet_config, seed)
    layout = (Segment("t5", 0, PROMPT_TOKENS, PROMPT_TOKENS),)
    return TinyModel(
        family=family, patcher=patcher, positive=pos, negative=neg, latent={"samples": latent},
        unet_config=unet_config, model_config=model_config, double_blocks=2, single_blocks=2,
        text_len=PROMPT_TOKENS, real_tokens=PROMPT_TOKENS, context_layout=layout, txt_layout=layout,
        negative_text_len=NEGATIVE_TOKENS, negative_real_tokens=NEGATIVE_TOKENS, joint_order="txt_img",
    )


def flux2(seed=0):
    # Flux.2 dev's keys as comfy/model_detection.py gives them, tiny. Its text comes unpadded from the Mistral
    # template; model_base.Flux2 left-pads it with zero rows to 512, so the blocks see 512 rows, the prompt last.
    import dataclasses as dc

    env = import_comfyui()
    if "global_modulation" not in {f.name for f in dc.fields(env.comfy.ldm.flux.model.FluxParams)}:
        host_lacks("Flux.2 (FluxParams.global_modulation)")
    unet_config = {
        "image_model": "flux2", "in_channels": 128, "out_channels": 128, "vec_in_dim": None,
        "context_in_dim": TEXT_DIM, "hidden_size": 64, "mlp_ratio": 3.0, "num_heads": 2, "depth": 2,
        "depth_single_blocks": 2, "axes_dim": [8, 8, 8, 8], "theta": 2000, "qkv_bias": False,
        "guidance_embed": True, "patch_size": 1, "global_modulation": True, "mlp_silu_act": True,
        "ops_bias": False, "txt_ids_dims": [3], "default_ref_method": "index", "ref_index_scale": 10.0,
    }
    # The text encoders give no pooled vector (Flux's encode_adm still reads the key).
    return _unpadded_text_model("flux2", "Flux2", unet_config, seed, torch.zeros(1, 128, 8, 8), 2, 2,
                                dict(guidance=4.0, pooled_output=None), pad_text_to=512)


BYT5_DIM, SIGLIP_DIM = 1472, 1152  # fixed by HunyuanVideo's ByT5Mapper and HunyuanVideo 1.5's vision_in
QWEN_VISION_ROWS = 6   # real: one per 28x28 patch of the image as Qwen2.5-VL sees it (about 1300 at 1 MP)


def qwen_image_edit(seed=0):
    """Qwen-Image-Edit as TextEncodeQwenImageEdit conditions it (comfy/text_encoders/qwen_image.py): the chat
    template cropped before the user's turn leaves <|vision_start|>, the input image's vision tokens and
    <|vision_end|> in front of the prompt's rows; the VAE-encoded image comes as reference latents. Cond and
    uncond see the same image, so their front rows are the same."""
    model = qwen_image(seed)
    gen = _generator(seed + 2)
    front = QWEN_VISION_ROWS + 2
    vision = _randn(gen, 1, front, TEXT_DIM)
    reference = _randn(gen, 1, 16, 1, 16, 16)

    def cond(prompt):
        context, extras = prompt[0]
        return _cond(torch.cat([vision, context], dim=1), **extras, reference_latents=[reference])

    layout = (Segment("vision", 0, front, 0), Segment("qwen25_7b", front, front + PROMPT_TOKENS, PROMPT_TOKENS))
    return dataclasses.replace(
        model, family="qwen_image_edit", positive=cond(model.positive), negative=cond(model.negative),
        text_len=front + PROMPT_TOKENS, negative_text_len=front + NEGATIVE_TOKENS, context_layout=layout,
        txt_layout=layout, extras={"vision_rows": front},
    )


BYT5_ROWS, NEGATIVE_BYT5_ROWS, VISION_ROWS = 4, 3, 6


def _hunyuan_extra_rows(family, class_name, unet_config, latent, byt5, vision, seed):
    """HunyuanVideo 1.5 / HunyuanImage 2.1: Qwen2.5-VL rows as the conditioning, plus the ByT5 rows of the quoted
    text (conditioning_byt5small) and, for 1.5 i2v, SigLIP vision rows (clip_vision_output), which the model
    adds to the text stream itself."""
    env = import_comfyui()
    gen = _generator(seed + 1)
    extras = {}

    def cond(rows, byt5_rows):
        if vision:
            clip = env.comfy.clip_vision.Output()
            clip.last_hidden_state = _randn(gen, 1, VISION_ROWS, SIGLIP_DIM)
            extras["clip_vision_output"] = clip
        # Qwen2.5-VL gives no pooled vector (HunyuanVideo's encode_adm still reads the key).
        conditioning = dict(extras, pooled_output=None)
        if byt5:
            conditioning["conditioning_byt5small"] = _randn(gen, 1, byt5_rows, BYT5_DIM)
        return _cond(_text(gen, rows, rows, None), **conditioning)

    pos, neg = cond(PROMPT_TOKENS, BYT5_ROWS), cond(NEGATIVE_TOKENS, NEGATIVE_BYT5_ROWS)
    patcher, model_config = _build_patcher(class_name, unet_config, seed)
    before = VISION_ROWS * vision + BYT5_ROWS * (byt5 and vision)    # 1.5: [vision][ByT5][LLM]
    after = BYT5_ROWS * (byt5 and not vision)                        # 2.1: [LLM][ByT5]
    llm = (Segment("qwen25_7b", 0, PROMPT_TOKENS, PROMPT_TOKENS),)    # the extra rows: in extra_text_rows
    return TinyModel(
        family=family, patcher=patcher, positive=pos, negative=neg, latent={"samples": latent},
        unet_config=unet_config, model_config=model_config, double_blocks=unet_config["depth"],
        single_blocks=unet_config["depth_single_blocks"], text_len=PROMPT_TOKENS, real_tokens=PROMPT_TOKENS,
        context_layout=llm, txt_layout=llm,
        negative_text_len=NEGATIVE_TOKENS, negative_real_tokens=NEGATIVE_TOKENS, joint_order="img_txt",
        extra_text_rows=(before, after, VISION_ROWS * vision + NEGATIVE_BYT5_ROWS * (byt5 and vision),
                         NEGATIVE_BYT5_ROWS * (byt5 and not vision)),
    )


def _hunyuan_config(**params):
    return {
        "image_model": "hunyuan_video", "vec_in_dim": None, "context_in_dim": TEXT_DIM, "hidden_size": 64,
        "mlp_ratio": 4.0, "num_heads": 2, "depth": 2, "depth_single_blocks": 2, "theta": 256, "qkv_bias": True,
        "guidance_embed": False, "byt5": True, "meanflow": False, **params,
    }


def hunyuan_video_15(seed=0):
    # in_channels 65 = 32 noise + 32 image latent + 1 mask (model_base.HunyuanVideo15.concat_cond), i2v with a
    # SigLIP vision stream; blocks as model detection gives them for 1.5 (cond type embedding, vision_in).
    import dataclasses as dc

    env = import_comfyui()
    if "vision_in_dim" not in {f.name for f in dc.fields(env.comfy.ldm.hunyuan_video.model.HunyuanVideoParams)}:
        host_lacks("HunyuanVideo 1.5 (HunyuanVideoParams.vision_in_dim)")
    config = _hunyuan_config(in_channels=65, out_channels=32, patch_size=[1, 1, 1], axes_dim=[8, 12, 12],
                             use_cond_type_embedding=True, vision_in_dim=SIGLIP_DIM, meanflow_sum=True)
    return _hunyuan_extra_rows("hunyuan_video_15", "HunyuanVideo15", config, torch.zeros(1, 32, 2, 8, 8),
                               byt5=True, vision=True, seed=seed)


def hunyuan_image_21(seed=0):
    # HunyuanImage 2.1: the HunyuanVideo class with 2-D patches, 64 latent channels, ByT5 rows appended.
    config = with_installed_params("HunyuanVideo", _hunyuan_config(in_channels=64, out_channels=64, patch_size=[1, 1],
                                                                    axes_dim=[16, 16]))
    return _hunyuan_extra_rows("hunyuan_image_21", "HunyuanImage21", config, torch.zeros(1, 64, 8, 8),
                               byt5=True, vision=False, seed=seed)


def _unpadded_text_model(family, class_name, unet_config, seed, latent, doubles, singles, cond_extras=None,
                         match=True, **fields):
    """A joint [txt; img] model conditioned by unpadded text rows (cond and uncond differ in length)."""
    gen = _generator(seed + 1)
    extras = cond_extras or {}
    pos = _cond(_text(gen, PROMPT_TOKENS, PROMPT_TOKENS, None), **extras)
    neg = _cond(_text(gen, NEGATIVE_TOKENS, NEGATIVE_TOKENS, None), **extras)
    patcher, model_config = _build_patcher(class_name, unet_config, seed, match=match)
    layout = (Segment("text", 0, PROMPT_TOKENS, PROMPT_TOKENS),)
    return TinyModel(
        family=family, patcher=patcher, positive=pos, negative=neg, latent={"samples": latent},
        unet_config=unet_config, model_config=model_config, double_blocks=doubles, single_blocks=singles,
        text_len=PROMPT_TOKENS, real_tokens=PROMPT_TOKENS, context_layout=layout, txt_layout=layout,
        negative_text_len=NEGATIVE_TOKENS, negative_real_tokens=NEGATIVE_TOKENS, joint_order="txt_img", **fields,
    )


def _next_dit(family, class_name, unet_config, seed, match=True):
    # NextDiT (Z-Image, Lumina 2): the caption is unpadded text rows, cond and uncond differ in length. Its
    # blocks are marked by the model itself (transformer_options["block_index"]), with a patch after each.
    import inspect

    env = import_comfyui()
    source = inspect.getsource(env.comfy.ldm.lumina.model.NextDiT._forward)
    if '"block_index"' not in source:
        host_lacks("block marks (transformer_options['block_index']) and post-block patches in NextDiT")
    return _unpadded_text_model(family, class_name, unet_config, seed, torch.zeros(1, 16, 16, 16),
                                unet_config["n_layers"], 0, match=match, block_access="marked",
                                pad_text_multiple=unet_config.get("pad_tokens_multiple") or 1)


def z_image(seed=0):
    # Z-Image's keys as comfy/model_detection.py gives them, at dim 256 (its modulation takes a 256-wide
    # timestep embedding: the least width). supported_models.ZImage matches only dim 3840: built unmatched.
    unet_config = {
        "image_model": "lumina2", "patch_size": 2, "in_channels": 16, "dim": 256, "cap_feat_dim": TEXT_DIM,
        "n_layers": 2, "n_refiner_layers": 1, "qk_norm": True, "n_heads": 2, "n_kv_heads": 2,
        "axes_dims": [32, 48, 48], "axes_lens": [1536, 512, 512], "rope_theta": 256.0,
        "ffn_dim_multiplier": 8.0 / 3.0, "multiple_of": 32, "z_image_modulation": True, "time_scale": 1000.0,
        "pad_tokens_multiple": 32,
    }
    return _next_dit("z_image", "ZImage", unet_config, seed, match=False)


def lumina2(seed=0):
    # Lumina 2 (and Neta, same architecture): grouped-query attention (fewer k/v heads), no caption padding.
    unet_config = {
        "image_model": "lumina2", "patch_size": 2, "in_channels": 16, "dim": 64, "cap_feat_dim": TEXT_DIM,
        "n_layers": 2, "n_refiner_layers": 1, "qk_norm": True, "n_heads": 2, "n_kv_heads": 1,
        "axes_dims": [8, 12, 12], "axes_lens": [300, 512, 512], "rope_theta": 10000.0, "ffn_dim_multiplier": 4.0,
        "multiple_of": 32,
    }
    return _next_dit("lumina2", "Lumina2", unet_config, seed)


FAMILIES = {f.__name__: f for f in (wan21_t2v, wan21_i2v, wan22_ti2v_5b, sd3, sd35_medium, hunyuan_video, flux,
                                    wan21_i2v_40, wan_t2v_40, wan22_i2v_a14b_expert, qwen_image, chroma, chroma_radiance,
                                    z_image, lumina2, flux2, hunyuan_video_15, hunyuan_image_21, ltxv, ltx2,
                                    kandinsky5, wan_vace, wan_camera, wan22_camera, wan_humo, wan_animate,
                                    wan_fun_control, wan_s2v, qwen_image_edit)}


def build(family, seed=0, **depth):
    """A fresh TinyModel of `family` (a key of FAMILIES); `seed` picks the weights and the conds; `depth`:
    depth= (SD3) or double=, single= (Flux, HunyuanVideo) for a deeper model than the default."""
    return FAMILIES[family](seed, **depth)


def sample(model, positive=None, negative=None, latent=None, steps=3, cfg=4.0, seed=0, sampler="euler",
           scheduler="simple", denoise=1.0):
    """Sample through ComfyUI's KSampler path (nodes.common_ksampler) and return the output latent.

    `model` is a TinyModel (its own conds and latent are the defaults) or a bare ModelPatcher. The
    default cfg > 1 makes every step evaluate both cond and uncond."""
    env = import_comfyui()
    patcher = getattr(model, "patcher", model)
    positive = model.positive if positive is None else positive
    negative = model.negative if negative is None else negative
    latent = model.latent if latent is None else latent
    (out,) = env.nodes.common_ksampler(patcher, seed, steps, cfg, sampler, scheduler, positive, negative,
                                       latent, denoise=denoise)
    return flat(out["samples"])


def flat(samples):
    """Several latents sampled together (LTX-2: video and audio, a NestedTensor) as one tensor [B, all values], so
    a test compares all of them at once; a plain latent as it is."""
    if hasattr(samples, "tensors"):
        return torch.cat([t.reshape(t.shape[0], -1) for t in samples.tensors], dim=1)
    return samples
