"""Attention Inspector: record attention to the prompt's tokens during sampling, then draw it.

Two nodes, because a node cannot show a sampling run that happens after it executes:
  Attention Inspector (on the model, like the other TokenFocus nodes) -> MODEL + INSPECTOR handle
  Attention Inspector View (after sampling: fed the LATENT or the decoded IMAGE) -> pictures + summary
"""
from __future__ import annotations


import numpy as np
import torch
from comfy_api.latest import io

from ..core import charts
from ..core.blocklist import format_blocks
from ..core.inspector_view import (
    DEFAULT_MAX_TOKENS, MAX_PICKS, block_name, check_pick_spec, default_picks, display_label, gather, index_labels,
    parse_picks,
)
from ..runtime.inspector import AttentionInspect, InspectorRecorder, InspectorSetup, patch_of
from ..runtime.install import add_intervention
from ..runtime.state import log
from .common import CATEGORY, Target, block_and_step_inputs, check_widgets, model_input, queue_verdict
from .dare import TokenWeightsType, check_weights_fit

InspectorType = io.Custom("TOKENFOCUS_INSPECTOR")

POSITIVE, NEGATIVE = "positive", "negative"

INSPECTOR_DESCRIPTION = (
    "Records, during sampling, how much attention the image/video queries give each prompt token, per block and "
    "per step, without changing the result (the output is bit-identical). A node cannot show a run that happens "
    "after it executes, so this one only puts a recorder on the model and hands out an INSPECTOR handle: feed it "
    "to Attention Inspector View together with the sampler's LATENT (or the decoded IMAGE) to get the pictures. "
    "Measures on a sample of queries per call and a pooled frame grid for the heatmaps; never builds an attention "
    "map. Place it before and after other TokenFocus nodes to see the change they make."
)

VIEW_DESCRIPTION = (
    "Draws what an Attention Inspector recorded in the latest sampling run: heatmaps of where in the frame (and in "
    "which frames) each chosen token is attended, overlaid on the decoded image or video frames when given; a chart "
    "of each token's share of the text attention over the denoising steps; and the attention entropy per block. "
    "Connect the sampler's LATENT or the decoded IMAGE so that it runs after sampling. Outputs IMAGEs (preview or "
    "save them with the standard nodes) and a text summary."
)


