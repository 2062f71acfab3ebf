"""The Attention Inspector's runtime side: an intervention that changes nothing and records, in the blocks
and steps it was given, how much attention the image/video queries give each text token.

How it stays harmless and bounded:
- It reads call.q / call.k (as earlier interventions left them, with their pending key bias) and never
  writes to the call; its arithmetic runs on copies in float32 and uses no random generator, so the
  sampled output is bit-identical with and without it.
- Per recorded call it evaluates `queries` sampled image queries (every key: the exact softmax normaliser,
  the entropy and the text shares), and, for the heatmaps, one query per cell of a pooled frame grid of at
  most MAX_CELLS cells. Logits are streamed in blocks of at most DEFAULT_BUDGET float32 elements; no
  attention map exists at any time (core.attention_stats).
- It keeps, per recorded call, a few vectors of one value per text row (CallRecord), and one heatmap
  accumulator [cells, mapped rows] for the whole run. See `memory_bound`.

The recorder is shared: the Inspector node puts it on the model (inside the intervention) and hands the
same object to the View node. ModelPatcher.clone deep-copies model_options, so the recorder's __deepcopy__
returns itself: every clone of the model (later TokenFocus nodes, the sampler's own copies) writes to the
one recorder the View reads. It forgets everything when it sees a new RunState (a new sampling run), so
nothing leaks from one run into the next, and nothing is module-level.
"""
from __future__ import annotations

import dataclasses
import weakref
from dataclasses import dataclass, field

import torch

from ..core.attention_stats import (
    DEFAULT_BUDGET, CellGrid, attention_to_text, call_phase, pooled_grid, spread_sample, token_grid,
)
from ..families.base import GRID_AFTER_REFERENCE, GRID_LAST  # each family module names its grid layout
from .interventions import CROSS_TEXT, JOINT, Intervention
from .prompt_rows import locate

MAX_CELLS = 8192        # heatmap cells per frame grid (and so heatmap queries per recorded call)
MAX_MAPPED_ROWS = 512   # text rows with a heatmap
IMAGE_ROW = "[image]"   # the label of a text row that holds an image's tokens, not the prompt's


def patch_of(diffusion_model) -> tuple:
    """(pt, ph, pw) patch size of the model's patch embedding, read from the model where it says, else 2 × 2."""
    patch = getattr(diffusion_model, "patch_size", None)
    if patch is None and hasattr(diffusion_model, "x_embedder"):
        patch = getattr(diffusion_model.x_embedder, "patch_size", None)
    if patch is None:
        patch = 2
    if isinstance(patch, int):
        return (1, patch, patch)
    patch = tuple(int(p) for p in patch)
    return patch if len(patch) == 3 else (1,) + patch[-2:]


def grid_offset(layout: str, image_tokens: int, grid: tuple) -> int | None:
    """Index of the frame grid's first token among the call's image tokens, or None if it cannot fit."""
    n = grid[0] * grid[1] * grid[2]
    extra = image_tokens - n
    if extra < 0:
        return None
    if layout == GRID_LAST:
        return extra
    if layout == GRID_AFTER_REFERENCE and extra >= grid[1] * grid[2]:
        return grid[1] * grid[2]
    return 0


@dataclass(frozen=True)
class InspectorSetup:
    """What the Inspector node decided; immutable."""

    model_name: str
    patch: tuple
    grid_layout: str
    queries: int
    heatmaps: bool
    negative: bool                     # record the negative prompt's samples instead of the positive ones
    labels: tuple | None = None        # from TokenWeights (positive prompt only)
    real: tuple | None = None
    weights: tuple | None = None
    encoder: str = ""
    where: str = ""
    max_cells: int = MAX_CELLS
    budget: int = DEFAULT_BUDGET
    # Where the model's conditioning can carry rows that are not the prompt's, and what they are (ModelProfile):
    # such rows are labelled apart from the prompt's tokens (runtime/prompt_rows.py).
    added_rows: str = ""
    added_rows_note: str = ""


