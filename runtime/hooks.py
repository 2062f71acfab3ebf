"""The runtime's three hooks into ComfyUI, all public extension points.

- `apply_model_wrapper` (WrappersMP.APPLY_MODEL): once per model call, outside any compiled region, reads the
  sigma and decides which interventions are active; the result travels down as a plain StepPlan.
- `BlockHook` (patches_replace["dit"][(kind, i)]): marks the block it runs in, lets interventions edit the
  block's inputs, then calls whatever was installed there before it, or the original block.
- `AttentionHook` (transformer_options["optimized_attention_override"]): edits q/k of the attention calls
  inside hooked blocks, then calls the previous override, or the backend ComfyUI chose.
- `PostBlockHook` (patches["double_block"]): on models that mark their blocks themselves and offer only a
  patch after each block (Z-Image / Lumina 2), edits the inputs of the next block; the attention hook then
  places calls by the model's own transformer_options["block_index"].
- `outer_sample_wrapper` (WrappersMP.OUTER_SAMPLE): gives each sampling run fresh caches, checks the prompts,
  decides from the guider whether a reference pass must stand in for the uncond pass, and logs what was
  touched when it ends.
"""
from __future__ import annotations

import dataclasses
import math

import torch

from ..core.blocklist import DOUBLE
from .adapters import MARKED
from .attention_call import AttentionCall
from .state import (
    BLOCK_KEY, CONFIG_KEY, HOOK_KEY, INSIDE_KEY, NEGATIVE, NEGATIVE_CONDS_KEY, OTHER, PASS_KEY, POSITIVE, RUN_KEY,
    STEP_KEY, UNCOND_THIS_STEP,
    BlockContext, RunState, StepPlan, log, roles_of_chunks,
)

OVERRIDE_KEY = "optimized_attention_override"
# Attributes ComfyUI (or its memory estimate) reads from an attention override: carried over from the
# override TokenFocus wraps, so wrapping it changes nothing ComfyUI concludes about it.
CARRIED_ATTRIBUTES = ("memory_efficient", "container_function")


def outer_sample_wrapper(executor, *args, **kwargs):
    guider = executor.class_obj
    options = guider.model_options.setdefault("transformer_options", {})
    config = options.get(CONFIG_KEY)
    _check_prompts(config, guider)
    run = RunState()
    sigmas = args[3] if len(args) > 3 else kwargs.get("sigmas")
    noise = args[0] if args else kwargs.get("noise")
    _start_run(run, config, guider, sigmas, _grid_shape(tuple(getattr(noise, "shape", ())), kwargs.get("latent_shapes")))
    previous = options.get(RUN_KEY)
    options[RUN_KEY] = run
    try:
        return executor(*args, **kwargs)
    finally:
        if previous is None:
            options.pop(RUN_KEY, None)
        else:
            options[RUN_KEY] = previous
        _report(run, config, options, sigmas)


def _grid_shape(shape: tuple, latent_shapes) -> tuple:
    """The shape of the latent whose tokens the blocks attend as the image: where ComfyUI packs several latents
    into one flat input (LTX-2: video, then audio) and names their shapes (`latent_shapes`), the first one's, with
    this input's batch size."""
    if not latent_shapes or len(latent_shapes) < 2 or not shape:
        return shape
    return (shape[0],) + tuple(latent_shapes[0])[1:]


def _check_prompts(config, guider) -> None:
    """Errors about the prompt come before the first step, not in the middle of sampling."""
    if config is None:
        return
    for cond in getattr(guider, "conds", {}).get("positive", []) or []:
        context = cond.get("cross_attn")
        if context is not None:
            for iv in config.interventions:
                iv.check_prompt(context.shape[1])


