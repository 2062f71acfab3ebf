"""The pack's metadata as the Comfy Registry and comfy-cli's `comfy node validate` read pyproject.toml."""
import os
import re
import tomllib
from pathlib import Path

import pytest
from comfy_env import comfyui_version  # tests/conftest.py puts tests/integration on the path

ROOT = Path(__file__).resolve().parents[1]
META = tomllib.loads((ROOT / "pyproject.toml").read_text())


def version_tuple(text):
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


def test_node_id_follows_the_registry_rules():
    name = META["project"]["name"]
    assert len(name) < 100 and re.fullmatch(r"[A-Za-z][A-Za-z0-9]*([-_.][A-Za-z0-9]+)*", name), name
    assert re.fullmatch(r"\d+\.\d+\.\d+", META["project"]["version"])


def test_license_file_matches_the_declared_license():
    license_file = ROOT / META["project"]["license"]["file"]
    assert license_file.is_file()
    classifiers = [c for c in META["project"]["classifiers"] if c.startswith("License ::")]
    assert classifiers == ["License :: OSI Approved :: MIT License"]
    assert license_file.read_text().splitlines()[0] == "MIT License"


def test_urls_the_registry_reads():
    urls = META["project"]["urls"]
    for key in ("Repository", "Issues", "Documentation"):
        assert urls.get(key, "").startswith("https://"), key


def test_publisher_and_minimum_comfyui_are_stated():
    comfy = META["tool"]["comfy"]
    assert comfy["PublisherId"] and comfy["DisplayName"]
    assert re.fullmatch(r">=\d+\.\d+\.\d+", comfy["requires-comfyui"]), comfy["requires-comfyui"]


def test_the_comfyui_under_test_meets_the_stated_minimum():
    root = os.environ.get("COMFYUI_PATH")
    if not root:
        pytest.skip("COMFYUI_PATH is not set: no ComfyUI to compare the stated minimum with")
    version = comfyui_version(root)
    assert version, f"{root} declares no version"
    floor = META["tool"]["comfy"]["requires-comfyui"].removeprefix(">=")
    assert version_tuple(version) >= version_tuple(floor), (version, floor)