@dataclass
class CallRecord:
    """One recorded attention call (one block, one model call), for the chosen sample. Tensors stay on the
    model's device until the View reads them (no synchronisation during sampling)."""

    block: tuple
    sigma: float
    kind: str
    sample: int                 # index in the batch
    keys: int                   # keys of the call (text and, in joint attention, image)
    image_queries: int
    queries: torch.Tensor       # [n] sampled query positions among the image queries
    attention: torch.Tensor     # [R] mean over sampled queries and heads of p(q -> text row)
    shares: torch.Tensor        # [R] the same within the text (sums to 1)
    query_text_mass: torch.Tensor   # [n] per sampled query: Σ_text p, mean over heads
    entropy_t: torch.Tensor     # [] mean full-attention entropy (nats)

    @property
    def text_mass(self) -> float:
        return float(self.query_text_mass.float().mean())

    @property
    def entropy(self) -> float:
        return float(self.entropy_t)

    def to_cpu(self) -> "CallRecord":
        return CallRecord(self.block, self.sigma, self.kind, self.sample, self.keys, self.image_queries,
                          self.queries.cpu(), self.attention.cpu(), self.shares.cpu(), self.query_text_mass.cpu(),
                          self.entropy_t.cpu())


@dataclass
class HeatState:
    latent_shape: tuple
    grid: CellGrid
    rows: torch.Tensor          # [M] mapped text rows
    total: torch.Tensor         # [cells, M] Σ over heatmap calls of p(cell's query -> row), mean over heads
    calls: int = 0


@dataclass
class InspectorData:
    """A CPU snapshot of the latest run, for the View node."""

    setup: InspectorSetup
    records: list
    heat: HeatState | None
    text_rows: int | None
    real: tuple | None          # real prompt rows: from the token weights, else the model's own mask (Wan)
    labels: tuple | None
    notes: list = field(default_factory=list)


