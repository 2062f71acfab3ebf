"""TokenFocus benchmark: per-step time, peak memory, attention kernel and torch.compile behaviour of each
node alone and of all nodes chained, against the same model unpatched, side by side in one process.

    COMFYUI_PATH=/path/to/ComfyUI python benchmarks/bench.py --quick    # < 1 min on a 2-core CPU
    COMFYUI_PATH=/path/to/ComfyUI python benchmarks/bench.py            # full; writes benchmarks/RESULTS.md
    COMFYUI_PATH=/path/to/ComfyUI python benchmarks/bench.py --device cuda --dtype bf16

benchmarks/README.md says what is measured and how. The last line printed is always
`max_overhead_percent=<worst per-step time overhead of any single node that has a time target>`.
"""
from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.util
import logging
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(HERE), str(REPO / "tests" / "integration")]  # the harness: comfy_env, tiny_models

import comfy_env  # noqa: E402  (imports nothing from ComfyUI)

# ---------------------------------------------------------------------------------------------------
# The nodes: one entry each. `settings` are the node's inputs besides the model (a callable gets the
# BenchModel; inputs not named take the schema's default), `time_target` maps the model family to the
# per-step target in percent (None: the target is not a time). Settings: the node as a user runs it,
# acting on every block and every step, so each timed step pays the node's full per-step cost.

ALL = dict(blocks="all", start_percent=0.0, end_percent=1.0)
WEIGHTS = lambda bench: bench.token_weights()  # noqa: E731  (what Token Importance gives; needs no CLIP)
# Compile check: on in steps 1-2 of 3 (a second active step shows whatever a step changes in the guards),
# off in step 3 (a switch mid-run).
COMPILE_SWITCH = dict(end_percent=0.5)


def wan_or_joint(wan, joint):
    return lambda family: wan if family == "wan" else joint


@dataclass(frozen=True)
class NodeSpec:
    node_id: str
    label: str
    settings: dict
    time_target: object                  # family -> percent, or None
    target_text: str
    compile_settings: dict = field(default_factory=lambda: COMPILE_SWITCH)


NODE_SPECS = [
    NodeSpec("TokenFocus_AttentionTemperature", "Attention Temperature", dict(ALL, gamma=1.35),
             lambda family: 0.5, "<= 0.5 %"),
    NodeSpec("TokenFocus_TokenReweight", "Token Reweighting", dict(ALL, token_weights=WEIGHTS),
             lambda family: 2.0, "<= 2 %"),
    NodeSpec("TokenFocus_TokenSpacing", "Token Spacing", dict(ALL), wan_or_joint(1.0, 5.0), "<= 1 % Wan, <= 5 % joint"),
    NodeSpec("TokenFocus_ResidualAlignment", "Residual Alignment", dict(ALL), wan_or_joint(1.0, 5.0),
             "<= 1 % Wan, <= 5 % joint"),
    NodeSpec("TokenFocus_ImportanceGuidance", "Importance Guidance",
             dict(token_weights=WEIGHTS, start_percent=0.0, end_percent=0.3), None,
             "one extra forward inside its step range, none outside"),
]
MEMORY_TARGET = 1.0  # percent above unpatched
UNPATCHED, AA, CHAIN = "unpatched", "unpatched (A/A)", "all chained"
PACK_DIRS = tuple(str(REPO / d) + os.sep for d in ("core", "runtime", "nodes"))  # TokenFocus's own code

# Sizes: (blocks, image tokens) per model. CPU: what lets the full run finish in ~8 minutes on 2 cores
# at the real widths; GPU: the real resolutions (Wan/Hunyuan 480p 81 frames, SD3.5/Flux 1024^2).
CPU_SIZES = {"wan1.3b": (2, 256), "sd35m": (2, 256), "sd35l": (1, 256), "flux": (2, 64), "hunyuan": (2, 64),
             "zimage": (2, 256), "qwen_image": (2, 256), "flux2klein": (2, 64)}
CPU_TEXT = {"flux": (256, 256), "hunyuan": (128, 32)}  # (cond, uncond) rows; see bench_models
QUICK_SIZES = {"wan1.3b": (1, 64)}
P480 = (21, 60, 104)  # Wan/Hunyuan latent of 832x480, 81 frames: 32760 tokens
GPU_SIZES = {"wan1.3b": (4, P480), "wan14b": (2, P480), "sd35m": (4, 4096), "sd35l": (4, 4096),
             "flux": (4, 4096), "hunyuan": (4, P480), "zimage": (4, 4096), "qwen_image": (4, 4096), "flux2": (4, 4096), "flux2klein": (4, 4096),
             "ltx2": (4, (16, 15, 26))}
