// The block-list syntax of core/blocklist.py, mirrored for the node preview: same grammar, same results,
// same error texts (tests/blocklist_cases.json is checked against both). This module only exports.
//
//   ""          no block          "all"       every block of every kind
//   "0,2-7,10"  main blocks       "s0-7,s12"  single-stream blocks (Flux, HunyuanVideo)     "d3" = "3"
//
// Python's str.strip and \s are Unicode-aware, so the whitespace class below is spelled out to match them.
// Digits are ASCII only on both sides. Indices are BigInt while parsing, as Python's ints are exact;
// resolveBlocks returns plain numbers, bounded by the model's depth.

export const DOUBLE = "double_block";
export const SINGLE = "single_block";

const WS = "[\\t-\\r\\x1c-\\x20\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]";
const EDGES = new RegExp(`^${WS}+|${WS}+$`, "gu");
const SPACES = new RegExp(`${WS}+`, "gu");
const ITEM = /^([ds]?)([0-9]+)(?:-\1?([0-9]+))?$/u;
// As core/blocklist.py: no model is this deep, and the cap keeps a typo from building a huge set.
export const MAX_INDEX = 9999n;
const SYNTAX_HINT = "write indices and ranges such as 0,2-7,s0-3, or all, or leave it empty for none";

export class BlockListError extends Error {
  constructor(message) {
    super(message);
    this.name = "BlockListError";
  }
}

const pyStrip = (s) => s.replace(EDGES, "");

const toInt = (digits) => BigInt(digits);

function addRange(ranges, start, end) {
  const out = [];
  for (const [a, b] of [...ranges, [start, end]].sort((x, y) => (x[0] < y[0] ? -1 : x[0] > y[0] ? 1 : 0))) {
    const last = out[out.length - 1];
    if (last && a <= last[1] + 1n) last[1] = b > last[1] ? b : last[1];
    else out.push([a, b]);
  }
  return out;
}

/** {everything, double, single}: double/single are sorted, merged inclusive ranges [start, end] of BigInt. */
export function parseBlockList(text) {
  text = pyStrip(String(text ?? "")).toLowerCase();
  const picked = { [DOUBLE]: [], [SINGLE]: [] };
  let everything = false;
  if (!text) return { everything, double: [], single: [] };
  for (const raw of text.split(",")) {
    const item = raw.replace(SPACES, "");
    if (!item) throw new BlockListError(`blocks: empty item in '${text}' (${SYNTAX_HINT})`);
    if (item === "all") {
      everything = true;
      continue;
    }
    const match = ITEM.exec(item);
    if (!match) throw new BlockListError(`blocks: '${pyStrip(raw)}' is not a block index or range (${SYNTAX_HINT})`);
    const start = toInt(match[2]);
    const end = match[3] !== undefined ? toInt(match[3]) : start;
    if (end < start) throw new BlockListError(`blocks: range '${pyStrip(raw)}' runs backwards (write ${end}-${start})`);
    if (end > MAX_INDEX) throw new BlockListError(`blocks: ${match[1]}${end} is too large (indices go up to ${MAX_INDEX})`);
    const kind = match[1] === "s" ? SINGLE : DOUBLE;
    picked[kind] = addRange(picked[kind], start, end);
  }
  return { everything, double: picked[DOUBLE], single: picked[SINGLE] };
}

export const isEmptySelection = (sel) => !sel.everything && !sel.double.length && !sel.single.length;

export function describeDepth(modelName, nDouble, nSingle) {
  if (nSingle) {
    return `${modelName} has ${nDouble} double blocks (0-${nDouble - 1}) and ${nSingle} single blocks (s0-s${nSingle - 1})`;
  }
  return `${modelName} has ${nDouble} blocks (0-${nDouble - 1})`;
}

const range = (n) => Array.from({ length: n }, (_, i) => i);

/** The [kind, index] pairs a selection names on a model of this depth; an index past it is an error. */
export function resolveBlocks(selection, nDouble, nSingle, modelName) {
  if (selection.everything) {
    return [...range(nDouble).map((i) => [DOUBLE, i]), ...range(nSingle).map((i) => [SINGLE, i])];
  }
  const depth = describeDepth(modelName, nDouble, nSingle);
  if (selection.single.length && nSingle === 0) {
    throw new BlockListError(`blocks: single-block indices (s…) were given but ${depth}`);
  }
  const out = [];
  for (const [kind, ranges, count, prefix] of [[DOUBLE, selection.double, nDouble, ""], [SINGLE, selection.single, nSingle, "s"]]) {
    const limit = BigInt(count);
    const past = ranges.find(([, b]) => b >= limit);
    if (past) {
      const first = past[0] > limit ? past[0] : limit;
      throw new BlockListError(`blocks: ${prefix}${first} is past the model's depth: ${depth}`);
    }
    for (const [a, b] of ranges) for (let i = Number(a); i <= Number(b); i++) out.push([kind, i]);
  }
  return out;
}

/** Compact text for [kind, index] pairs: 0-2,s4 (or "none"), as core.blocklist.format_blocks. */
export function formatBlocks(blocks) {
  const parts = [];
  for (const [kind, prefix] of [[DOUBLE, ""], [SINGLE, "s"]]) {
    const indices = [...new Set(blocks.filter(([k]) => k === kind).map(([, i]) => Number(i)))].sort((a, b) => a - b);
    for (let j = 0; j < indices.length; j++) {
      const start = indices[j];
      while (j + 1 < indices.length && indices[j + 1] === indices[j] + 1) j++;
      parts.push(start === indices[j] ? `${prefix}${start}` : `${prefix}${start}-${indices[j]}`);
    }
  }
  return parts.length ? parts.join(",") : "none";
}