def _start_run(run: RunState, config, guider, sigmas, latent_shape: tuple) -> None:
    """What the run needs to know before its first step: which conditioning each cond uuid is (every
    guider keeps the positive prompt under "positive"), the model_sampling that really samples, what each
    intervention takes from the positive prompt, and how many of the run's steps each range holds."""
    for key, conds in (getattr(guider, "conds", None) or {}).items():
        role = POSITIVE if key == "positive" else NEGATIVE if key == "negative" else OTHER
        for cond in conds or []:
            if isinstance(cond, dict) and cond.get("uuid") is not None:
                run.roles[cond["uuid"]] = role
    try:
        run.percent_to_sigma = guider.model_patcher.get_model_object("model_sampling").percent_to_sigma
    except AttributeError:
        run.percent_to_sigma = None
    if config is None:
        return
    positive = (getattr(guider, "conds", None) or {}).get("positive", []) or []
    run.cache[NEGATIVE_CONDS_KEY] = (getattr(guider, "conds", None) or {}).get("negative", []) or []
    for iv in config.interventions:
        iv.start_run(positive, run, latent_shape)
    _plan_reference(run, config, guider)
    if sigmas is None:
        return
    steps = [float(s) for s in sigmas.reshape(-1)[:-1]]
    for iv in config.interventions:
        in_range = sum(run.steps_for(iv.steps).contains(s) for s in steps)
        run.steps_in_range[iv.label] = max(in_range, run.steps_in_range.get(iv.label, 0))


REFERENCE_KEY = "reference prompt"      # run cache: (the run's negative for its first step, the node's)
UNCOND_SIGMA = "uncond sigma"           # run cache: the sigma of the latest uncond text (pass or reference)


def _plan_reference(run: RunState, config, guider) -> None:
    """Decided once per run, for the interventions that need the uncond text (Residual Alignment): which
    prompt a model call with no uncond sample gets run as one. With an uncond pass in the run (CFG > 1),
    the run's own negative, and only at the first step where cond ran before it (split batches): the
    run's uncond then acts from the first step. With none (CFG 1), the node's negative input, every step
    (also where a guider of its own was expected to run an uncond pass and ran none in the first step)."""
    wanting = [iv for iv in config.interventions if iv.needs_uncond_text]
    if not wanting:
        return
    own = next((iv.reference_prompt for iv in wanting if iv.reference_prompt is not None), None)
    negative = [c for c in (getattr(guider, "conds", None) or {}).get("negative") or [] if c.get("cross_attn") is not None]
    if _runs_uncond(guider) and negative:
        run.cache[REFERENCE_KEY] = (reference_from(negative[0]["cross_attn"], negative[0]), own)
        if own is not None:
            log.info("TokenFocus: %s: the sampler runs an uncond pass; aligning to it (the negative input is "
                     "used only at CFG 1)", ", ".join(iv.label for iv in wanting))
        return
    if own is not None:
        run.cache[REFERENCE_KEY] = (None, own)
        log.info("TokenFocus: no uncond pass in this run (CFG 1): one extra model pass per step on the negative "
                 "input gives %s its reference", ", ".join(iv.label for iv in wanting))


def _runs_uncond(guider) -> bool:
    """Will the guider run an uncond pass? ComfyUI's own CFG skips it at cfg 1 (unless a node disabled that);
    a guider of its own that has a negative prompt is taken to run it."""
    import comfy.samplers

    if not (getattr(guider, "conds", None) or {}).get("negative"):
        return False
    cfg = getattr(guider, "cfg", None)
    standard = getattr(type(guider), "predict_noise", None) is getattr(comfy.samplers.CFGGuider, "predict_noise", None)
    skips_cfg1 = not (getattr(guider, "model_options", None) or {}).get("disable_cfg1_optimization", False)
    return not (standard and isinstance(cfg, (int, float)) and math.isclose(cfg, 1.0) and skips_cfg1)


def reference_from(context, extras: dict):
    """A prompt as a reference pass takes it, (context, {model input: tensor}): its pooled vector goes where
    the model takes one ('y': SD3, Flux, HunyuanVideo), and so does its text mask (HunyuanVideo)."""
    inputs = {"y": extras.get("pooled_output"), "attention_mask": extras.get("attention_mask")}
    return context, {key: value for key, value in inputs.items() if value is not None}


