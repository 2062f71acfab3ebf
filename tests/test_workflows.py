"""Every bundled workflow (workflows/*.json) is a working UI-format graph for the model it names.

Without ComfyUI: the JSON is a UI-format graph (what Workflow → Export writes), its links agree with the
nodes' inputs and outputs, each model file has a download entry, a note explains the TokenFocus nodes, and
every TokenFocus node drives a model of a known family (the family modules' preview table).
With a real ComfyUI (COMFYUI_PATH, as for tests/integration): every node type is a TokenFocus or a core
node, link types match the declared ones, required inputs are connected, widget values fit the declared
widgets, and every TokenFocus node's values are in range and valid for the model it drives (block lists
against the family's real depth). Nodes added to the pack later are checked the same way, from their schema.
"""
import re

import pytest

import workflow_lib as wl
from tokenfocus.core.blocklist import parse_block_list, resolve_blocks
from tokenfocus.core.presets import WAN22_HIGH_NOISE
from tokenfocus.core.schedule import check_percents

PATHS = wl.workflow_paths()
IDS = [p.stem for p in PATHS]
# Every family the issue asks for, and the AlignVid official i2v setting.
REQUIRED_FAMILIES = {"wan_small", "wan_14b", "hunyuan_video", "sd35_large", "flux", "z_image", "qwen_image", "flux2_klein"}
OFFICIAL = "AlignVid official code"


@pytest.fixture(params=PATHS, ids=IDS)
def workflow(request):
    return wl.load(request.param)


def test_there_is_a_workflow_for_every_family():
    families, presets = set(), set()
    for path in PATHS:
        wf = wl.load(path)
        for node in filter(wl.is_tokenfocus, wf["nodes"]):
            loader = wl.model_loader(wf, node)
            family = wl.guess_family(next(iter(wl.model_files(loader)), None)) if loader else None
            families.add(family and family["key"])
            if OFFICIAL in (node.get("widgets_values") or []):
                presets.add((family and family["key"], "i2v" in " ".join(wl.model_files(loader))))
    assert REQUIRED_FAMILIES <= families, f"missing: {REQUIRED_FAMILIES - families}"
    assert ("wan_14b", True) in presets, "no Wan i2v 14B workflow with the official AlignVid preset"


def test_every_tokenfocus_node_is_in_a_workflow():
    sources = "".join(p.read_text(encoding="utf-8") for p in (wl.ROOT / "nodes").glob("*.py"))
    node_ids = set(re.findall(r'node_id="(TokenFocus_\w+)"', sources))
    used = {node["type"] for path in PATHS for node in wl.load(path)["nodes"]}
    assert node_ids and node_ids <= used, f"in no bundled workflow: {sorted(node_ids - used)}"


def test_the_readme_quick_start_names_every_workflow():
    readme = (wl.ROOT / "README.md").read_text(encoding="utf-8")
    quick_start = readme.split("## Quick start per family", 1)[1].split("\n## ", 1)[0]
    missing = [p.stem for p in PATHS if f"`{p.stem}`" not in quick_start]
    assert not missing, f"the README's quick start does not name {missing}"


def test_ui_format(workflow):
    assert workflow.get("version") == 0.4 and isinstance(workflow.get("extra"), dict)
    ids = [n["id"] for n in workflow["nodes"]]
    assert len(ids) == len(set(ids)) and workflow["last_node_id"] >= max(ids)
    assert workflow["last_link_id"] >= max((link[0] for link in workflow["links"]), default=0)
    for node in workflow["nodes"]:
        for key in ("id", "type", "pos", "size", "mode", "properties"):
            assert key in node, f"node {node.get('id')} has no {key}"
        assert node["mode"] == 0, f"{node['type']} #{node['id']} is muted or bypassed"
        assert isinstance(node.get("widgets_values", []), list)


