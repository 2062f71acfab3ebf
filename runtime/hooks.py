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
- `outer_sample_wrapper` (WrappersMP.OUTER_SAMPLE): gives each sampling run fresh caches and logs what was
  touched when it ends.
"""
from __future__ import annotations

from ..core.blocklist import DOUBLE
from .attention_call import AttentionCall
from .adapters import MARKED
from .state import BLOCK_KEY, CONFIG_KEY, INSIDE_KEY, PASS_KEY, RUN_KEY, STEP_KEY, BlockContext, RunState, StepPlan, log


def outer_sample_wrapper(executor, *args, **kwargs):
    guider = executor.class_obj
    options = guider.model_options.setdefault("transformer_options", {})
    _check_prompts(options.get(CONFIG_KEY), guider)
    run = RunState()
    previous = options.get(RUN_KEY)
    options[RUN_KEY] = run
    try:
        return executor(*args, **kwargs)
    finally:
        if previous is None:
            options.pop(RUN_KEY, None)
        else:
            options[RUN_KEY] = previous
        _log_touched(run)


def _check_prompts(config, guider) -> None:
    """Errors about the prompt come before the first step, not in the middle of sampling."""
    if config is None:
        return
    for cond in getattr(guider, "conds", {}).get("positive", []) or []:
        context = cond.get("cross_attn")
        if context is not None:
            for iv in config.interventions:
                iv.check_prompt(context.shape[1])


def _log_touched(run: RunState) -> None:
    from ..core.blocklist import format_blocks

    if run.active_calls and not run.touched:
        log.warning(
            "TokenFocus: settings were active in %d model call(s) but no transformer block ran through the "
            "TokenFocus hooks, so nothing was changed. Another pack may have replaced the model's forward "
            "(e.g. TeaCache), or a cache skipped every step.", run.active_calls,
        )
    for label, (blocks, sigmas) in run.touched.items():
        log.info(
            "TokenFocus: %s acted on blocks %s at %d sigma(s) from %.4g to %.4g",
            label, format_blocks(blocks), len(sigmas), max(sigmas), min(sigmas),
        )


def apply_model_wrapper(executor, x, t, c_concat=None, c_crossattn=None, control=None, transformer_options=None, **kwargs):
    options = transformer_options if transformer_options is not None else {}
    config = options.get(CONFIG_KEY)
    if config is None or STEP_KEY in options:
        return executor(x, t, c_concat, c_crossattn, control, transformer_options, **kwargs)
    sigma = float(t.reshape(-1)[0])
    # An extra pass (Importance Guidance's) runs the model as patched, plus what only that pass adds.
    this_pass = options.get(PASS_KEY, "")
    active = tuple(iv for iv in config.interventions if iv.extra_pass in ("", this_pass) and iv.steps.contains(sigma))
    if not active:
        return executor(x, t, c_concat, c_crossattn, control, transformer_options, **kwargs)
    run = options.get(RUN_KEY) or RunState()
    run.active_calls += 1
    plan = StepPlan(
        sigma=sigma,
        active=active,
        run=run,
        inputs=config.adapter.inspect_inputs(c_crossattn, kwargs),
        cond_or_uncond=tuple(options.get("cond_or_uncond", ())),
        latent_shape=tuple(x.shape),
    )
    for iv in active:
        iv.prepare_step(plan, x.device)
    options[STEP_KEY] = plan
    try:
        return executor(x, t, c_concat, c_crossattn, control, transformer_options, **kwargs)
    finally:
        options.pop(STEP_KEY, None)
        plan.finish()


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
        image = args.get("img")
        ctx = BlockContext(block=self.block, interventions=here, plan=plan, adapter=adapter, text_len=text_len,
                           image_len=image.shape[1] if image is not None else None)
        for iv in here:
            if iv.acts_on_block_inputs:
                args = iv.edit_block_inputs(args, ctx)
            plan.note_touch(iv.label, self.block)
        options[BLOCK_KEY] = ctx
        try:
            return self._inner(args, extra)
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

    def __call__(self, func, *args, **kwargs):
        options = kwargs.get("transformer_options")
        ctx = options.get(BLOCK_KEY) if isinstance(options, dict) else None
        if ctx is None and isinstance(options, dict) and len(args) >= 3:
            ctx = _marked_block(options, _query_tokens(args, kwargs))
        if ctx is None or options.get(INSIDE_KEY) or len(args) < 3:
            return self._inner(func, args, kwargs)
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
                iv.edit_attention(call)
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
    text_len = plan.inputs.text_tokens
    for iv in here:
        plan.note_touch(iv.label, block)
    return BlockContext(block=block, interventions=here, plan=plan, adapter=config.adapter, text_len=text_len,
                        image_len=None if text_len is None else query_tokens - text_len)


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