def _reference_now(run: RunState, sigma: float):
    """The reference prompt this model call (with no uncond sample) runs first, or None: once per step
    (conds split into several calls share it)."""
    planned = run.cache.get(REFERENCE_KEY)
    first = run.cache.setdefault("first sigma", sigma)
    if planned is None or run.cache.get("saw uncond") or run.cache.get(UNCOND_SIGMA) == sigma:
        return None
    runs_negative, own = planned
    if runs_negative is not None and sigma == first:
        return runs_negative
    return own


def _report(run: RunState, config, options: dict, sigmas) -> None:
    """One line per intervention that changed something, counted where the change was made; one warning
    naming the reason for each that was set up to act and changed nothing."""
    from ..core.blocklist import format_blocks

    for label, (blocks, touched_sigmas) in run.touched.items():
        log.info(
            "TokenFocus: %s acted on blocks %s at %d sigma(s) from %.4g to %.4g (%d edits: attention calls, "
            "block inputs or recordings)",
            label, format_blocks(blocks), len(touched_sigmas), max(touched_sigmas), min(touched_sigmas),
            run.edits.get(label, 0),
        )
    if config is None:
        return
    for label in dict.fromkeys(iv.label for iv in config.interventions):
        if label not in run.touched:
            log.warning("TokenFocus: %s changed nothing in this sampling run: %s.", label,
                        _why_nothing(run, label, config, options, sigmas))


def _why_nothing(run: RunState, label: str, config, options: dict, sigmas) -> str:
    if run.steps_in_range.get(label, 1) == 0:
        ranges = ", ".join(
            f"{r.start_percent:g}-{r.end_percent:g} = sigma {r.sigma_start:.4g} down to {r.sigma_end:.4g}"
            for r in {run.steps_for(iv.steps) for iv in config.interventions if iv.label == label})
        return (f"no step of this run is inside its range ({ranges}; this run samples sigma "
                f"{float(sigmas.reshape(-1)[0]):.4g} down to {float(sigmas.reshape(-1)[-1]):.4g}: a denoise below 1 "
                "or a later start step can leave the range out)")
    reason = run.reasons.get(label)
    if reason == "override replaced":
        return ("its attention edits never reached an attention call: another node replaced the attention "
                "override (optimized_attention_override) in a way TokenFocus could not wrap")
    if reason is not None:
        return reason
    if not run.active_by_label.get(label):
        if any(iv.extra_pass for iv in config.interventions if iv.label == label):
            return ("its extra pass never ran: every step in its range was skipped by a cache (LazyCache, "
                    "EasyCache), or the guider runs no post-CFG function (BasicGuider)")
        return "every step in its range was cached: a cache (LazyCache, EasyCache) skipped the model"
    if not run.reached_by_label.get(label):
        if "easycache" in options:
            return "every step in its range was cached: EasyCache/LazyCache skipped the model at those steps"
        return ("no transformer block ran through TokenFocus's hooks: another pack replaced the model's "
                "forward (e.g. TeaCache) or its block patches")
    return "its blocks ran, but no attention call or text in them was one it acts on (e.g. no positive-prompt sample)"