def test_links_agree_with_the_nodes(workflow):
    nodes = wl.nodes_by_id(workflow)
    for link_id, origin, origin_slot, target, target_slot, kind in workflow["links"]:
        out, inp = nodes[origin]["outputs"][origin_slot], nodes[target]["inputs"][target_slot]
        assert link_id in (out.get("links") or []), f"link {link_id} missing from {nodes[origin]['type']}.{out['name']}"
        assert inp.get("link") == link_id, f"link {link_id} missing from {nodes[target]['type']}.{inp['name']}"
        # A link into a wildcard input ("*", e.g. Preview Any) is typed "*" by the frontend.
        assert kind in (out["type"], "*") and inp["type"] in (out["type"], "*"), f"link {link_id}: {out['type']} -> {kind} -> {inp['type']}"
    links = wl.links_by_id(workflow)
    for node in workflow["nodes"]:
        for slot, out in enumerate(node.get("outputs") or []):
            for link_id in out.get("links") or []:
                assert links[link_id][1:3] == [node["id"], slot], f"{node['type']}.{out['name']} lists link {link_id}"
        for slot, inp in enumerate(node.get("inputs") or []):
            if inp.get("link") is not None:
                assert links[inp["link"]][3:5] == [node["id"], slot], f"{node['type']}.{inp['name']} names link {inp['link']}"


def test_every_model_file_has_a_download_entry(workflow):
    for node in workflow["nodes"]:
        files = wl.model_files(node)
        entries = {m["name"]: m for m in node.get("properties", {}).get("models", [])}
        assert set(files) == set(entries), f"{node['type']} #{node['id']}: files {files}, downloads {sorted(entries)}"
        for name, entry in entries.items():
            url = entry["url"].split("?")[0]
            assert re.fullmatch(r"https://huggingface\.co/[\w.-]+/[\w.-]+/resolve/main/.+", url) and url.endswith("/" + name), entry
            assert entry["directory"] in {"diffusion_models", "text_encoders", "vae", "clip_vision", "checkpoints", "loras"}, entry


def test_a_note_explains_the_tokenfocus_nodes(workflow):
    text = wl.note_texts(workflow)
    assert any(map(wl.is_tokenfocus, workflow["nodes"])), "a bundled workflow without a TokenFocus node"
    assert "Try first" in text and "Models" in text, "the note must say what to try first and which models to get"


def test_every_tokenfocus_node_drives_a_model_of_a_known_family(workflow):
    for node in filter(wl.is_tokenfocus, workflow["nodes"]):
        if not any(i["type"] == "MODEL" for i in node.get("inputs") or []):
            continue  # e.g. Token Importance: no model
        loader = wl.model_loader(workflow, node)
        assert loader is not None, f"{node['type']} #{node['id']}: MODEL input not connected"
        assert wl.guess_family(next(iter(wl.model_files(loader)), None)), f"{node['type']} #{node['id']}: unknown model {wl.model_files(loader)}"


# ------------------------------------------------------------------------------ against a real ComfyUI


@pytest.fixture(scope="module")
def registry():
    return wl.registry_or_skip("node types, widget values and ranges of the workflows")


def _skip_if_only_a_newer_host_has_its_nodes(workflow, registry):
    """A workflow whose note says it needs a newer ComfyUI, run against an older one that lacks some of its
    node types (Flux.2's on 0.3.64): skipped as the host's lack. Any other missing type fails the test."""
    from comfy_env import comfyui_version, find_comfyui, host_lacks

    missing, why = wl.types_a_newer_host_has(workflow, registry, comfyui_version(find_comfyui()))
    if missing:
        host_lacks(why)


def _class(registry, node):
    cls = registry.get(node["type"])
    failed = registry["__import_failed__"]
    assert cls is not None, f"{node['type']} is not a node of this ComfyUI (extras that failed to import here: {failed})"
    return cls


def test_every_node_the_pack_registers_is_in_a_workflow(registry):
    """The node types ComfyUI registered from the pack (its NODE_CLASS_MAPPINGS entries), not a list kept here."""
    registered = {name for name, cls in registry.items()
                  if name.startswith("TokenFocus_") and getattr(cls, "RELATIVE_PYTHON_MODULE", "").startswith("custom_nodes.")}
    used = {node["type"] for path in PATHS for node in wl.load(path)["nodes"]}
    assert len(registered) >= 10, sorted(registered)
    assert registered <= used, f"in no bundled workflow: {sorted(registered - used)}"


def test_every_node_is_a_tokenfocus_or_a_core_node(workflow, registry):
    _skip_if_only_a_newer_host_has_its_nodes(workflow, registry)
    for node in workflow["nodes"]:
        if node["type"] in wl.FRONTEND_ONLY:
            continue
        cls = _class(registry, node)
        if wl.is_tokenfocus(node):
            assert cls.RELATIVE_PYTHON_MODULE.startswith("custom_nodes."), cls.RELATIVE_PYTHON_MODULE
        else:
            assert wl.is_core(cls), f"{node['type']} comes from {cls.RELATIVE_PYTHON_MODULE}, not ComfyUI itself"


