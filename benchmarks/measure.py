"""How the benchmark measures: sampling runs, interleaved timing, peak memory, attention backends, compile.

Everything runs one ComfyUI sampling run at a time through ComfyUI's own sampler (comfy.sample.sample, the
call nodes.common_ksampler makes), so TokenFocus's wrappers and hooks run exactly as in a workflow.
"""
from __future__ import annotations

import ctypes
import gc
import logging
import random
import re
import statistics
import time
from collections import Counter
from contextlib import contextmanager

import torch

from comfy_env import import_comfyui

SAMPLER, SCHEDULER, CFG = "euler", "simple", 4.0   # cfg > 1: cond and uncond both run every step


def sample(bench, patcher, steps: int, seed: int = 0, callback=None) -> torch.Tensor:
    """One sampling run, as nodes.common_ksampler does it (minus the preview callback)."""
    comfy = import_comfyui().comfy
    latent = comfy.sample.fix_empty_latent_channels(patcher, bench.latent["samples"])
    noise = comfy.sample.prepare_noise(latent, seed)
    out = comfy.sample.sample(patcher, noise, steps, CFG, SAMPLER, SCHEDULER, bench.positive, bench.negative,
                              latent, callback=callback, disable_pbar=True, seed=seed)
    _sync(patcher)
    return out


def _sync(patcher) -> None:
    if torch.device(patcher.load_device).type == "cuda":
        torch.cuda.synchronize()


# ---------------------------------------------------------------------------------------------------
# timing


def time_interleaved(runs: dict, rounds: int, memory: "PeakMemory | None" = None) -> tuple:
    """({arm: {"wall": [s], "cpu": [s]}}, {arm: [peak bytes]}) per run. Each round runs every arm once, in
    an order rotated by one per round, so slow drifts of a shared machine hit every arm alike and no arm
    always runs first. Process CPU time is kept besides wall time: with one thread it excludes the time
    another process held the core. The peak memory of each run is read around it, outside the timer."""
    names = list(runs)
    times = {name: {"wall": [], "cpu": []} for name in names}
    peaks = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            if memory is not None:
                memory.start()  # collects garbage too
            else:
                gc.collect()  # a collection inside a timed run would land on one arm by chance
            wall, cpu = time.perf_counter(), time.process_time()
            runs[name]()
            times[name]["cpu"].append(time.process_time() - cpu)
            times[name]["wall"].append(time.perf_counter() - wall)
            if memory is not None:
                peaks[name].append(memory.stop())
    return times, peaks


def overhead_percent(patched: list, base: list) -> float:
    """(median patched - median unpatched) / median unpatched, in percent."""
    return 100.0 * (statistics.median(patched) / statistics.median(base) - 1.0)


def bootstrap_ci(patched: list, base: list, n: int = 2000, seed: int = 0) -> tuple:
    """95% interval of overhead_percent, resampling whole rounds (a round's runs share the machine's state)."""
    rng = random.Random(seed)
    k = len(base)
    values = []
    for _ in range(n):
        idx = [rng.randrange(k) for _ in range(k)]
        values.append(overhead_percent([patched[i] for i in idx], [base[i] for i in idx]))
    values.sort()
    return values[int(0.025 * n)], values[int(0.975 * n) - 1]


def iqr(values: list) -> float:
    if len(values) < 2:
        return 0.0
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[2] - q[0]


# ---------------------------------------------------------------------------------------------------
# peak memory