def apply_model_wrapper(executor, x, t, c_concat=None, c_crossattn=None, control=None, transformer_options=None, **kwargs):
    options = transformer_options if transformer_options is not None else {}
    config = options.get(CONFIG_KEY)
    if config is None or STEP_KEY in options:
        return executor(x, t, c_concat, c_crossattn, control, transformer_options, **kwargs)
    sigma = float(t.reshape(-1)[0])
    run = options.get(RUN_KEY) or RunState()
    # An extra pass (Importance Guidance's) runs the model as patched, plus what only that pass adds.
    this_pass = options.get(PASS_KEY, "")
    active = tuple(iv for iv in config.interventions
                   if iv.extra_pass in ("", this_pass) and run.steps_for(iv.steps).contains(sigma))
    if not active:
        return executor(x, t, c_concat, c_crossattn, control, transformer_options, **kwargs)
    run.active_calls += 1
    for label in {iv.label for iv in active}:
        run.active_by_label[label] = run.active_by_label.get(label, 0) + 1
    plan = StepPlan(
        sigma=sigma,
        active=active,
        run=run,
        inputs=config.adapter.inspect_inputs(c_crossattn, kwargs),
        chunk_roles=roles_of_chunks(run, options.get("cond_or_uncond"), options.get("uuids")),
        uuids=tuple(options.get("uuids") or ()),
        latent_shape=_grid_shape(tuple(x.shape), kwargs.get("latent_shapes")),
    )
    for iv in active:
        iv.prepare_step(plan, x.device)
    if any(plan.negative_samples(x.shape[0])):
        run.cache["saw uncond"] = True
        run.cache[UNCOND_SIGMA] = sigma
    elif any(iv.needs_uncond_text for iv in active):
        reference = None if this_pass else _reference_now(run, sigma)
        if reference is not None:
            _reference_pass(executor, config.adapter, plan, reference, x, t, c_concat, c_crossattn, options, kwargs)
            run.cache[UNCOND_SIGMA] = sigma
        # Uncond text from this very step (an uncond batch or a reference pass before this call) is exact.
        plan.scratch[UNCOND_THIS_STEP] = run.cache.get(UNCOND_SIGMA) == sigma
    options[STEP_KEY] = plan
    override = options.get(OVERRIDE_KEY)
    hook = _attention_hook_for_run(run, options) if any(iv.acts_on_attention for iv in active) else None
    if hook is not None:
        options[OVERRIDE_KEY] = hook
    try:
        return executor(x, t, c_concat, c_crossattn, control, transformer_options, **kwargs)
    finally:
        options.pop(STEP_KEY, None)
        if hook is not None:
            if override is None:
                options.pop(OVERRIDE_KEY, None)
            else:
                options[OVERRIDE_KEY] = override
        plan.finish()


def _attention_hook_for_run(run: RunState, options: dict):
    """The override this model call runs with. A node placed after TokenFocus may have set its own
    override without calling the one it found (a sage-attention node, ComfyUI's ModelAttentionBackend):
    then TokenFocus wraps that one for the call, so both still act. The wrapper is made once per run and
    reused, so a compiled model sees the same object at every step (at most one recompile per run)."""
    current, installed = options.get(OVERRIDE_KEY), options.get(HOOK_KEY)
    if installed is None or current is None:
        return installed        # never installed here (nothing to restore), or removed: put it back
    key = ("attention override", id(current))
    cached = run.cache.get(key)
    if cached is None or cached[0] is not current:
        hook = current if _reaches_hook(current) else AttentionHook(inner=current)
        run.cache[key] = cached = (current, hook)
    return cached[1]


def _reaches_hook(fn, depth: int = 0) -> bool:
    """Whether an override holds a TokenFocus AttentionHook to call on (it chains): looked for in what a
    Python wrapper keeps it in (closure, functools.partial, bound method, attributes), a few levels deep."""
    if isinstance(fn, AttentionHook):
        return True
    if depth >= 4 or fn is None:
        return False
    found = []
    for cell in getattr(fn, "__closure__", None) or ():
        try:
            found.append(cell.cell_contents)
        except ValueError:          # an empty cell
            continue
    found += [getattr(fn, name, None) for name in ("func", "__wrapped__", "__self__", "inner", "previous")]
    found += list(getattr(fn, "args", None) or ()) if isinstance(getattr(fn, "args", None), tuple) else []
    attributes = getattr(fn, "__dict__", None)
    if isinstance(attributes, dict):
        found += list(attributes.values())
    owner = getattr(fn, "__self__", None)       # a bound method's object keeps what it wraps as attributes
    return any((callable(f) or f is owner) and f is not fn and _reaches_hook(f, depth + 1) for f in found)


