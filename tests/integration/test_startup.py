"""Loading the pack adds well under 0.3 s to ComfyUI's start and imports no heavy module (torch._dynamo
and what it pulls in: sympy, ...), measured the way ComfyUI loads a custom node folder, in a fresh process."""
import json
import os
import subprocess
import sys
import textwrap

from comfy_env import REPO_ROOT

HERE = os.path.dirname(os.path.abspath(__file__))
BUDGET_S = 0.3
HEAVY = ("torch._dynamo", "torch._inductor", "sympy", "matplotlib", "scipy", "transformers")

# A fresh process: ComfyUI imported first (its own start), then an empty V3 pack (what loading any pack
# costs ComfyUI: its pyproject parser and so on), then this pack, timed by the process's CPU clock (a busy
# shared machine does not slow it down the way it slows the wall clock).
SCRIPT = textwrap.dedent("""
    import asyncio, json, os, sys, tempfile, time
    sys.path.insert(0, {here!r})
    import comfy_env
    nodes = comfy_env.import_comfyui().nodes
    empty = tempfile.mkdtemp()
    with open(os.path.join(empty, "__init__.py"), "w") as f:
        f.write("from comfy_api.latest import ComfyExtension\\n"
                "class E(ComfyExtension):\\n"
                "    async def get_node_list(self):\\n        return []\\n"
                "async def comfy_entrypoint():\\n    return E()\\n")
    assert asyncio.run(nodes.load_custom_node(empty))
    before = set(sys.modules)
    cpu, wall = time.process_time(), time.perf_counter()
    loaded = asyncio.run(nodes.load_custom_node({pack!r}))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    print(json.dumps(dict(loaded=loaded, cpu=cpu, wall=wall, modules=sorted(set(sys.modules) - before))))
""")


def test_loading_the_pack_is_fast_and_imports_nothing_heavy(comfy):
    script = SCRIPT.format(here=HERE, pack=str(REPO_ROOT))
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, COMFYUI_PATH=str(comfy.path)), cwd=str(REPO_ROOT))
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["loaded"] is True
    heavy = [m for m in result["modules"] if m.split(".")[0] in HEAVY or any(m.startswith(h) for h in HEAVY)]
    assert not heavy, f"loading the pack imported {heavy[:10]}"
    assert result["cpu"] < BUDGET_S, f"loading the pack took {result['cpu']:.2f} s of CPU (wall {result['wall']:.2f} s)"