def test_link_types_and_required_inputs_match_the_definitions(workflow, registry):
    _skip_if_only_a_newer_host_has_its_nodes(workflow, registry)
    for node in workflow["nodes"]:
        if node["type"] in wl.FRONTEND_ONLY:
            continue
        cls = _class(registry, node)
        declared = wl.declared_inputs(cls)
        assert [o["type"] for o in node.get("outputs") or []] == wl.output_types(cls), f"{node['type']} outputs"
        linked = {i["name"]: i for i in node.get("inputs") or [] if i.get("link") is not None}
        for item in node.get("inputs") or []:
            kind, _ = declared[item["name"]]
            assert item["type"] == kind or kind == "*", f"{node['type']}.{item['name']}: {item['type']} but declared {kind}"
        required = cls.INPUT_TYPES().get("required", {})
        for name, (kind, options) in declared.items():
            is_widget = kind in wl.WIDGET_TYPES and not options.get("forceInput")
            if name in required and not is_widget:
                assert name in linked, f"{node['type']} #{node['id']}: required input {name} is not connected"


def _check_value(node, item, value):
    where = f"{node['type']} #{node['id']}.{item.id}"
    kind = item.get_io_type()
    if kind in ("INT", "FLOAT"):
        assert isinstance(value, (int, float)) and not isinstance(value, bool), f"{where}: {value!r}"
        assert item.min is None or value >= item.min, f"{where}: {value} < {item.min}"
        assert item.max is None or value <= item.max, f"{where}: {value} > {item.max}"
    elif kind == "COMBO":
        assert value in item.options, f"{where}: {value!r} not in {item.options}"
    elif kind == "BOOLEAN":
        assert isinstance(value, bool), f"{where}: {value!r}"
    elif kind == "STRING":
        assert isinstance(value, str), f"{where}: {value!r}"


# What AttentionTemperature can act on per family (runtime/adapters.py); Wan 2.1 i2v adds the CLIP image branch.
ATTENTION_KINDS = {"self_attention": "self", "text_cross_attention": "text", "image_cross_attention": "image", "joint_attention": "joint"}


def _model_kinds(family, file):
    if family["name"] == "Wan":
        return {"self", "text"} | ({"image"} if "wan2.1" in file and "i2v" in file else set())
    return {"joint"} | ({"self"} if family["key"] == "sd3_medium" else set())


def _check_attention_temperature(workflow, node, values, family, file):
    on = {kind for name, kind in ATTENTION_KINDS.items() if values[name]}
    assert on and on <= _model_kinds(family, file), f"switched on {sorted(on)}, {file} has {sorted(_model_kinds(family, file))}"
    if values["preset"] == OFFICIAL:
        assert family["key"] == "wan_14b" and "i2v" in file, f"the official preset is for Wan2.1 i2v 14B, not {file}"
        _check_official_wan_i2v_sampling(workflow, node)
    if values["preset"] == WAN22_HIGH_NOISE:
        _check_wan22_high_noise_expert(workflow, node, file)


def _check_wan22_high_noise_expert(workflow, node, file):
    """The Wan 2.2 preset on the high-noise expert, whose sampler runs the first steps and hands the rest,
    still noisy, to the low-noise expert's."""
    assert "wan2.2" in file and "high_noise" in file, f"the Wan 2.2 high-noise preset drives {file}"
    registry = wl.registry()
    samplers = [n for n in wl.downstream(workflow, node, 0) if n["type"] in ("KSampler", "KSamplerAdvanced", "SamplerCustom")]
    assert samplers and all(s["type"] == "KSamplerAdvanced" for s in samplers), "each expert samples its own steps"
    for sampler in samplers:
        values = wl.widget_values(sampler, registry["KSamplerAdvanced"])
        assert values["start_at_step"] == 0 and values["end_at_step"] < values["steps"], values
        assert values["return_with_leftover_noise"] == "enable", "the high-noise expert hands its noisy latent on"


