"""One attention call at Wan 2.1 14B width, through TokenFocus's own attention hook: the extra peak memory and
time of adaptive Attention Temperature and of Token Reweighting's key-bias fold, against the same call
unpatched, at growing video lengths; and the same figures extrapolated to Wan 480p and 720p, 81 frames.

    COMFYUI_PATH=/path/to/ComfyUI python benchmarks/bench.py --attention-call     # ~2 min on a 2-core CPU

The call is Wan's text cross-attention (what both nodes act on in Wan by default): q [1, L, 5120] from L
video tokens, k and v [1, 512, 5120] from the umT5 context, 40 heads of 128, bf16, through ComfyUI's
`attention_pytorch` (SDPA, what ComfyUI runs on every NVIDIA GPU). The arms run the pack's real hook
(AttentionHook on a Wan adapter, in a block context) with one intervention each. Memory: the peak a call adds
above what was allocated before it (measure.PeakMemory), minus the unpatched call's; it includes the call's
own output, the same in every arm, so the difference is what the node adds. Time: process CPU time, median.
"""
from __future__ import annotations

import math
import statistics
import time
from pathlib import Path

WIDTH, HEADS, TEXT_ROWS = 5120, 40, 512
# Video tokens of Wan's latent, 81 frames (21 latent frames, 2x2 patches): 480p 832x480, 720p 1280x720.
P480, P720 = 21 * 30 * 52, 21 * 45 * 80
LENGTHS = (P480 // 4, P480, P720)
GAMMA = 1.35
ROUNDS = 3


def arms(tokenfocus):
    """{arm: intervention or None} as the nodes build them for Wan's text cross-attention."""
    from tokenfocus.core.blocklist import DOUBLE
    from tokenfocus.core.schedule import StepRange
    from tokenfocus.runtime.interventions import CROSS_TEXT, AttentionTemperature
    from tokenfocus.runtime.reweighting import TokenBias, log_weights

    everywhere = dict(blocks=frozenset({(DOUBLE, 0)}), steps=StepRange(0.0, 1.0, 1.0, 0.0))
    weights = [2.0 if i in (3, 7) else 0.5 if i < 20 else 1.0 for i in range(TEXT_ROWS)]
    return {
        "unpatched": None,
        "Attention Temperature (gamma on Q)": AttentionTemperature(label="t", factors={CROSS_TEXT: (GAMMA, 1.0)}, **everywhere),
        "Attention Temperature, adaptive": AttentionTemperature(label="a", factors={CROSS_TEXT: (GAMMA, 1.0)},
                                                                adaptive=True, **everywhere),
        "Token Reweighting (key-bias fold)": TokenBias(label="r", bias=log_weights(weights, 1.0), encoder="umt5xxl",
                                                       **everywhere),
    }


def output_only(q, k, v, heads, *args, **kwargs):
    """A stand-in backend that only allocates the output a real one returns: what a node adds to a
    self-attention call, at lengths whose L x L attention this CPU cannot run."""
    import torch

    return torch.empty_like(q)


def self_attention_arms():
    from tokenfocus.core.blocklist import DOUBLE
    from tokenfocus.core.schedule import StepRange
    from tokenfocus.runtime.interventions import SELF, AttentionTemperature

    everywhere = dict(blocks=frozenset({(DOUBLE, 0)}), steps=StepRange(0.0, 1.0, 1.0, 0.0))
    return {
        "unpatched": None,
        "Attention Temperature (gamma on Q)": AttentionTemperature(label="t", factors={SELF: (GAMMA, 1.0)}, **everywhere),
        "Attention Temperature, adaptive": AttentionTemperature(label="a", factors={SELF: (GAMMA, 1.0)}, adaptive=True,
                                                                **everywhere),
    }


def one_call(intervention, q, k, v, self_attention=False):
    """The attention call as the hook runs it inside a hooked Wan block: its first call (self-attention, with
    the stand-in backend) or its second (text cross-attention, with ComfyUI's attention_pytorch)."""
    import comfy.ldm.modules.attention as attention

    from tokenfocus.core.blocklist import DOUBLE
    from tokenfocus.runtime.adapters import WanAdapter
    from tokenfocus.runtime.hooks import AttentionHook
    from tokenfocus.runtime.interventions import CROSS_TEXT, SELF
    from tokenfocus.runtime.state import BLOCK_KEY, CONFIG_KEY, BlockContext, RunState, StepPlan, TokenFocusConfig

    backend = output_only if self_attention else attention.attention_pytorch
    if intervention is None:
        return backend(q, k, v, HEADS)
    adapter = WanAdapter("Wan", 40, 0, frozenset({SELF, CROSS_TEXT}))
    plan = StepPlan(sigma=0.5, active=(intervention,), run=RunState(), inputs=adapter.inspect_inputs(k, {}),
                    cond_or_uncond=(0,))
    intervention.prepare_step(plan, q.device)
    ctx = BlockContext(block=(DOUBLE, 0), interventions=(intervention,), plan=plan, adapter=adapter,
                       calls=0 if self_attention else 1)
    options = {CONFIG_KEY: TokenFocusConfig(adapter, (intervention,)), BLOCK_KEY: ctx}
    return AttentionHook()(backend, q, k, v, HEADS, transformer_options=options)


def measure_length(length, tokenfocus, memory, dtype, self_attention=False):
    import torch

    g = torch.Generator().manual_seed(0)
    keys = length if self_attention else TEXT_ROWS
    q = torch.randn(1, length, WIDTH, generator=g).to(dtype)
    k = torch.randn(1, keys, WIDTH, generator=g).to(dtype)
    v = torch.randn(1, keys, WIDTH, generator=g).to(dtype)
    rows = {}
    for arm, iv in (self_attention_arms() if self_attention else arms(tokenfocus)).items():
        one_call(iv, q, k, v, self_attention)                           # warm-up
        peaks, times = [], []
        for _ in range(ROUNDS):
            start = time.process_time()
            peaks.append(memory.measure(lambda: one_call(iv, q, k, v, self_attention)))
            times.append(time.process_time() - start)
        rows[arm] = dict(peak=min(peaks), time=statistics.median(times))
    base = rows["unpatched"]
    for row in rows.values():
        row["extra"] = row["peak"] - base["peak"]
        row["extra_time"] = 100.0 * (row["time"] - base["time"]) / base["time"]
    qkv = (q.numel() + k.numel() + v.numel()) * q.element_size()
    return dict(length=length, rows=rows, q_bytes=q.numel() * q.element_size(), qkv_bytes=qkv)


def name_of(length) -> str:
    return {P480: "480p 81 frames", P720: "720p 81 frames", P480 // 4: "a quarter of 480p 81 frames"}.get(length, "")


def self_attention_table(results) -> list:
    lines = ["", "### The node's own memory in a self-attention call", "",
             f"Wan's self-attention (Attention Temperature with `self_attention` on): q, k and v [1, L, {WIDTH}], the "
             "backend replaced by a stand-in that only allocates the output (an L x L attention at these lengths is "
             "beyond this CPU), so the extra peak is the node's alone: for both modes the scaled copy of q (1.00 q), "
             "and for the adaptive mode the float32 moments of q and k, taken a chunk of rows at a time.", "",
             "| L (video tokens) | q MiB | arm | extra peak MiB | extra / q | node's time s |", "|---|---|---|---|---|---|"]
    for r in results:
        for arm, row in r["rows"].items():
            if arm != "unpatched":
                lines.append(f"| {r['length']} ({name_of(r['length'])}) | {r['q_bytes'] / 2 ** 20:.0f} | {arm} | "
                             f"{row['extra'] / 2 ** 20:+.1f} | {row['extra'] / r['q_bytes']:+.2f} | "
                             f"{row['time'] - r['rows']['unpatched']['time']:.2f} |")
    return lines


def report(results, dtype, threads, elapsed) -> list:
    mib = lambda b: f"{b / 2 ** 20:+.1f}" if b else "0"  # noqa: E731
    lines = [
        "## One attention call at Wan 2.1 14B width: adaptive temperature and the reweighting fold", "",
        f"`python benchmarks/bench.py --attention-call`, {time.strftime('%Y-%m-%d')}, {elapsed / 60:.1f} min, "
        f"{dtype}, {threads} torch thread(s). Wan's text cross-attention: q [1, L, {WIDTH}], k and v [1, {TEXT_ROWS}, "
        f"{WIDTH}], {HEADS} heads of {WIDTH // HEADS}, batch 1, ComfyUI's `attention_pytorch`, through the pack's "
        f"attention hook. Extra peak = the call's peak above what was allocated before it, minus the unpatched "
        f"call's (which holds the output); time = process CPU time, median of {ROUNDS}. The longest length run "
        f"here: L = {max(r['length'] for r in results)} (Wan 720p, 81 frames), about "
        f"{max(r['rows']['unpatched']['time'] for r in results):.1f} s a call on this CPU.", "",
        "| L (video tokens) | q MiB | arm | peak MiB | extra peak MiB | extra / q | time s | extra time % |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        for arm, row in r["rows"].items():
            lines.append(f"| {r['length']} ({name_of(r['length'])}) | {r['q_bytes'] / 2 ** 20:.0f} | {arm} | "
                         f"{row['peak'] / 2 ** 20:.0f} | {mib(row['extra'])} | {row['extra'] / r['q_bytes']:+.2f} | "
                         f"{row['time']:.2f} | {row['extra_time']:+.1f} |")
    if len(results) < 2:
        return lines
    lines += ["", "### Extrapolated to Wan 14B at 480p and 720p, 81 frames", "",
              "The extra peak as a + b·L, fitted through the two shorter lengths measured above, then evaluated at "
              f"L = {P480} (480p) and {P720} (720p), per sample; with CFG (cond and uncond in one batch of 2) "
              "every term doubles. At 720p the prediction is set beside the measurement.", ""]
    short = sorted(results, key=lambda r: r["length"])[:2]
    measured = {r["length"]: r for r in results}
    lines += ["| arm | fit | at 480p (L = 32760) | at 720p (L = 75600) | measured at 720p |", "|---|---|---|---|---|"]
    for arm in results[0]["rows"]:
        if arm == "unpatched":
            continue
        (l0, e0), (l1, e1) = [(r["length"], r["rows"][arm]["extra"] / 2 ** 20) for r in short]
        slope = (e1 - e0) / (l1 - l0)
        intercept = e0 - slope * l0
        at = {n: intercept + slope * n for n in (P480, P720)}
        real = measured.get(P720)
        lines.append(
            f"| {arm} | ({e1:.1f} − {e0:.1f}) MiB / ({l1} − {l0}) = {slope * 1e3:.3f} MiB per 1000 tokens, "
            f"a = {intercept:.1f} MiB | {intercept:.1f} + {slope * 1e3:.3f}·32.76 = {at[P480]:.0f} MiB | "
            f"{intercept:.1f} + {slope * 1e3:.3f}·75.6 = {at[P720]:.0f} MiB | "
            + (f"{real['rows'][arm]['extra'] / 2 ** 20:.0f} MiB |" if real else "— |"))
    return lines


def main(args, write_results, results_path):
    import torch

    import measure
    import tokenfocus  # noqa: F401  (loaded by bench.load_pack_nodes)

    threads = args.threads or 1
    torch.set_num_threads(threads)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype or "bf16"]
    memory = measure.PeakMemory(torch.device("cpu"))
    started = time.perf_counter()
    lengths = [args.tokens] if args.tokens else LENGTHS
    results, self_results = [], []
    for self_attention, found in ((True, self_results), (False, results)):
        for length in lengths:
            print(f"== one {'self' if self_attention else 'text cross'}-attention call, L = {length} ({name_of(length)})",
                  flush=True)
            result = measure_length(length, tokenfocus, memory, dtype, self_attention)
            for arm, row in result["rows"].items():
                print(f"   {arm}: peak {row['peak'] / 2 ** 20:.0f} MiB, extra {row['extra'] / 2 ** 20:+.1f} MiB "
                      f"({row['extra'] / result['q_bytes']:+.2f} q), {row['time']:.2f} s ({row['extra_time']:+.1f} %)",
                      flush=True)
            found.append(result)
    body = report(results, str(dtype).replace("torch.", ""), threads, time.perf_counter() - started)
    body += self_attention_table(self_results)
    print("\n".join(body))
    if args.output or len(results) >= 3:
        write_results(Path(args.output) if args.output else results_path, "attention-call", body)
    assert all(math.isfinite(r["rows"]["unpatched"]["time"]) for r in results)