# The torch.compile check runs each model at its real depth but the harness's tiny widths: graph breaks
# and recompilations depend on the code paths, on which shapes vary and on how many blocks there are
# (a guard per block instance can exhaust dynamo's recompile limit), not on the widths.
COMPILE_TOKENS = 64


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="Wan 1.3B width, 1 block, 64 tokens; no compile check (< 1 min on CPU)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--dtype", default=None, choices=["fp32", "bf16", "fp16"], help="default: fp32 on CPU, bf16 on CUDA")
    p.add_argument("--models", default=None, help="comma list of: wan1.3b, wan14b (GPU), sd35m, sd35l, flux, hunyuan, "
                   "zimage, qwen_image, flux2 (GPU), flux2klein, ltx2")
    p.add_argument("--blocks", type=int, default=None, help="blocks per model (Flux/Hunyuan: half double, half single)")
    p.add_argument("--tokens", type=int, default=None, help="image/video tokens per model (default: see *_SIZES)")
    p.add_argument("--steps", type=int, default=1, help="sampling steps per timed run")
    p.add_argument("--budget", type=float, default=None, help="seconds of timed runs per model (sets the rounds)")
    p.add_argument("--rounds", type=int, default=None, help="fixed number of interleaved rounds (overrides --budget)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default 1 on CPU: see README)")
    p.add_argument("--clock", default=None, choices=["cpu", "wall"],
                   help="what a run's time is: process CPU time (default on CPU with 1 thread) or wall time")
    p.add_argument("--attention", default="pytorch", choices=["pytorch", "comfy", "sub_quad", "split"],
                   help="ComfyUI's attention backend. pytorch (SDPA, default) is what ComfyUI runs on every NVIDIA GPU; "
                   "comfy = what ComfyUI picks on this machine (on a CPU sub_quad, which asks psutil for free memory "
                   "inside every attention call: a graph break under torch.compile)")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile check")
    p.add_argument("--compile-models", default=None,
                   help="models to run the compile check on, or 'all' (default: wan1.3b,sd35m,flux,hunyuan on CPU, wan1.3b,flux on CUDA)")
    p.add_argument("--compile-backend", default=None, help="default: eager on CPU (dynamo capture only), inductor on CUDA")
    p.add_argument("--output", default=None, help="file to write (default: benchmarks/RESULTS.md, not in --quick)")
    p.add_argument("--attention-call", action="store_true",
                   help="only one Wan 14B-wide attention call: extra peak memory and time of adaptive temperature and of "
                   "the reweighting fold at growing video lengths, extrapolated to 480p/720p (attention_call.py)")
    return p.parse_args(argv)


# ---------------------------------------------------------------------------------------------------
# set-up


def import_comfyui(device: str, attention: str):
    """ComfyUI through the harness's comfy_env, after setting the command-line flags its import reads."""
    root = comfy_env.find_comfyui()
    if root is None:
        sys.exit("ComfyUI not found: set COMFYUI_PATH to a ComfyUI source tree")
    sys.path.insert(0, str(root))
    import comfy.cli_args as cli

    flag = {"pytorch": "use_pytorch_cross_attention", "sub_quad": "use_quad_cross_attention",
            "split": "use_split_cross_attention"}.get(attention)
    if flag:
        setattr(cli.args, flag, True)
    if device == "cuda":  # comfy_env sets --cpu unless comfy.model_management is already imported
        import comfy.model_management  # noqa: F401
    return comfy_env.import_comfyui()


def load_pack_nodes() -> dict:
    """{node_id: class} as the pack's extension registers them; the pack is loaded as `tokenfocus` by
    tests/conftest.py, the same loader the tests use."""
    spec = importlib.util.spec_from_file_location("tokenfocus_test_loader", REPO / "tests" / "conftest.py")
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
    extension = asyncio.run(sys.modules["tokenfocus"].comfy_entrypoint())
    return {cls.GET_SCHEMA().node_id: cls for cls in asyncio.run(extension.get_node_list())}


def apply_node(cls, model, settings: dict, bench):
    """The node's execute with `settings` and the schema's defaults for the rest -> the patched model."""
    kwargs = {}
    for item in cls.GET_SCHEMA().inputs:
        if item.get_io_type() == "MODEL":
            kwargs[item.id] = model
        elif item.id in settings:
            value = settings[item.id]
            kwargs[item.id] = value(bench) if callable(value) else value
        elif getattr(item, "default", None) is not None:
            kwargs[item.id] = item.default
        elif not item.optional:  # optional inputs left out (TORA's token_weights) take execute's default
            raise ValueError(f"{cls.__name__}: input '{item.id}' has no default; give it in NODE_SPECS")
    return cls.execute(**kwargs).args[0]