def _check_official_wan_i2v_sampling(workflow, node):
    """As the official code samples: CFG 1.0, 40 UniPC-bh2 steps at shift 3, so that t > 900 gates 10 of them.

    A KSampler with uni_pc_bh2 computes 41 sigmas and drops the penultimate one: the model would see sigma 0.903 at
    step 11, gating 11 steps (tests/integration/test_alignvid_presets.py measures both); SamplerCustom on a
    40-step schedule evaluates the model at the official grid."""
    registry = wl.registry()
    samplers = [n for n in wl.downstream(workflow, node, 0) if n["type"] in ("KSampler", "SamplerCustom")]
    assert samplers, "the official preset's workflow samples with a sampler"
    for sampler in samplers:
        assert sampler["type"] == "SamplerCustom", "a KSampler with uni_pc_bh2 gates 11 of 40 steps, the official code 10"
        assert wl.widget_values(sampler, registry["SamplerCustom"])["cfg"] == 1.0, "the official AlignVid code samples with CFG 1.0"
        chosen = wl.upstream(workflow, sampler, "sampler")
        assert wl.widget_values(chosen, registry[chosen["type"]])["sampler_name"] == "uni_pc_bh2"
        schedule = wl.widget_values(wl.upstream(workflow, sampler, "sigmas"), registry["BasicScheduler"])
        assert (schedule["scheduler"], schedule["steps"], schedule["denoise"]) == ("simple", 40, 1.0)
    shifts = [n for n in workflow["nodes"] if n["type"] == "ModelSamplingSD3"]
    assert [wl.widget_values(n, registry["ModelSamplingSD3"])["shift"] for n in shifts] == [3]


def _check_prompt(workflow, node, values, family, file):
    from tokenfocus.core.prompt_syntax import prompt_syntax_error

    assert prompt_syntax_error(values["text"]) is None, prompt_syntax_error(values["text"])


NODE_CHECKS = {"TokenFocus_AttentionTemperature": _check_attention_temperature, "TokenFocus_Prompt": _check_prompt}


def test_tokenfocus_values_are_in_range_and_fit_the_model(workflow, registry):
    for node in filter(wl.is_tokenfocus, workflow["nodes"]):
        cls = _class(registry, node)
        values = wl.widget_values(node, cls)
        linked = {i.get("widget", {}).get("name") for i in node.get("inputs") or [] if i.get("link") is not None}
        for item in cls.GET_SCHEMA().inputs:
            if item.id in values and item.id not in linked:
                _check_value(node, item, values[item.id])
        loader = wl.model_loader(workflow, node) if any(i["type"] == "MODEL" for i in node["inputs"]) else None
        file = next(iter(wl.model_files(loader)), "") if loader else ""
        family = wl.guess_family(file)
        if "blocks" in values and "blocks" not in linked:
            assert family, f"{node['type']} #{node['id']}: which model does it drive?"
            resolve_blocks(parse_block_list(values["blocks"]), family["double"], family["single"], family["name"])
        if {"start_percent", "end_percent"} <= set(values):
            check_percents(values["start_percent"], values["end_percent"])
        if node["type"] in NODE_CHECKS:
            NODE_CHECKS[node["type"]](workflow, node, values, family, file.lower())


def test_the_note_names_each_tokenfocus_node(workflow, registry):
    text = wl.note_texts(workflow)
    for node in filter(wl.is_tokenfocus, workflow["nodes"]):
        name = _class(registry, node).GET_SCHEMA().display_name
        assert name in text, f"the note does not mention {name}"


def test_core_node_values_fit_their_widgets(workflow, registry):
    _skip_if_only_a_newer_host_has_its_nodes(workflow, registry)
    for node in workflow["nodes"]:
        if node["type"] in wl.FRONTEND_ONLY or wl.is_tokenfocus(node):
            continue
        cls = _class(registry, node)
        values = wl.widget_values(node, cls)
        for name, value in values.items():
            kind, options = wl.declared_inputs(cls).get(name, (None, {}))
            files = kind == "COMBO" and value in wl.model_files(node) + ["example.png"]
            if kind == "COMBO" and options.get("options") and not files:
                assert value in options["options"], f"{node['type']}.{name}: {value!r} not in {options['options'][:8]}…"
            if kind in ("INT", "FLOAT"):
                assert options.get("min", value) <= value <= options.get("max", value), f"{node['type']}.{name}: {value}"