class AttentionInspectorNode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="TokenFocus_AttentionInspector",
            display_name="Attention Inspector",
            category=CATEGORY,
            description=INSPECTOR_DESCRIPTION,
            inputs=[
                model_input(),
                *block_and_step_inputs(blocks="all", start=0.0, end=1.0),
                io.Int.Input(
                    "queries", default=256, min=16, max=4096, step=16,
                    tooltip="Image/video queries sampled per recorded attention call (evenly spread, a different offset "
                    "each call) for the shares and the entropy. Cost grows with queries x keys; memory does not.",
                ),
                io.Boolean.Input(
                    "heatmaps", default=True,
                    tooltip="Also record where in the frame each token is attended: one query per cell of a frame grid "
                    "pooled to at most 8192 cells per call. In joint attention (SD3, Flux, HunyuanVideo) each such query "
                    "is scored against every key, like the attention itself; off = shares and entropy only.",
                ),
                io.Combo.Input(
                    "prompt", options=[POSITIVE, NEGATIVE], default=POSITIVE,
                    tooltip="Whose attention to record: the positive prompt's samples (cond) or the negative prompt's "
                    "(uncond; nothing to record at CFG 1). The first such sample of the batch is recorded.",
                ),
                TokenWeightsType.Input(
                    "token_weights", optional=True,
                    tooltip="From Token Importance (optional): labels the rows with the prompt's own tokens, lets the View "
                    "find words, and shows the most heavily weighted words by default. Without it rows are numbered.",
                ),
            ],
            outputs=[
                io.Model.Output(),
                InspectorType.Output(display_name="inspector", tooltip="Connect to Attention Inspector View."),
                io.String.Output(display_name="report", tooltip="What will be recorded, where, and the memory it may take."),
            ],
        )

    @classmethod
    def validate_inputs(cls, blocks=None, start_percent=None, end_percent=None, queries=None, prompt=None):
        return queue_verdict(check_widgets, cls, blocks=blocks, start_percent=start_percent, end_percent=end_percent,
                             queries=queries, prompt=prompt)

    @classmethod
    def execute(cls, model, blocks, start_percent, end_percent, queries=256, heatmaps=True, prompt=POSITIVE,
                token_weights=None) -> io.NodeOutput:
        check_widgets(cls, blocks=blocks, start_percent=start_percent, end_percent=end_percent, queries=queries,
                      prompt=prompt)
        target = Target(model, blocks, start_percent, end_percent)
        if token_weights is not None:
            check_weights_fit(token_weights, target)
        diffusion_model = model.get_model_object("diffusion_model")
        setup = InspectorSetup(
            model_name=target.adapter.name, patch=target.adapter.profile.patch or patch_of(diffusion_model),
            grid_layout=target.adapter.profile.grid_layout, queries=int(queries), heatmaps=bool(heatmaps),
            negative=prompt == NEGATIVE,
            labels=token_weights.labels if token_weights is not None else None,
            real=token_weights.real if token_weights is not None else None,
            weights=token_weights.weights if token_weights is not None else None,
            encoder=token_weights.encoder if token_weights is not None else "",
            where=target.where(), added_rows=target.adapter.profile.added_rows,
            added_rows_note=target.adapter.profile.added_rows_note,
        )
        recorder = InspectorRecorder(setup)
        joint = "joint" in target.adapter.kinds
        lines = [
            f"Attention Inspector on {target.where()}; {prompt} prompt; {queries} sampled queries per call"
            + ("; heatmaps on" if heatmaps else "; heatmaps off") + ".",
            "Changes nothing in the result. Connect the inspector output and the sampler's LATENT (or decoded IMAGE) "
            "to Attention Inspector View.",
            f"Memory: {recorder.memory_bound(len(target.blocks))}.",
        ]
        if heatmaps and joint:
            lines.append("Cost: in joint attention every heatmap query is scored against all keys (text and image), "
                         "so each recorded call costs up to 8192 extra query rows of attention, unfused, in float32.")
        if token_weights is None:
            lines.append("No token_weights: rows are labelled by index.")
        report = "\n".join(lines)
        log.info("TokenFocus: %s", report.replace("\n", " | "))
        if target.reaches_nothing:
            return io.NodeOutput(model, recorder, report + "\nNo block or no step selected: nothing will be recorded.")
        intervention = AttentionInspect(label="Attention Inspector", blocks=target.blocks, steps=target.steps, recorder=recorder)
        return io.NodeOutput(add_intervention(model, target.adapter, intervention), recorder, report)


class AttentionInspectorViewNode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="TokenFocus_AttentionInspectorView",
            display_name="Attention Inspector View",
            category=CATEGORY,
            description=VIEW_DESCRIPTION,
            inputs=[
                InspectorType.Input("inspector", tooltip="The inspector output of an Attention Inspector node."),
                io.String.Input(
                    "tokens", default="", multiline=False,
                    tooltip="Which tokens to show: words or phrases of the prompt (needs token_weights on the inspector) "
                    f"and/or row numbers and ranges, e.g. 'sunflower, red hat, 12, 40-42'; at most {MAX_PICKS} (a range "
                    "counts each row). Empty = the most heavily weighted words, else the words with the largest share "
                    "of the attention.",
                ),
                io.Int.Input("max_tokens", default=DEFAULT_MAX_TOKENS, min=1, max=MAX_PICKS,
                             tooltip="How many tokens to show when 'tokens' is empty."),
                io.Latent.Input("latent", optional=True,
                                tooltip="The sampler's output: connect it (or the image) so this node runs after sampling."),
                io.Image.Input("image", optional=True,
                               tooltip="The decoded image or video frames: the heatmaps are drawn over them."),
            ],
            outputs=[
                io.Image.Output(display_name="heatmaps", tooltip="Per token: where in the frame, and in which frames, it is attended."),
                io.Image.Output(display_name="token_shares", tooltip="Each token's share of the text attention over the steps."),
                io.Image.Output(display_name="entropy", tooltip="Attention entropy per block (per step and mean)."),
                io.String.Output(display_name="summary", tooltip="The numbers behind the pictures, in words."),
            ],
        )

    @classmethod
    def validate_inputs(cls, tokens=None, max_tokens=None):
        return queue_verdict(_check_view_inputs, cls, tokens, max_tokens)

    @classmethod
    def execute(cls, inspector, tokens="", max_tokens=DEFAULT_MAX_TOKENS, latent=None, image=None) -> io.NodeOutput:
        _check_view_inputs(cls, tokens, max_tokens)
        if latent is None and image is None:
            raise ValueError(
                "Attention Inspector View: connect the sampler's LATENT or the decoded IMAGE, so that this node runs "
                "after sampling (it shows what the inspector recorded in that run)."
            )
        if not isinstance(inspector, InspectorRecorder):
            raise ValueError("Attention Inspector View: 'inspector' must come from an Attention Inspector node.")
        heat, shares, entropy, summary = render(inspector.snapshot(), tokens, int(max_tokens), image)
        as_image = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))[None]  # noqa: E731
        return io.NodeOutput(as_image(heat), as_image(shares), as_image(entropy), summary)