def make_arms(bench, base, specs, nodes, compile_check=False) -> dict:
    """{arm: ModelPatcher}: unpatched, a second unpatched clone (the A/A noise floor), each node alone and,
    with two or more nodes, all of them chained in table order."""
    arms = {UNPATCHED: base} if compile_check else {UNPATCHED: base, AA: base.clone()}
    chained = base
    for spec in specs:
        settings = dict(spec.settings, **(spec.compile_settings if compile_check else {}))
        arms[spec.label] = apply_node(nodes[spec.node_id], base, settings, bench)
        chained = apply_node(nodes[spec.node_id], chained, settings, bench)
    if len(specs) >= 2:
        arms[CHAIN] = chained
    return arms


# ---------------------------------------------------------------------------------------------------
# one model


def bench_model(bench, specs, nodes, plan, memory) -> dict:
    import measure

    steps, clock = plan["steps"], plan["clock"]
    arms = make_arms(bench, bench.patcher, specs, nodes)
    runs = {arm: (lambda p=p: measure.sample(bench, p, steps)) for arm, p in arms.items()}
    rows = {arm: dict(arm=arm) for arm in arms}

    def inspect(arm):
        log = measure.AttentionLog()
        recorded = make_arms(bench, log.install(bench.patcher), specs, nodes)[arm]
        return measure.inspect(bench, recorded, inspect_steps(bench, arm), log, PACK_DIRS)

    # The model's first sampling run (one-off costs; dropped), then one untimed inspection run per arm
    # (measure.inspect), which also warms each arm up. The A/A arm is the unpatched model: what ran is the same.
    start = time.perf_counter()
    runs[UNPATCHED]()
    per_run = time.perf_counter() - start
    for arm in arms:
        start = time.perf_counter()
        rows[arm].update(inspect(arm) if arm != AA else {k: v for k, v in rows[UNPATCHED].items() if k != "arm"})
        print(f"   inspected [{arm}] in {time.perf_counter() - start:.1f} s", flush=True)

    fit = int(plan["budget"] / (per_run * len(arms)))
    rounds = plan["rounds"] or max(plan["min_rounds"], min(60, fit))
    print(f"   timing: {len(arms)} arms x {rounds} interleaved rounds of {steps} step(s)", flush=True)
    times, peaks = measure.time_interleaved(runs, rounds, memory)
    base = times[UNPATCHED][clock]
    peak0 = min(peaks[UNPATCHED])  # memory is deterministic; a page-cache hiccup only ever adds
    for arm, row in rows.items():
        t = times[arm]
        row.update(median=statistics.median(t[clock]) / steps, iqr=measure.iqr(t[clock]) / steps,
                   wall=statistics.median(t["wall"]) / steps, peak=min(peaks[arm]))
        if arm != UNPATCHED:
            row.update(overhead=measure.overhead_percent(t[clock], base), ci=measure.bootstrap_ci(t[clock], base),
                       mem_delta=100.0 * (row["peak"] - peak0) / peak0)
        if "own_ms" in row:
            row["own_share"] = [100.0 * ms / 1e3 / row["median"] for ms in row["own_ms"]]
    result = dict(title=bench.name, family=bench.family, sizes=bench.sizes, rows=list(rows.values()),
                  rounds=rounds, steps=steps, clock=clock)
    result["sigmas"] = step_sigmas(bench, inspect_steps(bench, UNPATCHED))
    judge(result, bench, specs)
    print_model(result)
    return result


def inspect_steps(bench, arm) -> int:
    """Two steps on Wan, whose step 2 differs from step 1: Wan's text edits are computed once per run and
    reused (step 2 is what the later steps of a long run cost), and Importance Guidance's range ends
    after step 1 (step 2 shows it adds nothing outside). Elsewhere every step costs the same: one."""
    return 2 if bench.family == "wan" else 1


def step_sigmas(bench, steps):
    import comfy.samplers

    import measure

    sampling = bench.patcher.get_model_object("model_sampling")
    return [float(s) for s in comfy.samplers.calculate_sigmas(sampling, measure.SCHEDULER, steps)[:steps]]