class PeakMemory:
    """Peak memory a sampling run adds on top of what was allocated before it (weights, conds).

    CUDA: torch.cuda.max_memory_allocated after reset_peak_memory_stats (exact, the caching allocator's
    own count). CPU: the kernel's resident-set high-water mark (VmHWM in /proc/self/status), reset before
    each run by writing 5 to /proc/self/clear_refs, minus the RSS at the start. For that to follow the
    tensors, glibc is told (mallopt) to serve every block above 256 KiB with its own mmap and to give
    freed memory back at once, so memory freed by the previous run does not hide this run's growth.
    Exact to a page for large tensors, no sampling thread that could miss a short peak.
    """

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        if not self.cuda:
            self.libc = ctypes.CDLL("libc.so.6")
            m_trim_threshold, m_mmap_threshold = -1, -3
            self.libc.mallopt(m_mmap_threshold, 256 * 1024)
            self.libc.mallopt(m_trim_threshold, 256 * 1024)

    method = property(lambda self: "torch.cuda.max_memory_allocated" if self.cuda else
                      "peak RSS growth (VmHWM after clear_refs, glibc mmap threshold 256 KiB)")

    def start(self) -> None:
        gc.collect()  # tensors of an earlier run still held by reference cycles would be freed mid-run
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.before = torch.cuda.memory_allocated()
            return
        self.libc.malloc_trim(0)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        self.before = _status_kib("VmRSS") * 1024

    def stop(self) -> int:
        """Bytes the peak rose above what was in use at start()."""
        if self.cuda:
            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated() - self.before
        return _status_kib("VmHWM") * 1024 - self.before

    def measure(self, fn) -> int:
        self.start()
        fn()
        return self.stop()


def _status_kib(key: str) -> int:
    with open("/proc/self/status") as f:
        return int(re.search(rf"^{key}:\s+(\d+)", f.read(), re.M).group(1))


# ---------------------------------------------------------------------------------------------------
# what ran: attention backends, SDPA kernels, model forwards per step


class AttentionLog:
    """An attention override installed BEFORE the TokenFocus nodes, so TokenFocus wraps it: it sees the
    backend function TokenFocus finally calls (the one ComfyUI chose, unless a node switched it), whether
    a mask was added, and, running the backend under a torch dispatch mode, which aten SDPA op ran (flash,
    efficient, cudnn; F.scaled_dot_product_attention is a composite that dispatches to one of them). Only
    the backend call is under the mode: TokenFocus's own ops around it are not slowed down."""

    def __init__(self):
        self.calls = Counter()
        self.sdpa = set()

    def install(self, patcher):
        clone = patcher.clone()
        options = clone.model_options["transformer_options"]
        previous = options.get("optimized_attention_override")

        def override(func, *args, **kwargs):
            self.calls[(getattr(func, "__name__", repr(func)), kwargs.get("mask") is not None)] += 1
            with _sdpa_ops(self.sdpa):
                return previous(func, *args, **kwargs) if previous is not None else func(*args, **kwargs)

        options["optimized_attention_override"] = override
        return clone

    def summary(self) -> str:
        return ", ".join(f"{name}{' +mask' if masked else ''} x{n}" for (name, masked), n in sorted(self.calls.items()))


SDPA_OPS = re.compile(r"scaled_dot_product|flash|efficient_attention|cudnn_attention", re.I)