def _check_view_inputs(cls, tokens, max_tokens) -> None:
    check_widgets(cls, max_tokens=max_tokens)
    if tokens is not None:
        check_pick_spec(tokens)


# ---------------------------------------------------------------------------------------------- drawing


def render(data, tokens: str, max_tokens: int, image=None):
    """(heatmaps, token shares, entropy) as [H, W, 3] arrays, and the summary text."""
    gathered = gather(data.records)
    if gathered is None:
        why = ("Nothing was recorded. Did the sampler run with the model from this Attention Inspector, and do its blocks "
               f"and steps ({data.setup.where}) meet the sampling run?")
        if data.setup.negative:
            why += " The negative prompt is only evaluated when CFG is above 1."
        why = "\n".join([why] + data.notes)
        picture = charts.message_picture(_wrap(why, 90))
        return picture, picture, picture, "Attention Inspector\n" + why

    rows = data.text_rows
    real = data.real if data.real is not None and len(data.real) == rows else tuple([True] * rows)
    labels = data.labels
    mean_shares = gathered.mean_shares()
    if tokens and tokens.strip():
        picks, how = parse_picks(tokens, labels, real, rows), "as asked"
    else:
        weights = data.setup.weights if labels is not None else None
        picks, how = default_picks(labels, real, weights, mean_shares, max_tokens)
    row_labels = labels if labels is not None else index_labels(rows)

    heat_picture, heat_lines = _heatmaps(data, gathered, picks, image)
    share_picture = _share_chart(data, gathered, picks)
    entropy_picture = _entropy_chart(data, gathered)
    summary = _summary(data, gathered, picks, how, heat_lines, row_labels)
    return heat_picture, share_picture, entropy_picture, summary


def _wrap(text: str, width: int) -> str:
    out = []
    for paragraph in text.split("\n"):
        line = ""
        for word in paragraph.split(" "):
            if line and len(line) + 1 + len(word) > width:
                out.append(line)
                line = word
            else:
                line = f"{line} {word}" if line else word
        out.append(line)
    return "\n".join(out)


def _scope(data, gathered) -> str:
    prompt = NEGATIVE if data.setup.negative else POSITIVE
    return f"{len(gathered.blocks)} block(s) x {len(gathered.sigmas)} step(s), {prompt} prompt"