def compile_check(name, specs, nodes, plan) -> dict:
    import bench_models
    import measure

    build, _ = bench_models.MODELS[name]
    bench = build(bench_models.REAL_DEPTH[name], COMPILE_TOKENS, plan["dtype"], tiny=True)
    print(f"\n== torch.compile check: {bench.name} at real depth ({bench.sizes['blocks']} blocks), tiny width, "
          f"{plan['compile_backend']} backend", flush=True)
    out = {}
    for arm, patcher in make_arms(bench, bench.patcher, specs, nodes, compile_check=True).items():
        r = measure.compile_run(bench, patcher, plan["compile_steps"], plan["compile_backend"], PACK_DIRS)
        out[arm] = r
        print(f"   [{arm}] {compile_summary(r)} ({r['seconds']:.0f} s)", flush=True)
        for line in r["pack_breaks"][:4] + r["recompile_reasons"][:3] + r["limit_hits"][:2]:
            print(f"      {line}")
    family = f"{bench.name} ({bench.sizes['blocks']} blocks)"
    del bench
    measure.free_models()
    return dict(family=family, arms=out)


def compile_summary(r) -> str:
    if r["error"]:
        return f"FAILED: {r['error']}"
    diff = "n/a" if r["max_rel_diff"] is None else f"{r['max_rel_diff']:.1e}"
    return (f"compiled; graph breaks {r['graph_breaks']} (break sites in TokenFocus {len(r['pack_breaks'])}, elsewhere "
            f"{len(r['other_breaks'])}), recompiles {r['recompiles']} ({r['pack_recompiles']} of TokenFocus frames), "
            f"recompile-limit hits {len(r['limit_hits'])}, graphs {r['graphs']}, max rel diff vs eager {diff}; "
            f"second run: {r['rerun_breaks']} breaks, {r['rerun_recompiles']} recompiles")


def memory_scaling(name, specs, nodes, plan, memory, tokens=(256, 1024, 2048)) -> dict:
    """Peak memory of each arm at growing image-token counts (1 block: a block's peak does not depend on how
    many run before it). What a node adds is either text-sized (fixed, and it matters only while the text
    side is the block's peak) or grows with the image; Δ % at the largest size says which."""
    import bench_models
    import measure

    build, _ = bench_models.MODELS[name]
    peaks = {}
    for n in tokens:
        bench = build(1, n, plan["dtype"])
        arms = make_arms(bench, bench.patcher, specs, nodes)
        measure.sample(bench, bench.patcher, 1)
        for _ in range(2):  # twice, interleaved; the smaller peak (a page-cache hiccup only ever adds)
            for arm, patcher in arms.items():
                peak = memory.measure(lambda p=patcher, b=bench: measure.sample(b, p, 1))
                peaks.setdefault(arm, {}).setdefault(n, []).append(peak)
        title = bench.name
        del bench, arms
        measure.free_models()
    peaks = {arm: [min(by_tokens[n]) for n in tokens] for arm, by_tokens in peaks.items()}
    base = peaks[UNPATCHED]
    rows = [dict(arm=arm, deltas=[a - b for a, b in zip(p, base)], base=base) for arm, p in peaks.items()]
    print(f"   memory scaling ({title}, 1 block, {tokens} tokens), Δ MiB: " + ", ".join(
        f"{r['arm']}: " + " / ".join(f"{d / 2**20:+.1f}" for d in r["deltas"]) for r in rows))
    return dict(title=title, tokens=tokens, rows=rows)


def memory_scaling_table(scaling) -> list:
    tokens = scaling["tokens"]
    lines = [f"### Peak memory against resolution ({scaling['title']}, 1 block)", "",
             f"Δ peak at {', '.join(map(str, tokens))} image tokens. A Δ that stays fixed in MiB is text-sized: its "
             "share falls as the image grows and vanishes at a real resolution (Wan 480p: 32760 tokens); one that "
             "grows with the image does not.", "",
             "| arm | unpatched peak MiB | " + " | ".join(f"Δ MiB at {n}" for n in tokens) + " | "
             + " | ".join(f"Δ % at {n}" for n in tokens) + " |",
             "|---|---|" + "---|" * (2 * len(tokens))]
    for r in scaling["rows"][1:]:
        base = r["base"]
        lines.append(f"| {r['arm']} | {' / '.join(f'{b / 2**20:.1f}' for b in base)} | "
                     + " | ".join(f"{d / 2**20:+.1f}" for d in r["deltas"]) + " | "
                     + " | ".join(f"{100 * d / b:+.1f}" for d, b in zip(r["deltas"], base)) + " |")
    return lines