class InspectorRecorder:
    """The INSPECTOR handle: written by AttentionInspect during sampling, read by the View node."""

    def __init__(self, setup: InspectorSetup):
        self.setup = setup
        self._run = None
        self._reset()
        # Measuring is data-dependent bookkeeping: run eagerly under torch.compile. Wrapped here, when the
        # node runs, not by a decorator: that would import torch._dynamo (~2 s) whenever ComfyUI starts.
        self.observe = torch.compiler.disable(self._observe)

    def __deepcopy__(self, memo):
        # Shared on purpose: ModelPatcher.clone deep-copies model_options, and every copy of the model must
        # record into the one object the View node holds.
        memo[id(self)] = self
        return self

    def __copy__(self):
        return self

    def _reset(self) -> None:
        self.records: list[CallRecord] = []
        self.heat: HeatState | None = None
        self.text_rows: int | None = None
        self.model_real: tuple | None = None
        self.notes: dict = {}
        self.counter = 0
        self.calls_without_sample = 0
        self.seen: set = set()

    def _enter_run(self, run) -> None:
        if self._run is None or self._run() is not run:
            self._reset()
            self._run = weakref.ref(run)

    def note(self, run, key: str, message: str) -> None:
        if key not in self.notes:
            self.notes[key] = message
            run.warn_once(f"inspector-{id(self)}-{key}", f"Attention Inspector: {message}")

    # ------------------------------------------------------------------------------------------ recording

    def _observe(self, call) -> None:
        ctx = call.ctx
        plan = ctx.plan
        self._enter_run(plan.run)
        if call.kind not in (CROSS_TEXT, JOINT):
            return
        q4, k4 = call.query_heads(), call.key_heads()
        batch, _, seq_q, _ = q4.shape
        seq_k = k4.shape[2]
        if call.kind == CROSS_TEXT:
            text, image = slice(0, seq_k), (0, seq_q)
        else:
            if ctx.text_len is None:
                self.note(plan.run, f"no-text-{ctx.block}", f"no text length known in block {ctx.block}; not recorded there")
                return
            text = ctx.adapter.text_span(ctx.block, ctx.text_len, seq_k)
            image = (text.stop, seq_q) if text.start == 0 else (0, text.start)
        sample = self._sample(plan, batch)
        if sample is None:      # e.g. the uncond batch when cond and uncond run separately (HunyuanVideo)
            self.calls_without_sample += 1
            return
        step = (ctx.block, round(plan.sigma, 6))
        if step in self.seen:
            # One measurement per block and step: a later call at the same sigma is an extra pass of another
            # pack (SkipLayerGuidanceDiT's positive pass with layers skipped), not the sampler's own.
            self.note(plan.run, "repeat", "model calls repeated at a step (an extra guidance pass?) were not recorded; "
                      "the first call of each step was")
            return
        rows = text.stop - text.start
        if self.text_rows is None:
            self.text_rows = rows
            self._learn_real_rows(plan, sample, rows)
        elif rows != self.text_rows:
            self.note(plan.run, f"rows-{rows}", f"a call with {rows} text rows (first seen: {self.text_rows}); calls of "
                      "another length (a second conditioning?) were not recorded")
            return
        image_start, image_count = image[0], image[1] - image[0]
        if image_count <= 0:
            return

        q, k = q4[sample], k4[sample]
        bias, biased = self._pending_bias(call, sample)
        mask = _sample_mask(call, sample)
        with torch.no_grad():
            picked = spread_sample(image_count, self.setup.queries, call_phase(self.counter)).to(q.device)
            index = picked + image_start
            stats = attention_to_text(
                q, k, text, query_index=index, key_bias=bias,
                biased=None if biased is None else biased.index_select(0, index),
                mask=mask, mask_rows=index if mask is not None and mask.shape[1] > 1 else None,
                budget=self.setup.budget,
            )
            self.seen.add(step)
            self.records.append(CallRecord(
                block=ctx.block, sigma=plan.sigma, kind=call.kind, sample=sample, keys=seq_k,
                image_queries=image_count, queries=picked, attention=stats.probs.mean(0), shares=stats.shares.mean(0),
                query_text_mass=stats.text_mass, entropy_t=stats.entropy.mean(),
            ))
            if self.setup.heatmaps:
                self._add_heat(plan, q, k, text, image_start, image_count, bias, biased, mask)
        self.counter += 1

    def _sample(self, plan, batch: int) -> int | None:
        wanted = plan.negative_samples(batch) if self.setup.negative else [not u for u in plan.uncond_samples(batch)]
        return wanted.index(True) if any(wanted) else None

    def _learn_real_rows(self, plan, sample: int, rows: int) -> None:
        real = getattr(plan.inputs, "real_mask", None)
        if real is not None and real.shape[1] == rows:
            self.model_real = tuple(bool(x) for x in real[min(sample, real.shape[0] - 1)].tolist())

    @staticmethod
    def _pending_bias(call, sample: int):
        """The key bias earlier TokenFocus interventions added to this call (folded in only later, right
        before the backend): its bias row and the queries it applies to, for this sample."""
        pending = call.pending_key_bias
        if pending is None or not bool(pending.biased_queries[sample].any()):
            return None, None
        return pending.bias[sample], pending.biased_queries[sample]

    def _prompt_layout(self, rows: int):
        """(labels, real, weights) of the token weights spread over `rows` text rows, the rows that are not the
        prompt's (a style model's image rows, Qwen-Image-Edit's vision rows) labelled IMAGE_ROW and not real;
        None where the weights do not describe these rows."""
        setup = self.setup
        if setup.labels is None or setup.real is None or setup.negative:
            return None
        place = locate(setup.labels, rows, None, setup)
        if place is None:
            return None
        return place.spread(setup.labels, IMAGE_ROW), place.spread(setup.real, False), place.spread(setup.weights, 1.0)

    def _mapped_rows(self, rows: int) -> torch.Tensor:
        layout = self._prompt_layout(rows)
        real = None
        if layout is not None:
            real = layout[1]
        elif self.model_real is not None:
            real = self.model_real
        chosen = [i for i in range(rows) if real is None or real[i]]
        if not chosen:
            chosen = list(range(rows))
        return torch.tensor(chosen[:MAX_MAPPED_ROWS], dtype=torch.long)

    def _add_heat(self, plan, q, k, text, image_start, image_count, bias, biased, mask) -> None:
        tokens = token_grid(plan.latent_shape, self.setup.patch)
        if tokens is None:
            self.note(plan.run, "grid", f"latent of shape {plan.latent_shape}: no frame grid, no heatmap")
            return
        offset = grid_offset(self.setup.grid_layout, image_count, tokens)
        if offset is None:
            self.note(plan.run, "grid-fit", f"{image_count} image tokens but a {tokens} token grid: no heatmap")
            return
        if self.heat is None:
            grid = pooled_grid(tokens, self.setup.max_cells)
            rows = self._mapped_rows(text.stop - text.start)
            if self.text_rows > MAX_MAPPED_ROWS and len(rows) == MAX_MAPPED_ROWS:
                self.note(plan.run, "rows-capped", f"heatmaps for the first {MAX_MAPPED_ROWS} text rows only")
            self.heat = HeatState(tuple(plan.latent_shape), grid, rows.to(q.device),
                                  torch.zeros(grid.n_cells, len(rows), device=q.device))
        heat = self.heat
        if tuple(plan.latent_shape) != heat.latent_shape:
            self.note(plan.run, "latent-changed", "the latent changed shape during the run; heatmaps keep the first")
            return
        index = heat.grid.sample_tokens(self.counter).to(q.device) + image_start + offset
        stats = attention_to_text(
            q, k, text, query_index=index, key_bias=bias,
            biased=None if biased is None else biased.index_select(0, index),
            mask=mask, mask_rows=index if mask is not None and mask.shape[1] > 1 else None,
            want_shares=False, want_entropy=False, budget=self.setup.budget,
        )
        heat.total += stats.probs.index_select(1, heat.rows)
        heat.calls += 1

    # ------------------------------------------------------------------------------------------ reading

    def snapshot(self) -> InspectorData:
        setup = self.setup
        labels = None
        notes = list(self.notes.values())
        if not self.records and self.calls_without_sample:
            which = "negative" if setup.negative else "positive"
            notes.append(f"{self.calls_without_sample} attention calls had no {which}-prompt sample (CFG 1 evaluates "
                         "the positive prompt only)")
        if setup.labels is not None:
            layout = None if self.text_rows is None else self._prompt_layout(self.text_rows)
            if setup.negative:
                notes.append("the token weights describe the positive prompt: the negative prompt's rows are labelled by index")
            elif self.text_rows is not None and layout is None:
                notes.append(f"the token weights have {len(setup.labels)} rows but the prompt had {self.text_rows}: "
                             "rows are labelled by index")
            else:
                if self.text_rows is not None and len(setup.labels) != self.text_rows:
                    notes.append(f"{self.text_rows - len(setup.labels)} text rows are not the prompt's "
                                 f"({setup.added_rows_note}): labelled {IMAGE_ROW}, apart from the prompt's tokens")
                    setup = dataclasses.replace(setup, labels=layout[0], real=layout[1], weights=layout[2])
                labels = setup.labels
        real = setup.real if labels is not None else self.model_real
        heat = None
        if self.heat is not None and self.heat.calls:
            h = self.heat
            heat = HeatState(h.latent_shape, h.grid, h.rows.cpu(), h.total.float().cpu(), h.calls)
        return InspectorData(setup, [r.to_cpu() for r in self.records], heat, self.text_rows, real, labels, notes)

    def memory_bound(self, blocks: int, text_rows: int = 512) -> str:
        # attention and shares [R] float32, sampled positions [n] int64 and their text mass [n] float32
        per_call = 8 * text_rows + 12 * self.setup.queries + 64
        heat = self.setup.max_cells * min(text_rows, MAX_MAPPED_ROWS) * 4 if self.setup.heatmaps else 0
        return (f"about {per_call / 1024:.1f} KiB per recorded (block, model call), e.g. "
                f"{per_call * blocks * 50 / 2**20:.1f} MiB for {blocks} blocks over 50 steps; heatmaps at most "
                f"{heat / 2**20:.0f} MiB; while a call is measured, at most three float32 blocks of "
                f"{self.setup.budget * 4 / 2**20:.0f} MiB (logits and keys)")


def _sample_mask(call, sample: int) -> torch.Tensor | None:
    """The call's attention mask for one sample as [Hm, Lm, Lk], read the way ComfyUI's backends read it
    (2-D: [Lq, Lk]; 3-D: [B, Lq, Lk]; 4-D: [B, H, Lq, Lk]; a size-1 dim broadcasts)."""
    mask = call.kwargs.get("mask")
    if mask is None and len(call.args) > 4 and isinstance(call.args[4], torch.Tensor):
        mask = call.args[4]
    if mask is None:
        return None
    if mask.ndim == 2:
        mask = mask[None]
    if mask.ndim == 3:
        mask = mask[:, None]
    return mask[sample if mask.shape[0] > 1 else 0]


@dataclass(frozen=True)
class AttentionInspect(Intervention):
    """Records attention to the text tokens; changes nothing."""

    recorder: InspectorRecorder = None

    def edit_attention(self, call) -> None:
        recorded = len(self.recorder.records)
        self.recorder.observe(call)
        if len(self.recorder.records) != recorded and not torch.compiler.is_compiling():   # counted as it records
            call.ctx.plan.note_touch(self.label, call.ctx.block)
