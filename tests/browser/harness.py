"""A real ComfyUI server with this pack installed, and a headless Chromium driven over the DevTools protocol.

No browser-automation package is needed: Chromium is started with a DevTools port on the loopback address
and spoken to with aiohttp's websocket client (aiohttp comes with ComfyUI). The server runs from a
temporary base directory whose custom_nodes/ holds a link to this checkout, so the ComfyUI tree itself is
not touched. Everything listens on 127.0.0.1 only.
"""
from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
STAND_INS = REPO_ROOT / "tests" / "integration" / "stand_ins"
PACK_NAME = "ComfyUI-TokenFocus"
SERVER_PACKAGES = ("aiohttp", "yarl", "alembic", "sqlalchemy", "comfyui_frontend_package")

# Written into the temporary custom_nodes/ only when ComfyUI's own nodes_upscale_model cannot import (spandrel
# needs a torchvision this CPU-only machine cannot have). Frontend 1.27 maps model folders to loader nodes
# and, when UpscaleModelLoader is missing, throws while building every ckpt_name/vae_name combo, so no
# workflow with a checkpoint or VAE loader could even be created. A real install has the node.
UPSCALE_SHIM = '''"""ENVIRONMENT SHIM of TokenFocus's browser check (tests/browser/harness.py), not a node pack: a stand-in
for ComfyUI's UpscaleModelLoader, which could not import here (no torchvision). It only exists so that the
frontend can build loader widgets; it cannot load anything."""
import folder_paths


class UpscaleModelLoader:
    CATEGORY = "loaders"
    RETURN_TYPES = ("UPSCALE_MODEL",)
    FUNCTION = "load_model"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model_name": (folder_paths.get_filename_list("upscale_models"),)}}

    def load_model(self, model_name):
        raise RuntimeError("stand-in of the TokenFocus browser check: cannot load upscale models")


NODE_CLASS_MAPPINGS = {"UpscaleModelLoader": UpscaleModelLoader}
'''


# Frontend extensions of a packaged ComfyUI (not upstream's) that load their code from a CDN when the page
# starts; without a network they throw inside the app's setup and the graph never appears. Answered empty.
REMOTE_CODE_EXTENSIONS = ("/extensions/comfy_extras.nodes.nodes_eval/",)


def find_chromium() -> str | None:
    for name in (os.environ.get("CHROMIUM"), "chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def missing_server_packages() -> list[str]:
    import importlib.util

    return [name for name in SERVER_PACKAGES if importlib.util.find_spec(name) is None]


def server_entry(comfyui: Path) -> list[str] | None:
    """How to start the server of this ComfyUI tree: upstream's `main.py`, or the `comfy.cmd.main` module of a
    pip-packaged ComfyUI (no main.py; its server lives in the package). None: the tree has no server."""
    if (comfyui / "main.py").is_file():
        return ["main.py"]
    if (comfyui / "comfy" / "cmd" / "main.py").is_file():
        return ["-m", "comfy.cmd.main"]
    return None


def comfyui_with_server() -> Path | None:
    """The ComfyUI the integration tests use (comfy_env.find_comfyui), if its tree has a server."""
    if str(REPO_ROOT / "tests" / "integration") not in sys.path:
        sys.path.insert(0, str(REPO_ROOT / "tests" / "integration"))
    import comfy_env

    found = comfy_env.find_comfyui()
    return found if found is not None and server_entry(found) is not None else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str, timeout: float = 10):
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