# ---------------------------------------------------------------------------------------------------
# verdicts


def judge(result, bench, specs):
    """A `verdicts` list on each arm's row: time, forwards (Importance Guidance), memory, kernel."""
    from tokenfocus.core.schedule import step_range

    by_label = {s.label: s for s in specs}
    rows = {r["arm"]: r for r in result["rows"]}
    base = rows[UNPATCHED]
    for row in result["rows"]:
        spec, verdicts = by_label.get(row["arm"]), []
        if spec is not None and spec.time_target is not None:
            verdicts.append(time_verdict(row, spec.time_target(result["family"]), rows[AA]["overhead"]))
            row["estimate"] = max(row["own_share"][-1], row["ci"][0] - abs(rows[AA]["overhead"]))
        if spec is not None and spec.time_target is None and "forwards" in row:
            sampling = bench.patcher.get_model_object("model_sampling")
            rng = step_range(spec.settings["start_percent"], spec.settings["end_percent"], sampling.percent_to_sigma)
            extra = [p - base["forwards"][0] for p in row["forwards"]]  # unpatched: the same every step
            inside = [rng.contains(s) for s in result["sigmas"]]
            ok = all((e >= 1) if i else (e == 0) for e, i in zip(extra, inside))
            verdicts.append(f"forwards {'met' if ok else 'MISSED'}: extra per step {extra}, in range {inside}")
        if row["arm"] != UNPATCHED:
            delta = row["mem_delta"]
            verdicts.append(f"memory {'met' if delta <= MEMORY_TARGET else f'MISSED by {delta - MEMORY_TARGET:.2f} points'}")
            if "backend" in row:
                same = _names(row["backend"]) == _names(base["backend"]) and row["sdpa"] == base["sdpa"]
                verdicts.append("kernel kept" if same else "KERNEL CHANGED")
        row["verdicts"] = verdicts


def _names(summary: str) -> set:
    return {part.rsplit(" x", 1)[0] for part in summary.split(", ") if part}


def time_verdict(row, target: float, noise: float) -> str:
    """The overhead is at least TokenFocus's own time (cProfile: steady, but blind to what a node changes
    inside ComfyUI's own ops, e.g. attention over a wider head) and at least what the A/B timing shows
    beyond its noise (the low end of its 95% interval minus the A/A arm's overhead). The verdict takes
    the larger of the two."""
    floor = row["ci"][0] - abs(noise)
    own = row["own_share"][-1]  # the last inspected step: a later step of a long run
    estimate, source = (own, "own time") if own >= floor else (floor, "A/B beyond noise")
    verdict = "met" if estimate <= target else f"MISSED by {estimate - target:.2f} points"
    return f"time {verdict} ({source} {estimate:.2f} %, target {target:g} %)"


def short(verdict: str) -> str:
    """A verdict for the summary table: 'time MISSED by 1.20 points (own time 1.70 %, ...)' -> 'time ✗ own 1.70 %'."""
    import re

    word = verdict.split()[0].lower()
    mark = "✗" if ("MISSED" in verdict or "CHANGED" in verdict) else "✓"
    source = re.search(r"\((own time|A/B beyond noise) ([+\-]?[\d.]+) %", verdict)
    if word == "time" and source:
        return f"time {mark} {source.group(1).replace(' beyond noise', ' ≥').replace('own time', 'own')} {source.group(2)} %"
    missed = re.search(r"MISSED by ([\d.]+)", verdict)
    return f"{word} {mark}" + (f" +{missed.group(1)}" if missed and word == "memory" else "")


def summary_table(results, specs) -> list:
    lines = ["| node | target (time) | " + " | ".join(r["title"] for r in results) + " |",
             "|---|---|" + "---|" * len(results)]
    for spec in specs:
        cells = []
        for res in results:
            row = next(r for r in res["rows"] if r["arm"] == spec.label)
            over = f"{row['overhead']:+.2f} %: " if spec.time_target is not None else ""
            cells.append(over + ", ".join(short(v) for v in row["verdicts"]))
        lines.append(f"| {spec.label} | {spec.target_text} | " + " | ".join(cells) + " |")
    return lines


def max_overhead(results, specs, key="estimate") -> float:
    """The worst per-step overhead of a single node with a time target: by default the verdict's estimate
    (the larger of its own time and the A/B timing beyond noise); key="overhead": the raw A/B figure."""
    timed = {s.label for s in specs if s.time_target is not None}
    values = [r[key] for res in results for r in res["rows"] if r["arm"] in timed]
    return max(values) if values else 0.0


