"""What Residual Alignment's `negative` input costs at CFG 1: per-run time and peak memory of the unpatched
model at CFG 1, the same with Residual Alignment and a negative prompt (one extra model pass per step, on
the negative, batch 1), and the unpatched model at CFG 4 (the uncond pass a CFG > 1 sampler runs), side by
side in one process, interleaved (benchmarks/measure.py).

    COMFYUI_PATH=/path/to/ComfyUI python benchmarks/cfg1_alignment.py [--device cuda --dtype bf16]
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE)]

import bench  # noqa: E402  (puts the harness on the path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="fp32")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=2)
    args = parser.parse_args(argv)
    bench.import_comfyui(args.device, "pytorch")
    import torch

    import bench_models
    import measure

    nodes = bench.load_pack_nodes()
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    models = [bench_models.wan("1.3B", 2, 1560, dtype)]     # Wan 1.3B widths, 2 blocks, 1536 video tokens
    memory = measure.PeakMemory(torch.device(args.device))
    comfy = measure.import_comfyui().comfy
    for model in models:
        aligned = nodes["TokenFocus_ResidualAlignment"].execute(
            model.patcher, strength=1.0, k_mode="auto", fixed_k=8, blocks="all", start_percent=0.0,
            end_percent=1.0, negative=model.negative).args[0]

        def run(patcher, cfg):
            def go():
                latent = model.latent["samples"]
                noise = comfy.sample.prepare_noise(latent, 0)
                comfy.sample.sample(patcher, noise, args.steps, cfg, measure.SAMPLER, measure.SCHEDULER,
                                    model.positive, model.negative, latent, disable_pbar=True, seed=0)
            return go

        runs = {"CFG 1": run(model.patcher, 1.0), "CFG 1 + alignment(negative)": run(aligned, 1.0),
                "CFG 4": run(model.patcher, 4.0)}
        runs["CFG 1"]()      # warm-up
        times, peaks = measure.time_interleaved(runs, args.rounds, memory)
        base_t, base_m = statistics.median(times["CFG 1"]["wall"]), statistics.median(peaks["CFG 1"])
        print(f"{model.name} ({model.sizes}), {args.steps} steps, {args.device} {args.dtype}")
        for name in runs:
            t, m = statistics.median(times[name]["wall"]), statistics.median(peaks[name])
            print(f"  {name:<28} {t:7.2f} s  ({100 * (t / base_t - 1):+5.0f} %)   peak +{m / 2**20:7.1f} MiB "
                  f"({100 * (m / base_m - 1) if base_m else 0:+5.0f} %)")


if __name__ == "__main__":
    main()