def _sdpa_ops(names: set):
    from torch.utils._python_dispatch import TorchDispatchMode

    class Ops(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if SDPA_OPS.search(func.__name__):
                names.add(func.__name__)
            return func(*args, **(kwargs or {}))

    return Ops()


def inspect(bench, patcher, steps: int, log: AttentionLog, pack_dirs: tuple) -> dict:
    """One untimed run of `steps` steps on a patcher built over `log`: model forwards per step (a forward
    pre-hook; the sampler's callback marks the step ends), the attention backends and SDPA ops called,
    and TokenFocus's own time per step (a fresh cProfile per step). Not for memory: the dispatch mode
    changes what is allocated inside attention."""
    import cProfile

    model = patcher.get_model_object("diffusion_model")
    forwards, profiles = [0], [cProfile.Profile()]

    def next_step(*_):
        profiles[-1].disable()
        forwards.append(0)
        profiles.append(cProfile.Profile())
        profiles[-1].enable()

    handle = model.register_forward_pre_hook(lambda *_: forwards.__setitem__(-1, forwards[-1] + 1))
    profiles[0].enable()
    try:
        sample(bench, patcher, steps, callback=next_step)
    finally:
        profiles[-1].disable()
        handle.remove()
    own = [pack_time(p, pack_dirs) for p in profiles[:steps]]
    sdpa = ", ".join(sorted(log.sdpa)) or "none (no SDPA op: another backend, or SDPA's math fallback)"
    return dict(backend=log.summary(), sdpa=sdpa, forwards=forwards[:steps],
                own_ms=[1e3 * s for s, _ in own], own_top=own[-1][1])


def free_models() -> None:
    comfy = import_comfyui().comfy
    comfy.model_management.unload_all_models()
    comfy.model_management.soft_empty_cache()
    gc.collect()


# ---------------------------------------------------------------------------------------------------
# torch.compile


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@contextmanager
def dynamo_logs():
    """Collects, without printing them, dynamo's graph-break and recompile messages (the `graph_breaks`
    and `recompiles` log artifacts) and its warnings (e.g. 'hit config.recompile_limit')."""
    import torch._dynamo.guards
    import torch._dynamo.symbolic_convert

    logs = {"breaks": _Collect(), "recompiles": _Collect(), "warnings": _Collect()}
    logs["warnings"].setLevel(logging.WARNING)
    loggers = {"breaks": torch._dynamo.symbolic_convert.graph_break_log,
               "recompiles": torch._dynamo.guards.recompiles_log,
               "warnings": logging.getLogger("torch._dynamo")}  # all of dynamo's warnings, e.g. the recompile limit
    torch._logging.set_logs(recompiles=True, graph_breaks=True)
    saved = {}
    for key, logger in loggers.items():
        saved[key] = logger.propagate
        logger.addHandler(logs[key])
        logger.propagate = False
    try:
        yield {k: v.messages for k, v in logs.items()}
    finally:
        for key, logger in loggers.items():
            logger.removeHandler(logs[key])
            logger.propagate = saved[key]
        torch._logging.set_logs()


def compile_run(bench, patcher, steps: int, backend: str, pack_dirs: tuple) -> dict:
    """Compile the diffusion model as ComfyUI's TorchCompileModel node does (comfy_api's
    set_torch_compile_wrapper: torch.compile behind an APPLY_MODEL wrapper), sample, and count what dynamo
    did over the whole run, split by where it happened: TokenFocus's code or elsewhere (ComfyUI, torch);
    then sample once more and count again. Dynamo's caches and counters are reset first, so each arm counts
    from zero."""
    import torch._dynamo
    from comfy_api.torch_helpers import set_torch_compile_wrapper
    from torch._dynamo.utils import counters

    eager = sample(bench, patcher, steps)
    torch._dynamo.reset()
    counters.clear()
    compiled = patcher.clone()
    set_torch_compile_wrapper(model=compiled, backend=backend)
    start = time.perf_counter()
    with dynamo_logs() as logs:
        try:
            out, error = sample(bench, compiled, steps), None
        except Exception as e:  # a model that does not compile is a result, not a crash of the benchmark
            out, error = None, f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
    seconds = time.perf_counter() - start
    counted = dict(counters["graph_break"]), counters["stats"]["unique_graphs"]
    # A second run on the same compiled model: what a schedule costs beyond the first run. A node whose
    # step range switches off mid-run needs a second program once; a second run should find both cached.
    counters.clear()
    rerun = dict(breaks=0, recompiles=0)
    if error is None:
        with dynamo_logs() as again:
            sample(bench, compiled, steps)
        rerun = dict(breaks=sum(counters["graph_break"].values()), recompiles=len(again["recompiles"]))
    breaks = [_break_site(m) for m in logs["breaks"]]
    recompiles = [_recompile_site(m) for m in logs["recompiles"]]
    in_pack = lambda site: site[0].startswith(pack_dirs)  # noqa: E731
    result = dict(
        seconds=seconds, error=error,
        graph_breaks=sum(counted[0].values()),
        pack_breaks=sorted({f"{_short(f)}:{line} {why}" for f, line, why in breaks if in_pack((f,))}),
        other_breaks=sorted({f"{_short(f)}:{line} {why}" for f, line, why in breaks if not in_pack((f,))}),
        recompiles=len(recompiles),
        pack_recompiles=sum(in_pack(r) for r in recompiles),
        recompile_reasons=sorted({f"{_short(f)} {func}: {guard}" for f, func, guard in recompiles if in_pack((f,))}),
        other_recompile_reasons=sorted({f"{_short(f)} {func}: {guard}" for f, func, guard in recompiles if not in_pack((f,))}),
        limit_hits=[m.splitlines()[0] for m in logs["warnings"] if "recompile_limit" in m or "cache_size_limit" in m],
        graphs=counted[1],
        rerun_breaks=rerun["breaks"], rerun_recompiles=rerun["recompiles"],
        max_rel_diff=None if out is None else float((out - eager).abs().max() / eager.abs().max().clamp_min(1e-12)),
    )
    torch._dynamo.reset()
    return result


def _short(path: str) -> str:
    parts = path.split("/")
    return "/".join(parts[-2:])


def _break_site(message: str) -> tuple:
    """(file, line, 'code: kind of break') of a graph-break log message; the kind is the line naming the
    break type after 'Graph Break Reason:' (e.g. 'Data-dependent branching')."""
    import linecache

    where = re.search(r"in user code at (.+):(\d+)", message)
    path, line = (where.group(1), int(where.group(2))) if where else ("?", 0)
    lines = message.split("Graph Break Reason:", 1)[-1].splitlines()
    kinds = [l.strip() for l in lines[1:] if l.strip() and not l.startswith((" ", "*")) and not l.rstrip().endswith(":")]
    kind = kinds[0] if kinds else lines[0].strip()
    code = linecache.getline(path, line).strip()
    return path, line, f"`{code[:70]}`: {kind[:80]}"


def _recompile_site(message: str) -> tuple:
    """(file, function, first failed guard) of a 'Recompiling function f in file:line' message."""
    head = re.search(r"Recompiling function (\S+) in (.+):\d+", message)
    guard = next((l.strip()[2:] for l in message.splitlines() if l.strip().startswith("- ") and "User stack" not in l), "?")
    return (head.group(2) if head else "?", head.group(1) if head else "?", guard.split("#")[0].strip()[:100])


# ---------------------------------------------------------------------------------------------------
# where TokenFocus's own time goes


def pack_time(profile, pack_dirs: tuple) -> tuple:
    """(seconds of TokenFocus's own work in a cProfile profile, its top 3 functions): the pack's Python
    self time plus the torch calls the pack makes itself (q * gamma, an SVD...), not the ComfyUI block or
    attention a hook calls into. Much steadier than a difference of two run times; cProfile's own cost
    per Python call makes it an upper bound."""
    import os
    import pstats

    torch_root = os.path.dirname(torch.__file__)
    in_pack = lambda f: f[0].startswith(pack_dirs)  # noqa: E731
    stats = pstats.Stats(profile).stats
    # Torch functions that call back into the pack (torch.no_grad's decorator wrapper...): their time is
    # the pack's own, already counted where it is spent.
    wrappers = {caller for func, (*_, callers) in stats.items() if in_pack(func) for caller in callers if not in_pack(caller)}
    per_func = Counter()
    for func, (_, _, tottime, _, callers) in stats.items():
        if in_pack(func):
            per_func[func] += tottime
        elif (func[0] == "~" or func[0].startswith(torch_root)) and func not in wrappers:
            for caller, (_, _, _, cumtime) in callers.items():  # builtins and torch, called from the pack
                if in_pack(caller):
                    per_func[caller] += cumtime
    top = [f"{os.path.basename(f[0])}:{f[2]} {t * 1e3:.1f} ms" for f, t in per_func.most_common(3)]
    return sum(per_func.values()), top