# ---------------------------------------------------------------------------------------------------
# output


def tables(result) -> list:
    clock = "CPU" if result.get("clock") == "cpu" else "wall"
    lines = [f"| arm | ms/step ({clock}, median) | IQR ms | wall ms/step | overhead % | 95% CI % | TokenFocus own ms/step "
             "(share), per inspected step | peak MiB | Δ peak % | verdicts |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        over = f"{r['overhead']:+.2f}" if "overhead" in r else "—"
        ci = f"{r['ci'][0]:+.2f}..{r['ci'][1]:+.2f}" if "ci" in r else "—"
        mem = f"{r['mem_delta']:+.2f}" if "mem_delta" in r else "—"
        own = ", ".join(f"{ms:.1f} ({s:.2f} %)" for ms, s in zip(r["own_ms"], r["own_share"])) if "own_ms" in r else "—"
        lines.append(f"| {r['arm']} | {r['median'] * 1e3:.1f} | {r['iqr'] * 1e3:.1f} | {r['wall'] * 1e3:.1f} | {over} | {ci} | "
                     f"{own} | {r['peak'] / 2**20:.1f} | {mem} | {'; '.join(r['verdicts']) or '—'} |")
    if "backend" in result["rows"][0]:
        lines += ["", "| arm | attention backend called (calls) | SDPA ops | model forwards per step | where TokenFocus's own time goes |",
                  "|---|---|---|---|---|"]
        for r in result["rows"]:
            lines.append(f"| {r['arm']} | {r['backend']} | {r['sdpa']} | {r['forwards']} | {', '.join(r['own_top']) or '—'} |")
    return lines


def print_model(result):
    for line in tables(result):
        print("   " + line)


def compile_table(checks, backend, steps) -> list:
    lines = [f"### torch.compile ({backend} backend, {steps} sampling steps; node settings switch off after step 2)", "",
             "Compiled as ComfyUI's TorchCompileModel node does (comfy_api `set_torch_compile_wrapper`: torch.compile of "
             "the diffusion model behind an APPLY_MODEL wrapper), each arm after `torch._dynamo.reset()`. Models at their real "
             "depth and the test harness's tiny widths: breaks and recompilations depend on the code paths, on which shapes "
             "vary and on how many block instances there are (dynamo's recompile limit is 8 per code object), not on the "
             "widths. Counts are over the whole sampling run; a break site or recompiled frame 'in TokenFocus' is the "
             "pack's code. A recompile-limit hit means dynamo stopped compiling that code and runs it eagerly from then on. "
             "'Second run': the same compiled model sampled again, counted afresh.", "",
             "| family | arm | compiles | graph breaks | break sites in TokenFocus | recompiles (TokenFocus frames) | "
             "recompile-limit hits | graphs | second run: breaks, recompiles | max rel diff vs eager |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for check in checks:
        for arm, r in check["arms"].items():
            diff = "—" if r["max_rel_diff"] is None else f"{r['max_rel_diff']:.1e}"
            lines.append(f"| {check['family']} | {arm} | {'no: ' + r['error'] if r['error'] else 'yes'} | "
                         f"{r['graph_breaks']} | {len(r['pack_breaks'])} | {r['recompiles']} ({r['pack_recompiles']}) | "
                         f"{len(r['limit_hits'])} | {r['graphs']} | {r['rerun_breaks']}, {r['rerun_recompiles']} | {diff} |")
    for check in checks:
        for arm, r in check["arms"].items():
            if arm == UNPATCHED:
                continue
            reasons = r["recompile_reasons"] + [f"{s} (ComfyUI frame)" for s in r["other_recompile_reasons"]]
            if r["pack_breaks"] or reasons:
                lines += ["", f"{check['family']}, {arm}:"]
                lines += [f"- break at {s}" for s in r["pack_breaks"][:8]]
                lines += [f"- recompile of {s.replace('|', '/')}" for s in reasons[:5]]
                more = len(r["pack_breaks"][8:]) + len(reasons[5:])
                lines += [f"- ... {more} more"] if more else []
    return lines


def machine(device, threads) -> dict:
    import platform

    import torch

    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
    mem = next((int(l.split()[1]) / 2**20 for l in open("/proc/meminfo") if l.startswith("MemTotal")), 0)
    info = dict(cpu=f"{cpu} ({os.cpu_count()} cores, {threads} torch thread(s)), {mem:.0f} GiB RAM",
                torch=torch.__version__, python=platform.python_version(), os=platform.platform())
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def report(plan, info, results, checks, specs, skipped, memory_method, elapsed) -> list:
    import comfy.ldm.modules.attention as attention

    import measure

    gpu = plan["device"].type == "cuda"
    lines = [f"## {'GPU' if gpu else 'CPU'} figures", "",
             f"`{' '.join(['python benchmarks/bench.py', *sys.argv[1:]])}`, {time.strftime('%Y-%m-%d')}, {elapsed / 60:.1f} min, "
             f"pack at {pack_revision()}.", "",
             f"- machine: {info.get('gpu', 'no GPU')}; {info['cpu']}; {info['os']}",
             f"- torch {info['torch']}, Python {info['python']}, ComfyUI {plan['comfy_version']}, {plan['dtype']}",
             f"- attention backend ComfyUI chose: `{attention.optimized_attention.__name__}` (what each arm called is below)",
             f"- nodes: {', '.join(s.label for s in specs)}" + (f"; not registered, skipped: {', '.join(skipped)}" if skipped else ""),
             f"- timing: {plan['steps']} sampling step(s) per run ({measure.SAMPLER}/{measure.SCHEDULER}, cfg {measure.CFG}: "
             f"cond and uncond every step), arms interleaved in rotated order, clock: "
             f"{'process CPU time' if plan['clock'] == 'cpu' else 'wall time'}; overhead = (median − median unpatched) / "
             "median unpatched; 95% CI by resampling rounds",
             f"- peak memory: {memory_method}, on the timed runs (smallest of the rounds); Δ relative to the unpatched "
             "run's own peak (activations, not weights)",
             "- what ran and TokenFocus's own time (cProfile, per step): one untimed inspection run per arm, 2 steps on "
             "Wan (step 2 = a later step of a long run; Importance Guidance's range ends after step 1), else 1", "",
             "| model | width | heads | FFN | blocks | image tokens | text tokens | rounds |", "|---|---|---|---|---|---|---|---|"]
    for res in results:
        z = res["sizes"]
        lines.append(f"| {res['title']} | {z['dim']} | {z['heads']} | {z['ffn']} | {z['blocks']} | {z['image_tokens']} | "
                     f"{z['text_tokens']} | {res['rounds']} |")
    lines += ["", "### Target verdicts", "", "The A/B overhead, then ✓ met / ✗ missed. Time: the larger of "
              "TokenFocus's own time ('own') and what the A/B timing shows beyond its noise ('A/B ≥'); memory: points "
              "above the 1 % target. Details per model below.", "", *summary_table(results, specs)]
    for res in results:
        lines += ["", f"### {res['title']}", "", *tables(res)]
    if checks:
        lines += ["", *compile_table(checks, plan["compile_backend"], plan["compile_steps"])]
    lines += ["", f"**max_overhead_percent={max_overhead(results, specs):.2f}**: the worst per-step overhead of a single node "
              "with a time target, as the verdicts estimate it (the larger of its own time and the A/B timing beyond noise); "
              f"the worst raw A/B figure is {max_overhead(results, specs, 'overhead'):+.2f} % against an A/A noise floor of "
              f"±{max(abs(r['overhead']) for res in results for r in res['rows'] if r['arm'] == AA):.2f} %."]
    return lines


def pack_revision() -> str:
    """The commit the pack's code was measured at, and whether its code had uncommitted changes."""
    import subprocess

    def git(*args):
        return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True).stdout.strip()

    dirty = git("status", "--porcelain", "--", "core", "runtime", "nodes")
    return f"commit {git('rev-parse', '--short', 'HEAD') or '?'}" + (" with uncommitted changes" if dirty else "")


def write_results(path: Path, device_key: str, body: list) -> None:
    """The file keeps one section per device kind; a run replaces only its own."""
    begin, end = f"<!-- {device_key}: begin -->", f"<!-- {device_key}: end -->"
    text = path.read_text() if path.exists() else "# TokenFocus benchmark results\n"
    section = "\n".join([begin, *body, end])
    if begin in text and end in text:
        text = text[:text.index(begin)] + section + text[text.index(end) + len(end):]
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    if "<!-- cuda: begin -->" not in text:
        text += ("\n<!-- cuda: begin -->\n## GPU figures: not measured yet (no GPU was lent to this task)\n\n"
                 "`python benchmarks/bench.py --device cuda --dtype bf16` on a CUDA machine replaces this section with the "
                 "same tables at the real resolutions (Wan 2.1 1.3B and 14B, SD3.5, Flux, HunyuanVideo), CUDA peak memory "
                 "and the SDPA kernels that ran.\n<!-- cuda: end -->\n")
    path.write_text(text)
    print(f"\nwrote {path}")


# ---------------------------------------------------------------------------------------------------


def main(argv=None):
    started = time.perf_counter()
    args = parse_args(argv)
    import_comfyui(args.device, args.attention)
    import torch

    if args.attention_call:
        import attention_call

        load_pack_nodes()
        return attention_call.main(args, write_results, HERE / "RESULTS.md")

    import bench_models
    import measure

    device = torch.device(args.device)
    cpu = device.type == "cpu"
    # One thread on a CPU: on a small shared machine a second thread waits on a busy core and single runs
    # take up to 3x longer at random; one thread keeps its core and its CPU time ignores the other process.
    threads = args.threads or (1 if cpu else torch.get_num_threads())
    torch.set_num_threads(threads)
    sizes = QUICK_SIZES if args.quick else CPU_SIZES if cpu else GPU_SIZES
    plan = dict(
        quick=args.quick, device=device, steps=args.steps, rounds=args.rounds,
        dtype={"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype or ("fp32" if cpu else "bf16")],
        clock=args.clock or ("cpu" if cpu and threads == 1 else "wall"),
        budget=args.budget or (16.0 if args.quick else 40.0 if cpu else 120.0), min_rounds=4 if args.quick else 3,
        compile=not (args.quick or args.no_compile), compile_steps=3,
        compile_backend=args.compile_backend or ("eager" if cpu else "inductor"),
        comfy_version=comfy_env.comfyui_version(comfy_env.find_comfyui()) or "?",
    )
    memory = measure.PeakMemory(device)
    # TokenFocus logs what it touched (INFO) and some warnings once per sampling run: hundreds of runs here.
    logging.getLogger("TokenFocus").setLevel(logging.ERROR)
    nodes = load_pack_nodes()
    specs = [s for s in NODE_SPECS if s.node_id in nodes]
    skipped = [s.node_id for s in NODE_SPECS if s.node_id not in nodes]
    for node_id in skipped:
        print(f"note: {node_id} is not registered in the pack's extension: skipped")
    info = machine(device, threads)
    print(f"TokenFocus benchmark on {info}; {plan['dtype']}; nodes: {', '.join(s.label for s in specs)}", flush=True)

    models = args.models.split(",") if args.models else list(sizes)
    results = []
    for name in models:
        build, gpu_only = bench_models.MODELS[name]
        if gpu_only and cpu:
            print(f"note: {name} is measured on a GPU only")
            continue
        blocks, tokens = sizes.get(name, CPU_SIZES.get(name, (2, 256)))
        start = time.perf_counter()
        extra = {"text": CPU_TEXT[name]} if cpu and name in CPU_TEXT else {}
        bench = build(args.blocks or blocks, args.tokens or tokens, plan["dtype"], **extra)
        print(f"\n== {bench.name}: {bench.sizes} (built in {time.perf_counter() - start:.1f} s)", flush=True)
        result = bench_model(bench, specs, nodes, plan, memory)
        results.append(result)
        del bench
        measure.free_models()

    scaling = None
    if cpu and not args.quick and "wan1.3b" in models:
        scaling = memory_scaling("wan1.3b", specs, nodes, plan, memory)
    checks = []
    if plan["compile"]:
        # The eager backend only captures: every family on a CPU. Inductor builds every graph: minutes per arm.
        default = "wan1.3b,sd35m,flux,hunyuan" if cpu else "wan1.3b,flux"
        wanted = models if args.compile_models == "all" else (args.compile_models or default).split(",")
        for name in wanted:
            checks.append(compile_check(name, specs, nodes, plan))

    elapsed = time.perf_counter() - started
    output = Path(args.output) if args.output else (None if args.quick else HERE / "RESULTS.md")
    if output is not None:
        plan["dtype"] = str(plan["dtype"]).replace("torch.", "")
        body = report(plan, info, results, checks, specs, skipped, memory.method, elapsed)
        if scaling:
            body[-2:-2] = ["", *memory_scaling_table(scaling)]
        write_results(output, device.type, body)
    noise = max((abs(r["overhead"]) for res in results for r in res["rows"] if r["arm"] == AA), default=0.0)
    print(f"\ntotal {elapsed:.0f} s; worst raw A/B overhead of a single node {max_overhead(results, specs, 'overhead'):+.2f} %, "
          f"A/B noise floor (largest |A/A|) {noise:.2f} %")
    print(f"max_overhead_percent={max_overhead(results, specs):.2f}")


if __name__ == "__main__":
    main()