def _reference_pass(executor, adapter, plan, reference, x, t, c_concat, c_crossattn, options, kwargs) -> None:
    """Run the model once more on a reference prompt as an uncond sample (no uncond pass runs at CFG 1),
    so that the interventions see its text at every block; the output is dropped."""
    context, extras = reference
    batch = x.shape[0]

    def first(value):
        return value[:1] if isinstance(value, torch.Tensor) and value.ndim and value.shape[0] == batch else value

    ref_kwargs = {key: first(value) for key, value in kwargs.items()}
    if "attention_mask" in ref_kwargs:  # a text mask belongs to its own prompt's rows
        ref_kwargs["attention_mask"] = None
    for key, value in extras.items():   # the reference's own pooled vector / text mask, where the model takes one
        if key in ref_kwargs:
            like = ref_kwargs[key] if isinstance(ref_kwargs[key], torch.Tensor) else x
            ref_kwargs[key] = value.to(device=like.device, dtype=like.dtype if value.is_floating_point() else value.dtype)
    context = context.to(device=c_crossattn.device, dtype=c_crossattn.dtype) if c_crossattn is not None else context
    ref_plan = dataclasses.replace(
        plan, inputs=adapter.inspect_inputs(context, ref_kwargs), chunk_roles=(NEGATIVE,), uuids=(),
        latent_shape=(1,) + tuple(plan.latent_shape[1:]), scratch={})
    for iv in plan.active:      # what each intervention prepares per call (e.g. the prompts' real-row masks)
        iv.prepare_step(ref_plan, x.device)
    ref_options = {**options, STEP_KEY: ref_plan, "cond_or_uncond": [1], "uuids": []}
    executor(x[:1], t[:1], first(c_concat), context, None, ref_options, **ref_kwargs)
    ref_plan.finish()


class BlockHook:
    """Installed on one (kind, index) block key; `inner` is whatever patch sat there before (or None)."""

    def __init__(self, block: tuple, inner=None):
        self.block = block
        self.inner = inner

    def __call__(self, args: dict, extra: dict):
        options = args.get("transformer_options") or {}
        plan = options.get(STEP_KEY)
        outer = options.get(BLOCK_KEY)
        if plan is None or (outer is not None and outer.block == self.block):
            # Outside an active step, or a second TokenFocus hook nested under a foreign patch: pass through.
            return self._inner(args, extra)
        adapter = options[CONFIG_KEY].adapter
        text_len = adapter.block_text_len(self.block, args)
        if text_len is not None:
            plan.scratch["text_len"] = text_len
        else:
            text_len = plan.scratch.get("text_len")
        here = tuple(iv for iv in plan.active if self.block in iv.blocks)
        if not here:
            return self._inner(args, extra)
        ctx = BlockContext(block=self.block, interventions=here, plan=plan, adapter=adapter, text_len=text_len,
                           image_len=adapter.block_image_len(args))
        plan.scratch.setdefault("reached", set()).update(iv.label for iv in here)
        for iv in here:
            if iv.acts_on_block_inputs:
                edited = iv.edit_block_inputs(args, ctx)
                if edited is not args:
                    plan.note_touch(iv.label, self.block)
                args = edited
            if iv.acts_on_attention:
                if torch.compiler.is_compiling():
                    # Inside a compiled graph the attention call may run under a checkpoint (SD3), where
                    # nothing made outside it may change: there an attention edit counts per block entered.
                    plan.note_touch(iv.label, self.block)
                else:
                    plan.scratch.setdefault("attention_expected", set()).add(iv.label)
        options[BLOCK_KEY] = ctx
        try:
            out = self._inner(args, extra)
            for edit in ctx.output_edits:
                out = edit(out)
            return out
        finally:
            if outer is None:
                options.pop(BLOCK_KEY, None)
            else:
                options[BLOCK_KEY] = outer

    def _inner(self, args, extra):
        if self.inner is not None:
            return self.inner(args, extra)
        return extra["original_block"](args)


