"""What a ComfyUI test host needs installed, read from the host's own files (never from its version).

    python3 .ci/host_packages.py server HOST    -> requirement lines for its server (one per line)
    python3 .ci/host_packages.py frontend HOST  -> the frontend package it asks for, pinned to the oldest
                                                   version it accepts (the one it was released with)
Upstream trees list everything in requirements.txt; a pip-packaged tree lists it in pyproject.toml.
"""
import re
import sys
import tomllib
from pathlib import Path

# Not for a CPU test machine: torch comes pinned from the pack's own install line; torchvision and torchaudio
# have no CPU build for it here (the tests bring a stand-in); kornia and spandrel pull torchvision in.
LEFT_OUT = {"torch", "torchvision", "torchaudio", "kornia", "spandrel"}
FRONTEND = "comfyui-frontend-package"


def name_of(requirement):
    return re.split(r"[\s<>=!~;\[]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def requirements(host):
    listed = host / "requirements.txt"
    if listed.is_file():
        lines = listed.read_text().splitlines()
    else:
        lines = tomllib.loads((host / "pyproject.toml").read_text())["project"]["dependencies"]
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def server(host):
    if not (host / "requirements.txt").is_file():
        return []  # a packaged tree: its extra server packages are in .ci/requirements-server-packaged.txt
    return [r for r in requirements(host) if name_of(r) not in LEFT_OUT]


def frontend(host):
    spec = next(r for r in requirements(host) if name_of(r) == FRONTEND)
    return re.sub(r"(>=|~=)", "==", spec)


if __name__ == "__main__":
    what, host = sys.argv[1], Path(sys.argv[2])
    print("\n".join({"server": server, "frontend": lambda h: [frontend(h)]}[what](host)))
