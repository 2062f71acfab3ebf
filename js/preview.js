// What the in-node preview shows, computed without the DOM (tested by tests/js). This module only exports.
//
// The editor does not know the model, so the preview draws the blocks on the depth of a model family:
// the one the user picks, or the one guessed from the file name of the loader upstream of the node.
// The node itself checks the blocks against the model's real depth when it runs.

import { BlockListError, DOUBLE, SINGLE, formatBlocks, parseBlockList, resolveBlocks } from "./blocklist.js";
import { FAMILIES } from "./families.js";

// The depth table comes from the family modules (families/*.py) through the generated js/families.js.
// `name` is what the Python side calls the model in its messages; `files` lists substrings that must all
// occur in a loader's file name.
export { FAMILIES };

/** The family whose file patterns match a model file name, or null. */
export function guessFamily(fileName) {
  const name = String(fileName ?? "").toLowerCase();
  return FAMILIES.find((f) => f.files.some((all) => all.every((part) => name.includes(part)))) ?? null;
}

// Python's repr of a float, for messages that quote one (0.0, 0.3, 1.0).
const pyFloat = (v) => (Number.isInteger(v) ? v.toFixed(1) : String(v));

/** core.schedule.check_percents: the same checks and messages, as an Error or null. */
export function checkPercents(start, end) {
  for (const [name, value] of [["start_percent", start], ["end_percent", end]]) {
    if (!(value >= 0 && value <= 1)) return new Error(`${name} must be between 0 and 1, got ${pyFloat(value)}`);
  }
  if (start > end) {
    return new Error(
      `start_percent (${pyFloat(start)}) is after end_percent (${pyFloat(end)}): ` +
        "the range runs from the start of the denoising (0) to its end (1)",
    );
  }
  return null;
}

const MAX_CELLS = 64; // without a family, rows are drawn up to the highest index named, if it is this small
const DEPTH_NOTE = "depth checked when the node runs";

function rowsOnDepth(pairs, family) {
  const rows = [{ kind: DOUBLE, label: family.single ? "double" : "blocks", count: family.double }];
  if (family.single) rows.push({ kind: SINGLE, label: "single", count: family.single });
  return rows.map(({ kind, label, count }) => {
    const on = new Set(pairs.filter(([k]) => k === kind).map(([, i]) => i));
    return { label, cells: Array.from({ length: count }, (_, i) => on.has(i)) };
  });
}

function rowsWithoutDepth(selection) {
  const rows = [];
  for (const [ranges, label] of [[selection.double, "blocks"], [selection.single, "single"]]) {
    if (!ranges.length) continue;
    const top = ranges[ranges.length - 1][1];
    if (top >= BigInt(MAX_CELLS)) return null;
    const cells = Array.from({ length: Number(top) + 1 }, (_, i) => ranges.some(([a, b]) => a <= i && i <= b));
    rows.push({ label, cells });
  }
  return rows;
}

function pairsOf(selection) {
  const out = [];
  for (const [kind, ranges] of [[DOUBLE, selection.double], [SINGLE, selection.single]]) {
    if (ranges.some(([, b]) => b >= BigInt(MAX_CELLS * 1024))) return null; // too many to list: say so
    for (const [a, b] of ranges) for (let i = Number(a); i <= Number(b); i++) out.push([kind, i]);
  }
  return out;
}

function blocksPart(text, family) {
  if (text === undefined) return { rows: [], summary: null, error: null };
  if (text === null) return { rows: [], summary: "blocks: from a link", error: null };
  let selection;
  try {
    selection = parseBlockList(text);
  } catch (e) {
    if (e instanceof BlockListError) return { rows: [], summary: null, error: e.message };
    throw e;
  }
  if (family) {
    try {
      const pairs = resolveBlocks(selection, family.double, family.single, family.name);
      const total = family.double + family.single;
      const summary = pairs.length ? `blocks ${formatBlocks(pairs)}: ${pairs.length} of ${total}` : "no block: the node does nothing";
      return { rows: rowsOnDepth(pairs, family), summary, error: null };
    } catch (e) {
      if (e instanceof BlockListError) return { rows: [], summary: null, error: e.message };
      throw e;
    }
  }
  if (selection.everything) return { rows: [], summary: "every block of the model", error: null };
  if (!selection.double.length && !selection.single.length) return { rows: [], summary: "no block: the node does nothing", error: null };
  const pairs = pairsOf(selection);
  return { rows: rowsWithoutDepth(selection) ?? [], summary: `blocks ${pairs ? formatBlocks(pairs) : text}`, error: null };
}

function stepsPart(start, end) {
  if (start === undefined && end === undefined) return { steps: null, error: null, summary: null };
  if (start === null || end === null) return { steps: null, error: null, summary: "steps: from a link" };
  const error = checkPercents(start, end);
  if (error) return { steps: null, error: error.message, summary: null };
  const summary = start === end ? "start = end: acts on no step" : `steps ${start}-${end} of the denoising`;
  return { steps: { start, end }, error: null, summary };
}

/**
 * Everything the preview draws, from the node's widget values (undefined: the node has no such widget;
 * null: the input comes from a link), the model family (or null for "any model") and where it was read.
 */
export function previewState({ blocks, start, end, preset } = {}, family = null, familySource = "") {
  const b = blocksPart(blocks, family);
  const s = stepsPart(start, end);
  const notes = [];
  if (blocks !== undefined) notes.push(`${family ? family.label + familySource : "any model"}: ${DEPTH_NOTE}`);
  if (preset !== undefined && preset !== null && preset !== "custom") {
    notes.push(`preset '${preset}' replaces these when the node runs (see its report)`);
  }
  return {
    rows: b.rows,
    steps: s.steps,
    lines: [b.summary, s.summary].filter(Boolean),
    errors: [b.error, s.error].filter(Boolean),
    notes,
  };
}
