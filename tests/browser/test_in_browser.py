"""The pack in a real browser: real ComfyUI (`main.py --cpu`, loopback only) and headless Chromium.

For every bundled workflow: ComfyUI's template browser lists it under the pack and serves it; the editor loads
it with no missing node type; every TokenFocus node shows its preview (blocks on the model family's depth,
the step range), with the same text the Python side computes; the graph converts to a prompt and the server's
own validation finds nothing wrong with the TokenFocus nodes (only the absent model files). The preview follows
edits, and a bad block list or step range shows the Python message in red. The help pages are served.

Skipped, loudly, without Chromium (`apt-get install chromium`, or $CHROMIUM), without a ComfyUI tree
(COMFYUI_PATH, or the ComfyUI this pack is installed in), or without ComfyUI's server packages.

    python tests/browser/test_in_browser.py          # run as a script: also writes docs/*.png and
                                                     # workflows/<name>.jpg (template browser thumbnails)
Set TOKENFOCUS_FRONTEND_ROOT to test another frontend build (ComfyUI's --front-end-root).
"""
from __future__ import annotations

import asyncio
import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
for extra in (HERE, ROOT / "tests", ROOT / "tests" / "integration"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

from comfy_env import comfyui_version, host_lacks  # noqa: E402
import workflow_lib as wl  # noqa: E402
from harness import (  # noqa: E402
    PACK_NAME, Browser, ComfyServer, comfyui_with_server, find_chromium, missing_server_packages, server_entry,
)

NAMES = [p.stem for p in wl.workflow_paths()]


def why_skip() -> str | None:
    if find_chromium() is None:
        return "no Chromium on PATH (apt-get install chromium, or set CHROMIUM)"
    if comfyui_with_server() is None:
        return "no ComfyUI tree with a server (main.py or comfy/cmd/main.py; set COMFYUI_PATH)"
    missing = missing_server_packages()
    if missing:
        return f"ComfyUI's server packages are missing: {', '.join(missing)}"
    return None


# JavaScript run in the page (tests may use the app's internals; the pack's own code may not).
LOAD = """async (wf, dialogs = false) => {
  await app.loadGraphData(wf, true, true, null, { showMissingNodesDialog: dialogs, showMissingModelsDialog: dialogs });
  app.graph.setDirtyCanvas(true, true);
  await new Promise((r) => setTimeout(r, 400));
  const missing = wf.nodes.map((n) => n.type).filter((t) => !(t in LiteGraph.registered_node_types));
  return { missing, nodes: app.graph.nodes.length };
}"""


def load(name: str, dialogs: bool = False) -> str:
    """JavaScript that loads the bundled workflow `name` into the editor, as opening its file does (the
    template route that serves it is checked on its own)."""
    workflow = json.dumps(wl.load(wl.WORKFLOW_DIR / f"{name}.json"))
    return f"({LOAD})({workflow}, {json.dumps(dialogs)})"

# Every TokenFocus node with a block list shows where it acts (Token Importance has none: no preview).
PREVIEWS = """() => app.graph.nodes.filter((n) => n.type.startsWith('TokenFocus_') && n.widgets?.some((w) => w.name === 'blocks')).map((n) => {
  const w = n.widgets.find((w) => w.name === 'tokenfocus_preview');
  const el = w?.element;
  const box = el?.getBoundingClientRect();
  return { id: Number(n.id), type: n.type, found: !!el, shown: !!box && box.width > 50 && box.height > 30 && el.isConnected,
           text: el?.innerText ?? '', error: el?.dataset.error ?? null, cells: el ? el.querySelectorAll('.tokenfocus-block').length : 0, on: el ? el.querySelectorAll('.tokenfocus-block.on').length : 0 };
})"""

EXPORT = "async () => { const p = await app.graphToPrompt(); return JSON.stringify({ workflow: p.workflow, output: p.output }); }"


def set_widget(node_id: int, name: str, value) -> str:
    return (f"(async () => {{ const n = app.graph.getNodeById({node_id}); n.widgets.find((w) => w.name === {json.dumps(name)}).value = "
            f"{json.dumps(value)}; app.graph.setDirtyCanvas(true, true); await new Promise((r) => setTimeout(r, 300)); }})()")


def preview_of(node_id: int) -> str:
    return f"({PREVIEWS})().find((p) => p.id === {node_id})"


def http(url: str, data: bytes | None = None):
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"} if data else {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


class ServerNode:
    """A node definition from the server's /object_info, shaped like a node class for workflow_lib."""

    def __init__(self, info: dict):
        self.info = info

    def INPUT_TYPES(self):  # noqa: N802 (ComfyUI's name)
        return self.info["input"]


def expected_summary(node: dict, workflow: dict, info: dict) -> tuple[str, str]:
    """(family label, the blocks line, how many blocks) as the preview should show them, by the Python grammar."""
    from tokenfocus.core.blocklist import format_blocks, parse_block_list, resolve_blocks

    family = wl.guess_family(next(iter(wl.model_files(wl.model_loader(workflow, node))), None))
    values = wl.widget_values(node, ServerNode(info[node["type"]]))
    blocks = resolve_blocks(parse_block_list(values["blocks"]), family["double"], family["single"], family["name"])
    return family["label"], f"blocks {format_blocks(blocks)}: {len(blocks)} of {family['double'] + family['single']}", len(blocks)


class Session:
    """One server and one browser for the whole module, driven from synchronous tests."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.server = ComfyServer(comfyui_with_server(), front_end_root=os.environ.get("TOKENFOCUS_FRONTEND_ROOT"))
        self.stats = self.server.start()
        self.browser = Browser(find_chromium())
        self.run(self.browser.start())
        self.run(self.browser.open_comfyui(self.server.url))
        self.object_info = json.loads(http(self.server.url + "/object_info")[1])

    def run(self, coroutine):
        return self.loop.run_until_complete(coroutine)

    def js(self, expression: str):
        return self.run(self.browser.evaluate(expression))

    def close(self):
        try:
            self.run(self.browser.close())
        finally:
            self.server.stop()
            self.loop.close()


@pytest.fixture(scope="module")
def session():
    reason = why_skip()
    if reason:
        pytest.skip(f"!!! browser check NOT run: {reason}")
    s = Session()
    yield s
    s.close()


def test_the_template_browser_lists_the_workflows_under_the_pack(session):
    status, body = http(session.server.url + "/api/workflow_templates")
    assert status == 200 and sorted(json.loads(body).get(PACK_NAME, [])) == sorted(NAMES)
    for name in NAMES:
        status, body = http(f"{session.server.url}/api/workflow_templates/{PACK_NAME}/{name}.json")
        if status == 404 and server_entry(comfyui_with_server()) != ["main.py"]:
            # A pip-packaged ComfyUI whose server registers the template file route with no modules: it
            # lists every pack's templates and serves none of their files. Upstream's server serves them.
            host_lacks("the route that serves custom nodes' template files (its server registers it with no modules)")
        assert status == 200 and json.loads(body) == wl.load(wl.WORKFLOW_DIR / f"{name}.json")


def test_help_pages_are_served_where_the_frontend_looks(session):
    # The frontend's node help panel fetches /extensions/<pack>/docs/<node_id>.md (tests/test_help_pages.py
    # checks that every node has one).
    pages = sorted(wl.HELP_DIR.glob("*.md"))
    assert pages
    for page in pages:
        assert page.stem in session.object_info, f"{page.name}: no such node"
        status, body = http(f"{session.server.url}/extensions/{PACK_NAME}/docs/{page.name}")
        assert status == 200 and body == page.read_bytes(), page.name


@pytest.mark.parametrize("name", NAMES)
def test_workflow_loads_with_its_preview_and_passes_validation(session, name):
    workflow = wl.load(wl.WORKFLOW_DIR / f"{name}.json")
    missing, why = wl.types_a_newer_host_has(workflow, session.object_info, comfyui_version(comfyui_with_server()))
    if missing:
        host_lacks(why)  # Flux.2's nodes on 0.3.64: the workflow says it needs a newer ComfyUI
    loaded = session.js(load(name))
    assert loaded["missing"] == [], f"missing node types: {loaded['missing']}"
    assert loaded["nodes"] == len(workflow["nodes"])

    previews = session.js(f"({PREVIEWS})()")
    nodes = wl.nodes_by_id(workflow)
    assert previews
    for p in previews:
        # A preview where a node says where it acts (blocks, steps); none on TokenFocus Prompt, the View...
        values = wl.widget_values(nodes[int(p["id"])], ServerNode(session.object_info[p["type"]]))
        if not {"blocks", "start_percent", "end_percent"} & set(values):
            assert not p["found"], p
            continue
        assert p["found"] and p["shown"], p
        assert p["error"] == "", f"{p['type']} #{p['id']}: {p['error']}"
        if "blocks" not in values:
            continue
        assert "depth checked when the node runs" in p["text"], p["text"]
        label, blocks_line, count = expected_summary(nodes[int(p["id"])], workflow, session.object_info)
        assert label in p["text"] and blocks_line in p["text"], (label, blocks_line, p["text"])
        assert p["on"] == count, f"{p['on']} blocks drawn as selected, {count} expected"

    exported = json.loads(session.js(f"({EXPORT})()"))
    for node in exported["workflow"]["nodes"]:  # what Export would write: the same values, no preview in them
        if not wl.is_tokenfocus(node):
            continue  # a newer frontend may give other nodes more widgets (PreviewAny's display options)
        assert node.get("widgets_values", []) == nodes[node["id"]].get("widgets_values", []), node["type"]

    # Model files are renamed to names no ComfyUI has or can fetch: the prompt must be refused by validation,
    # never queued (a ComfyUI with a model downloader accepts a known model's name and would try to fetch it).
    prompt = exported["output"]
    absent = {}
    for node_id, entry in prompt.items():
        for key, value in entry["inputs"].items():
            if isinstance(value, str) and value in wl.model_files(nodes[int(node_id)]):
                entry["inputs"][key] = absent.setdefault(value, f"tokenfocus-browser-check-absent-{value}")
    status, body = http(session.server.url + "/prompt", json.dumps({"prompt": prompt}).encode())
    errors = json.loads(body).get("node_errors", {}) if status != 200 else {}
    assert status == 400, "the prompt was accepted: there are no model files here, it must not run"
    for node_id, error in errors.items():
        kinds = {e["type"] for e in error["errors"]}
        assert not nodes[int(node_id)]["type"].startswith("TokenFocus_"), error
        assert kinds <= {"value_not_in_list"}, f"{error['class_type']}: {error['errors']}"
        for e in error["errors"]:
            assert e["extra_info"]["received_value"] in {absent.get(f) for f in wl.model_files(nodes[int(node_id)])}, e


def test_preview_follows_edits_and_shows_the_python_messages(session):
    from tokenfocus.core.blocklist import BlockListError, parse_block_list, resolve_blocks
    from tokenfocus.core.schedule import ScheduleError, check_percents

    name = next(n for n in NAMES if "i2v" in n)
    session.js(load(name))
    node = next(n for n in wl.load(wl.WORKFLOW_DIR / f"{name}.json")["nodes"] if n["type"] == "TokenFocus_AttentionTemperature")

    def python_error(fn):
        try:
            fn()
        except (BlockListError, ScheduleError) as e:
            return str(e)
        raise AssertionError("expected an error")

    session.js(set_widget(node["id"], "blocks", "3-"))
    assert session.js(preview_of(node["id"]))["error"] == python_error(lambda: parse_block_list("3-"))
    session.js(set_widget(node["id"], "blocks", "0-45"))
    assert session.js(preview_of(node["id"]))["error"] == python_error(lambda: resolve_blocks(parse_block_list("0-45"), 40, 0, "Wan"))
    session.js(set_widget(node["id"], "blocks", "0-3,s2"))
    assert session.js(preview_of(node["id"]))["error"] == python_error(lambda: resolve_blocks(parse_block_list("0-3,s2"), 40, 0, "Wan"))
    session.js(set_widget(node["id"], "blocks", "0-9"))
    state = session.js(preview_of(node["id"]))
    assert state["error"] == "" and "blocks 0-9: 10 of 40" in state["text"] and (state["cells"], state["on"]) == (40, 10)
    session.js(set_widget(node["id"], "start_percent", 0.6))
    assert session.js(preview_of(node["id"]))["error"] == python_error(lambda: check_percents(0.6, 0.25))


def test_missing_models_dialog_offers_the_downloads(session):
    name = next(n for n in NAMES if "i2v" in n)
    session.js(load(name, True))
    entries = [m for n in wl.load(wl.WORKFLOW_DIR / f"{name}.json")["nodes"] for m in n["properties"].get("models", [])]
    if session.js("document.body.innerText").count("issues found"):  # newer frontends: an issues panel
        session.run(session.browser.wait_for(f"document.body.innerText.includes('{len(entries)} issues found')", 30))
    else:  # ComfyUI 0.3.64's frontend: the Missing Models dialog, with a download button per entry
        text = session.js("document.body.innerText")
        assert "Missing Models" in text
        for entry in entries:
            assert f"{entry['directory']} / {entry['name']}" in text, entry
    session.run(session.browser.open_comfyui(session.server.url))  # a fresh page for what follows


def test_template_browser_shows_the_workflows_under_the_pack(session):
    session.js("app.extensionManager.command.execute('Comfy.BrowseTemplates')")
    session.run(session.browser.wait_for(f"document.body.innerText.includes({json.dumps(PACK_NAME)})", 30))
    session.js(f"[...document.querySelectorAll('li, span, a, button')].find((e) => e.textContent.trim() === {json.dumps(PACK_NAME)}).click()")
    # The grid renders a page of cards and more as it is scrolled: scroll every scrolled box to its end while waiting.
    scroll = "document.querySelectorAll('*').forEach((e) => { if (e.scrollHeight > e.clientHeight + 10) e.scrollTop = e.scrollHeight; })"
    for name in NAMES:
        session.run(session.browser.wait_for(f"({scroll}, document.body.innerText.includes({json.dumps(name)}))", 30))


def serves_template_files(session) -> bool:
    status, _ = http(f"{session.server.url}/api/workflow_templates/{PACK_NAME}/{NAMES[0]}.json")
    return status == 200


def test_no_page_error_comes_from_the_pack(session):
    ours = [e for e in session.browser.exceptions + session.browser.console if "TokenFocus" in e or PACK_NAME in e]
    if not serves_template_files(session):
        # The template browser asks for each template's thumbnail from the route this ComfyUI does not serve
        # (see the template test): the host's missing route, not the pack's error.
        ours = [e for e in ours if f"/api/workflow_templates/{PACK_NAME}/" not in e]
    assert ours == []


# ----------------------------------------------------------------------------------- screenshots (script)


FRAME = """(x, y, scale) => { app.canvas.ds.scale = scale; app.canvas.ds.offset = [x, y]; app.graph.setDirtyCanvas(true, true); }"""


async def write_pictures(session: Session, docs: Path, thumbs: Path):
    """docs/preview*.png: the Wan i2v workflow around its TokenFocus node; workflows/<name>.jpg thumbnails."""
    b = session.browser
    if "Custom Nodes" in (await b.evaluate("document.body.innerText")):  # the template browser is open
        await b.screenshot(docs / "template_browser.png", clip={"x": 80, "y": 50, "width": 1440, "height": 900})
    await b.open_comfyui(session.server.url)
    for name in NAMES:
        wf = wl.load(wl.WORKFLOW_DIR / f"{name}.json")
        x, y = next(n for n in wf["nodes"] if wl.is_tokenfocus(n))["pos"]
        await b.evaluate(load(name))
        await b.evaluate(f"({FRAME})({-x + 560}, {-y + 220}, 0.75)")
        await asyncio.sleep(0.6)
        await b.screenshot(thumbs / f"{name}.jpg", clip={"x": 110, "y": 60, "width": 880, "height": 880}, fmt="jpeg", quality=80)
    name = next(n for n in NAMES if "i2v" in n)
    node = next(n for n in wl.load(wl.WORKFLOW_DIR / f"{name}.json")["nodes"] if n["type"] == "TokenFocus_AttentionTemperature")
    await b.evaluate(load(name))
    await b.evaluate(f"({FRAME})({-node['pos'][0] + 430}, {-node['pos'][1] + 180}, 1.0)")
    await asyncio.sleep(0.6)
    await b.screenshot(docs / "preview.png", clip={"x": 0, "y": 40, "width": 1260, "height": 720})
    await b.evaluate(set_widget(node["id"], "blocks", "0,2-7,10-20,25-32,37,38,40"))
    await asyncio.sleep(0.6)
    await b.screenshot(docs / "preview_error.png", clip={"x": 485, "y": 225, "width": 360, "height": 470})


@pytest.fixture(scope="module", autouse=True)
def _pictures(request, session):
    yield
    if os.environ.get("TOKENFOCUS_WRITE_PICTURES") == "1":
        session.run(write_pictures(session, ROOT / "docs", wl.WORKFLOW_DIR))


if __name__ == "__main__":
    os.environ["TOKENFOCUS_WRITE_PICTURES"] = "1"
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))