class ComfyServer:
    """`python main.py --cpu` on a free loopback port, with the pack linked into a temporary base directory."""

    def __init__(self, comfyui: Path, front_end_root: str | None = None):
        self.comfyui = Path(comfyui)
        self.base = Path(tempfile.mkdtemp(prefix="tokenfocus-comfy-"))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.front_end_root = front_end_root
        self.log_path = self.base / "server.log"
        self.process = None
        self.shims: list[str] = []

    def start(self, timeout: float = 180):
        (self.base / "custom_nodes").mkdir()
        (self.base / "user").mkdir()
        (self.base / "custom_nodes" / PACK_NAME).symlink_to(REPO_ROOT, target_is_directory=True)
        env = dict(os.environ)
        # ComfyUI imports torchvision at module level; a CPU torch has no matching wheel (see stand_ins).
        if subprocess.run([sys.executable, "-c", "import torchvision"], capture_output=True).returncode != 0:
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(STAND_INS), env.get("PYTHONPATH")]))
        if subprocess.run([sys.executable, "-c", "import spandrel"], env=env, capture_output=True).returncode != 0:
            (self.base / "custom_nodes" / "tokenfocus_browser_check_shims.py").write_text(UPSCALE_SHIM)
            self.shims = ["UpscaleModelLoader (ComfyUI's nodes_upscale_model cannot import without torchvision)"]
        (self.base / "input").mkdir()
        if (self.comfyui / "input" / "example.png").exists():
            shutil.copy(self.comfyui / "input" / "example.png", self.base / "input" / "example.png")
        settings = self.base / "user" / "default" / "comfy.settings.json"
        settings.parent.mkdir(parents=True)
        # No first-run template dialog; no workflow restored on reload (a fresh page is a fresh graph).
        settings.write_text(json.dumps({"Comfy.TutorialCompleted": True, "Comfy.PersistWorkflow": False}))
        cmd = [sys.executable, *server_entry(self.comfyui), "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
               "--base-directory", str(self.base), "--disable-auto-launch"]
        if not (self.comfyui / "main.py").is_file():  # a packaged ComfyUI: its modules come from the tree itself
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(self.comfyui), env.get("PYTHONPATH")]))
        if self.front_end_root:
            cmd += ["--front-end-root", self.front_end_root]
        if os.environ.get("TOKENFOCUS_FRONTEND_PACKAGE"):  # a `pip install --target` folder with another frontend
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [os.environ["TOKENFOCUS_FRONTEND_PACKAGE"], env.get("PYTHONPATH")]))
        self.log = open(self.log_path, "w")
        self.process = subprocess.Popen(cmd, cwd=self.comfyui, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ComfyUI exited ({self.process.returncode}):\n{self.log_tail()}")
            try:
                return get_json(self.url + "/system_stats", timeout=2)
            except OSError:
                time.sleep(0.5)
        raise TimeoutError(f"ComfyUI did not answer within {timeout} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if getattr(self, "log", None):
            self.log.close()
        shutil.rmtree(self.base, ignore_errors=True)


class Browser:
    """Headless Chromium with one page, driven over the DevTools protocol (asyncio)."""

    def __init__(self, executable: str, width: int = 1600, height: int = 1000):
        self.executable = executable
        self.size = (width, height)
        self.profile = Path(tempfile.mkdtemp(prefix="tokenfocus-chromium-"))
        self.console: list[str] = []
        self.exceptions: list[str] = []
        self._ids = iter(range(1, 10**9))
        self._waiting: dict[int, asyncio.Future] = {}

    async def start(self, timeout: float = 60):
        import aiohttp

        self.process = subprocess.Popen(
            [self.executable, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--no-first-run", "--no-default-browser-check", "--remote-debugging-address=127.0.0.1",
             "--remote-debugging-port=0", f"--user-data-dir={self.profile}",
             f"--window-size={self.size[0]},{self.size[1]}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        port_file = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while not port_file.exists() or not port_file.read_text().strip():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("Chromium did not open its DevTools port")
            await asyncio.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        targets = get_json(f"http://127.0.0.1:{port}/json/list")
        page = next(t for t in targets if t["type"] == "page")
        self.session = aiohttp.ClientSession()
        self.ws = await self.session.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0)
        self._reader = asyncio.create_task(self._read())
        for domain in ("Page", "Runtime"):
            await self.send(f"{domain}.enable")
        await self.send("Fetch.enable", patterns=[{"urlPattern": "*"}])
        await self.send("Emulation.setDeviceMetricsOverride", width=self.size[0], height=self.size[1],
                        deviceScaleFactor=1, mobile=False)

    async def _read(self):
        async for message in self.ws:
            data = json.loads(message.data)
            if "id" in data and data["id"] in self._waiting:
                self._waiting.pop(data["id"]).set_result(data)
            elif data.get("method") == "Fetch.requestPaused":
                asyncio.ensure_future(self._answer(data["params"]))
            elif data.get("method") == "Runtime.consoleAPICalled" and data["params"]["type"] in ("error", "warning"):
                self.console.append(" ".join(str(a.get("value", a.get("description", ""))) for a in data["params"]["args"]))
            elif data.get("method") == "Runtime.exceptionThrown":
                details = data["params"]["exceptionDetails"]
                self.exceptions.append(details.get("exception", {}).get("description") or details.get("text", ""))

    async def _answer(self, request: dict):
        """Let loopback requests through; answer the rest with an empty body at once. This machine has no
        network, and a page that waits on a remote script (a CDN, an update check) would hang its setup."""
        url = request["request"]["url"]
        local = url.startswith(("http://127.0.0.1", "ws://127.0.0.1", "data:", "blob:"))
        if local and not any(part in url for part in REMOTE_CODE_EXTENSIONS):
            await self.send("Fetch.continueRequest", requestId=request["requestId"])
        else:
            await self.send("Fetch.fulfillRequest", requestId=request["requestId"], responseCode=200, body="",
                            responseHeaders=[{"name": "Content-Type", "value": "text/javascript"}])

    async def send(self, method: str, **params):
        ident = next(self._ids)
        future = asyncio.get_running_loop().create_future()
        self._waiting[ident] = future
        await self.ws.send_str(json.dumps({"id": ident, "method": method, "params": params}))
        reply = await asyncio.wait_for(future, 120)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply["result"]

    async def evaluate(self, expression: str):
        """The value of a JavaScript expression (awaited if it is a promise); page exceptions are raised."""
        result = await self.send("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise RuntimeError(details.get("exception", {}).get("description") or details.get("text"))
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout: float = 60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if await self.evaluate(expression):
                    return
            except RuntimeError:
                pass
            await asyncio.sleep(0.25)
        raise TimeoutError(f"timed out waiting for: {expression}")

    async def goto(self, url: str):
        await self.send("Page.navigate", url=url)

    async def open_comfyui(self, url: str, timeout: float = 120):
        """Load the ComfyUI page and wait until every node the server defines is registered in the editor."""
        # A fresh page: nothing restored from an earlier one (open workflows live in the browser's storage).
        # The marker is gone once the new page is there.
        await self.evaluate("(() => { try { localStorage.clear(); sessionStorage.clear(); } catch (e) {} "
                            "window.__tokenfocus_previous_page = true; })()")
        await self.goto(url)
        await self.wait_for("!window.__tokenfocus_previous_page && !!(window.app && window.app.graph && window.LiteGraph)", timeout)
        await self.wait_for(
            "fetch('/object_info').then((r) => r.json()).then((defs) => "
            "Object.keys(defs).every((type) => type in LiteGraph.registered_node_types))", timeout)

    async def screenshot(self, path: Path, clip: dict | None = None, fmt: str = "png", quality: int = 85):
        params = {"format": fmt}
        if fmt == "jpeg":
            params["quality"] = quality
        if clip:
            params["clip"] = {**clip, "scale": 1}
        data = (await self.send("Page.captureScreenshot", **params))["data"]
        Path(path).write_bytes(base64.b64decode(data))

    async def close(self):
        if getattr(self, "_reader", None):
            self._reader.cancel()
        if getattr(self, "ws", None):
            await self.ws.close()
        if getattr(self, "session", None):
            await self.session.close()
        if getattr(self, "process", None) and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        shutil.rmtree(self.profile, ignore_errors=True)