class AttentionHook:
    """The attention override; `inner` is the override that was installed before it (or None)."""

    def __init__(self, inner=None):
        self.inner = inner
        for name in CARRIED_ATTRIBUTES:
            if hasattr(inner, name):
                setattr(self, name, getattr(inner, name))
        if inner is None:
            # Nothing wrapped: TokenFocus calls the backend ComfyUI chose, so it says what ComfyUI says of it.
            import comfy.ldm.modules.attention as attention

            if hasattr(attention, "optimized_attention_memory_efficient"):
                self.memory_efficient = attention.optimized_attention_memory_efficient

    def __call__(self, func, *args, **kwargs):
        options = kwargs.get("transformer_options")
        ctx = options.get(BLOCK_KEY) if isinstance(options, dict) else None
        if ctx is None and isinstance(options, dict) and len(args) >= 3:
            ctx = _marked_block(options, _query_tokens(args, kwargs))
        if ctx is None or options.get(INSIDE_KEY) or len(args) < 3:
            return self._inner(func, args, kwargs)
        compiling = torch.compiler.is_compiling()
        if not compiling:
            ctx.plan.scratch["attention_reached"] = True
        adapter = options[CONFIG_KEY].adapter
        call_index = None
        if adapter.counts_calls:
            call_index = ctx.calls
            ctx.calls += 1
        kind = adapter.classify(ctx, call_index, _query_tokens(args, kwargs))
        if kind is None:
            return self._inner(func, args, kwargs)
        # The call goes on with options marked as edited: an inner override that calls attention again
        # with them is passed through. A marked copy, not a flag set and reset on shared state, which
        # torch.compile could not trace under the checkpoint ComfyUI puts around a replaced SD3 block.
        kwargs = dict(kwargs, transformer_options={**options, INSIDE_KEY: True})
        call = AttentionCall(kind, ctx, args, kwargs)
        for iv in ctx.interventions:
            if iv.acts_on_attention:
                call.changed = False
                iv.edit_attention(call)
                if call.changed and not compiling:
                    ctx.plan.note_touch(iv.label, ctx.block)
        return call.run(lambda call_args, call_kwargs: self._inner(func, call_args, call_kwargs))

    def _inner(self, func, args, kwargs):
        if self.inner is not None:
            return self.inner(func, *args, **kwargs)
        return func(*args, **kwargs)


def _marked_block(options: dict, query_tokens: int):
    """The block context of an attention call on a model that marks its blocks itself (ComfyUI sets
    transformer_options["block_index"] there: feature-detected by its presence), or None."""
    plan = options.get(STEP_KEY)
    config = options.get(CONFIG_KEY)
    index = options.get("block_index")
    if plan is None or config is None or index is None or config.adapter.block_access != MARKED:
        return None
    block = (DOUBLE, int(index))
    here = tuple(iv for iv in plan.active if block in iv.blocks and iv.acts_on_attention)
    if not here:
        return None
    if config.adapter.counts_calls:
        # The calls of one block share its context, which counts them (Kandinsky 5: self, then cross-attention).
        current = plan.scratch.get("marked block")
        if current is not None and current.block == block:
            return current
    text_len = plan.inputs.text_tokens
    for iv in here:
        plan.note_touch(iv.label, block)
    ctx = BlockContext(block=block, interventions=here, plan=plan, adapter=config.adapter, text_len=text_len,
                       image_len=query_tokens if text_len is None else query_tokens - text_len)
    if config.adapter.counts_calls:
        plan.scratch["marked block"] = ctx
    return ctx


class PostBlockHook:
    """A patch after each block (patches["double_block"]), for models that offer no block-replace hook: edits
    the text the next block receives, as BlockHook edits a block's inputs elsewhere. Block 0's input is out of
    its reach."""

    def __call__(self, args: dict) -> dict:
        options = args.get("transformer_options") or {}
        plan = options.get(STEP_KEY)
        config = options.get(CONFIG_KEY)
        if plan is None or config is None or args.get("txt") is None:
            return {}
        block = (DOUBLE, int(args["block_index"]) + 1)
        here = tuple(iv for iv in plan.active if block in iv.blocks and iv.acts_on_block_inputs)
        if not here:
            return {}
        ctx = BlockContext(block=block, interventions=here, plan=plan, adapter=config.adapter,
                           text_len=args["txt"].shape[1], image_len=args["img"].shape[1])
        original = args["txt"]
        edited = {"txt": original, "img": args["img"], "transformer_options": options}
        for iv in here:
            edited = iv.edit_block_inputs(edited, ctx)
            plan.note_touch(iv.label, block)
        return {} if edited["txt"] is original else {"txt": edited["txt"]}


def _query_tokens(args: tuple, kwargs: dict) -> int:
    """Number of queries: q is [B, L, H*D], or [B, H, L, D] with skip_reshape."""
    q = args[0]
    return q.shape[2] if kwargs.get("skip_reshape", False) else q.shape[1]
