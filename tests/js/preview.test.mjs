// js/preview.js: what the in-node preview shows, without a browser.
import assert from "node:assert/strict";
import { test } from "node:test";

import { FAMILIES, guessFamily, previewState } from "../../js/preview.js";

import { FAMILIES as GENERATED } from "../../js/families.js";

const family = (key) => FAMILIES.find((f) => f.key === key);

// js/families.js is generated from the family modules (tests/test_family_registry.py checks it is current).
test("the preview's families are the generated table of the family modules", () => {
  assert.equal(FAMILIES, GENERATED);
  assert.ok(FAMILIES.length >= 6);
  for (const f of FAMILIES) {
    assert.ok(f.key && f.label && f.name && Number.isInteger(f.double) && Number.isInteger(f.single), JSON.stringify(f));
    assert.ok(f.files.length && f.files.every((all) => all.length && all.every((part) => part === part.toLowerCase())));
  }
});

test("families are guessed from ComfyUI's repackaged file names", () => {
  const expected = {
    "wan2.1_t2v_1.3B_fp16.safetensors": "wan_small",
    "wan2.2_ti2v_5B_fp16.safetensors": "wan_small",
    "wan2.1_i2v_480p_14B_fp16.safetensors": "wan_14b",
    "wan2.2_i2v_high_noise_14B_fp8_scaled.safetensors": "wan_14b",
    "hunyuan_video_t2v_720p_bf16.safetensors": "hunyuan_video",
    "hunyuan_video_image_to_video_720p_bf16.safetensors": "hunyuan_video",
    "sd3.5_large_fp8_scaled.safetensors": "sd35_large",
    "sd3.5_medium_incl_clips_t5xxlfp8scaled.safetensors": "sd3_medium",
    "flux1-dev.safetensors": "flux",
    "flux1-schnell-fp8.safetensors": "flux",
    "v1-5-pruned-emaonly.safetensors": undefined,
  };
  for (const [file, key] of Object.entries(expected)) assert.equal(guessFamily(file)?.key, key, file);
  assert.equal(guessFamily(null), null);
});

test("blocks are drawn on the family's depth, single-stream blocks on their own row", () => {
  const state = previewState({ blocks: "0,2-3,s1", start: 0, end: 0.3 }, family("flux"));
  assert.deepEqual(state.rows.map((r) => [r.label, r.cells.length]), [["double", 19], ["single", 38]]);
  assert.deepEqual(state.rows[0].cells.slice(0, 5), [true, false, true, true, false]);
  assert.equal(state.rows[1].cells.filter(Boolean).length, 1);
  assert.deepEqual(state.steps, { start: 0, end: 0.3 });
  assert.deepEqual(state.errors, []);
  assert.equal(state.lines[0], "blocks 0,2-3,s1: 4 of 57");
  assert.match(state.notes[0], /depth checked when the node runs/);
});

test("a malformed list shows the Python message; an index past the family's depth too", () => {
  assert.deepEqual(previewState({ blocks: "7-3" }).errors, ["blocks: range '7-3' runs backwards (write 3-7)"]);
  assert.deepEqual(previewState({ blocks: "0-30" }, family("wan_small")).errors, [
    "blocks: 30 is past the model's depth: Wan has 30 blocks (0-29)",
  ]);
  assert.deepEqual(previewState({ start: 0.6, end: 0.2 }).errors, [
    "start_percent (0.6) is after end_percent (0.2): the range runs from the start of the denoising (0) to its end (1)",
  ]);
});

test("without a family the indices are shown as they are", () => {
  const state = previewState({ blocks: "1-2, s0" });
  assert.deepEqual(state.rows.map((r) => r.cells), [[false, true, true], [true]]);
  assert.equal(state.lines[0], "blocks 1-2,s0");
  assert.match(state.notes[0], /^any model: depth checked when the node runs/);
  assert.equal(previewState({ blocks: "all" }).lines[0], "every block of the model");
  assert.equal(previewState({ blocks: "" }).lines[0], "no block: the node does nothing");
  assert.deepEqual(previewState({ blocks: "0-99999999999" }).rows, []); // not drawn, not enumerated
});

test("inputs the node lacks, or that come from links, and presets", () => {
  assert.deepEqual(previewState({ start: 0.2, end: 0.2 }).lines, ["start = end: acts on no step"]);
  assert.deepEqual(previewState({ blocks: null, start: null, end: null }).lines, ["blocks: from a link", "steps: from a link"]);
  assert.equal(previewState({ blocks: "all", preset: "custom" }).notes.length, 1);
  assert.match(previewState({ blocks: "all", preset: "AlignVid paper" }).notes[1], /preset 'AlignVid paper' replaces these/);
  assert.deepEqual(previewState({}), { rows: [], steps: null, lines: [], errors: [], notes: [] });
});