def _heatmaps(data, gathered, picks, image):
    heat = data.heat
    if heat is None:
        why = ("No heatmaps: switched off on the Attention Inspector." if not data.setup.heatmaps
               else "No heatmaps were recorded (see the summary).")
        return charts.message_picture(why), [why]
    if not picks:
        return charts.message_picture("No tokens to show."), ["no tokens to show"]
    grid = heat.grid
    frames, cells_h, cells_w = grid.cells
    mapped = {int(r): i for i, r in enumerate(heat.rows.tolist())}
    mean = heat.total / heat.calls                 # [cells, mapped rows]
    maps, notes, lines = [], [], []
    for pick in picks:
        columns = [mapped[r] for r in pick.rows if r in mapped]
        if not columns:
            maps.append(np.full((frames, cells_h, cells_w), np.nan, dtype=np.float32))
            notes.append("not mapped\n(only the prompt's\nreal rows are)")
            lines.append(f"{pick.label}: no heatmap (row not mapped: only the prompt's real rows are)")
            continue
        values = mean[:, columns].sum(-1).reshape(frames, cells_h, cells_w).numpy()
        maps.append(values)
        per_frame = values.reshape(frames, -1).mean(-1)
        peak_frame = int(np.argmax(per_frame))
        notes.append(f"peak {100 * values.max():.3g}%\nmean {100 * values.mean():.3g}%"
                     + (f"\nmost in frame {peak_frame * grid.factors[0]}" if frames > 1 else ""))
        lines.append(f"{pick.label}: attention per query peak {100 * values.max():.3g}%, mean {100 * values.mean():.3g}%"
                     + (f", most in latent frame {peak_frame * grid.factors[0]}" if frames > 1 else ""))
    backdrop, backdrop_frame = _backdrop(image, grid, frames)
    if isinstance(image, torch.Tensor) and image.ndim == 4 and image.shape[0] == 0:
        lines.append("the IMAGE has no frames: heatmaps drawn without it")

    title = (f"Where each token is attended ({_scope(data, gathered)})\n"
             f"attention of each image query to the token, mean over heads, blocks and steps; "
             f"{grid.tokens[1]}x{grid.tokens[2]} tokens per frame"
             + (f" pooled {grid.factors[1]}x{grid.factors[2]}" if grid.factors[1] > 1 else "")
             + "; each row scaled to its own peak")
    picture = charts.heatmap_picture(np.stack(maps), [p.label for p in picks], notes, title, backdrop, backdrop_frame,
                                     aspect_hw=None if backdrop is not None else grid.tokens[1] / grid.tokens[2])
    return picture, lines


