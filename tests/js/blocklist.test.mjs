// js/blocklist.js against the table core/blocklist.py is also checked against (tests/blocklist_cases.json).
// Run: node --test tests/js/*.test.mjs   (pytest runs it too, via tests/test_js.py, when node is on PATH)
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import {
  BlockListError, DOUBLE, SINGLE, describeDepth, formatBlocks, isEmptySelection, parseBlockList, resolveBlocks,
} from "../../js/blocklist.js";
import { checkPercents } from "../../js/preview.js";

const cases = JSON.parse(readFileSync(new URL("../blocklist_cases.json", import.meta.url), "utf8"));

const indices = (ranges) => ranges.flatMap(([a, b]) => Array.from({ length: Number(b - a) + 1 }, (_, i) => Number(a) + i));

function outcome(fn) {
  try {
    return { result: fn() };
  } catch (e) {
    assert.ok(e instanceof BlockListError, `expected a BlockListError, got ${e}`);
    return { error: e.message };
  }
}

for (const c of cases.parse) {
  test(`parse: ${c.desc} ${JSON.stringify(c.text)}`, () => {
    const got = outcome(() => parseBlockList(c.text));
    if (c.error !== undefined) return assert.deepEqual(got, { error: c.error });
    assert.equal(got.error, undefined, got.error);
    const sel = got.result;
    assert.deepEqual({ all: sel.everything, double: indices(sel.double), single: indices(sel.single) }, c.result);
  });
}

for (const c of cases.resolve) {
  test(`resolve: ${c.desc} ${JSON.stringify(c.text)} on ${c.model} ${c.n_double}+${c.n_single}`, () => {
    const got = outcome(() => resolveBlocks(parseBlockList(c.text), c.n_double, c.n_single, c.model));
    if (c.error !== undefined) return assert.deepEqual(got, { error: c.error });
    assert.equal(got.error, undefined, got.error);
    const pick = (kind) => got.result.filter(([k]) => k === kind).map(([, i]) => i).sort((a, b) => a - b);
    assert.deepEqual({ double: pick(DOUBLE), single: pick(SINGLE), formatted: formatBlocks(got.result) }, c.result);
  });
}

for (const c of cases.percents) {
  test(`percents: ${c.start}-${c.end}`, () => {
    assert.equal(checkPercents(c.start, c.end)?.message, c.error);
  });
}

test("a range up to the cap is kept as a range, and its first index past the depth is exact", () => {
  const sel = parseBlockList("0-9999");
  assert.deepEqual(sel.double, [[0n, 9999n]]);
  assert.throws(() => resolveBlocks(sel, 40, 0, "Wan"), { message: "blocks: 40 is past the model's depth: Wan has 40 blocks (0-39)" });
});

test("helpers: empty selection, depth text", () => {
  assert.ok(isEmptySelection(parseBlockList(" ")));
  assert.ok(!isEmptySelection(parseBlockList("all")));
  assert.equal(describeDepth("Flux", 19, 38), "Flux has 19 double blocks (0-18) and 38 single blocks (s0-s37)");
});