def _backdrop(image, grid, map_frames: int):
    """The decoded frames under the heatmap columns that are shown, and which of them goes under map frame t.
    Only those frames (at most charts.MAX_FRAMES) are copied, each cut by an integer stride to at most
    charts.BACKDROP_SIDE pixels a side before it becomes float: a long or large video is never copied whole.
    No usable IMAGE (none, not [N, H, W, C], no frames): (None, None)."""
    if not (isinstance(image, torch.Tensor) and image.ndim == 4 and image.shape[-1] >= 3 and min(image.shape[:3]) > 0):
        return None, None
    count, latent_frames = image.shape[0], grid.tokens[0]

    def source(t):
        first = min(t * grid.factors[0], latent_frames - 1)
        return 0 if latent_frames <= 1 else min(count - 1, round(first * (count - 1) / (latent_frames - 1)))

    columns = charts.shown_frames(map_frames)
    stride = max(1, -(-max(image.shape[1], image.shape[2]) // charts.BACKDROP_SIDE))
    index = torch.tensor([source(t) for t in columns], device=image.device)
    frames = image.detach()[:, ::stride, ::stride, :3].index_select(0, index).float().clamp(0, 1).cpu().numpy()
    position = {t: i for i, t in enumerate(columns)}
    return frames, position.__getitem__


def _share_chart(data, gathered, picks):
    by_step = gathered.share_by_step()                     # [steps, R]
    x_labels = [f"{s:.3g}" for s in gathered.sigmas]
    series = [(p.label, by_step[:, list(p.rows)].sum(-1).numpy(), None, 3) for p in picks]
    mass = float(np.nanmean(gathered.text_mass.numpy()))
    subtitle = (f"mean over the recorded blocks; the text takes {100 * mass:.3g}% of the image queries' attention"
                if mass < 0.999 else "mean over the recorded blocks; cross-attention: every key is text")
    return charts.line_chart(x_labels, series, f"Share of the text attention per token ({_scope(data, gathered)})",
                             "share", "sigma (denoising goes left to right)", percent=True, y_floor=0.0, subtitle=subtitle)


def _entropy_chart(data, gathered):
    entropy = gathered.entropy.numpy()                     # [blocks, steps]
    x_labels = [block_name(b) for b in gathered.blocks]
    steps = len(gathered.sigmas)
    colors = charts.ramp(steps)
    series = []
    for j in range(steps):
        label = f"sigma {gathered.sigmas[j]:.3g}" if j in (0, steps - 1) and steps > 1 else ""
        series.append((label, entropy[:, j], colors[j], 1))
    with np.errstate(all="ignore"):
        mean = np.nanmean(np.where(np.isfinite(entropy), entropy, np.nan), axis=1)
    series.append(("mean over steps", mean, (20, 20, 20), 3))
    subtitle = (f"full attention of the image queries over all keys; a uniform spread over them would be "
                f"{gathered.max_entropy:.3g} nats")
    return charts.line_chart(x_labels, series, f"Attention entropy per block ({_scope(data, gathered)})", "nats",
                             "block (s = single-stream)", subtitle=subtitle)


def _row_name(row_labels, i: int) -> str:
    name = display_label(row_labels[i])
    return name if name == f"#{i}" else f"{name} #{i}"


def _summary(data, gathered, picks, how, heat_lines, row_labels) -> str:
    setup = data.setup
    records = data.records
    prompt = NEGATIVE if setup.negative else POSITIVE
    kinds = sorted({r.kind for r in records})
    lines = [
        f"Attention Inspector · {setup.model_name} · {prompt} prompt · {len(records)} attention calls recorded in "
        f"blocks {format_blocks(gathered.blocks)} at {len(gathered.sigmas)} sigma(s) from {gathered.sigmas[0]:.4g} to "
        f"{gathered.sigmas[-1]:.4g}",
        f"attention kind: {', '.join(kinds)}; {records[0].keys} keys of which {data.text_rows} text rows; "
        f"{len(records[0].queries)} of {records[0].image_queries} image queries sampled per call",
    ]
    mass = float(np.nanmean(gathered.text_mass.numpy()))
    if mass < 0.999:
        lines.append(f"the text takes {100 * mass:.3g}% of the image queries' attention (mean); shares below are of that part")
    if data.heat is not None:
        g = data.heat.grid
        lines.append(f"heatmaps: {g.tokens[0]}x{g.tokens[1]}x{g.tokens[2]} tokens (frames x rows x cols) in "
                     f"{g.cells[0]}x{g.cells[1]}x{g.cells[2]} cells, {data.heat.calls} calls, {len(data.heat.rows)} rows mapped")
    lines.append(f"tokens shown ({how}):")
    by_step = gathered.share_by_step()
    mean_shares = gathered.mean_shares()
    for p in picks:
        rows = list(p.rows)
        first, last = float(by_step[0, rows].sum()), float(by_step[-1, rows].sum())
        where = ",".join(str(r) for r in rows[:6]) + ("…" if len(rows) > 6 else "")
        lines.append(f"  {p.label:<24} rows {where:<10} share {100 * float(mean_shares[rows].sum()):6.3g}%  "
                     f"first step {100 * first:.3g}% -> last step {100 * last:.3g}%")
    real = data.real if data.real is not None and len(data.real) == data.text_rows else None
    ranked = torch.argsort(mean_shares.nan_to_num(0.0), descending=True).tolist()
    top = [i for i in ranked if real is None or real[i]][:8]
    lines.append("largest shares" + (" among the prompt's tokens" if real is not None else "") + ": "
                 + ", ".join(f"{_row_name(row_labels, i)} {100 * float(mean_shares[i]):.3g}%" for i in top))
    if real is not None and not all(real):
        rest = float(mean_shares[[i for i, r in enumerate(real) if not r]].nan_to_num(0.0).sum())
        lines.append(f"rows that are not prompt tokens (start/end/padding) take {100 * rest:.3g}% of the text attention")
    entropy = gathered.entropy
    per_block = [(block_name(b), float(np.nanmean(entropy[i].numpy()))) for i, b in enumerate(gathered.blocks)]
    lines.append(f"entropy per block (nats, mean over steps; uniform = {gathered.max_entropy:.3g}): "
                 + "  ".join(f"{n}: {v:.3g}" for n, v in per_block))
    lines += [f"heatmap {line}" for line in heat_lines]
    lines += [f"note: {n}" for n in data.notes]
    return "\n".join(lines)
