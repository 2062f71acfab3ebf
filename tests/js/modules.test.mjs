// Everything under js/ is loaded by the ComfyUI frontend as an extension module, so the helper modules
// must only export (no side effects) and the extension must use only the public extension API.
import assert from "node:assert/strict";
import { readFileSync, readdirSync } from "node:fs";
import { test } from "node:test";

const jsDir = new URL("../../js/", import.meta.url);
const helpers = readdirSync(jsDir).filter((f) => f.endsWith(".js") && f !== "tokenfocus.js");

test("helper modules import without a browser and have only exports at top level", async () => {
  assert.ok(helpers.length >= 2);
  for (const file of helpers) {
    await import(new URL(file, jsDir)); // no window, document or app here: a side effect would throw
    const source = readFileSync(new URL(file, jsDir), "utf8");
    const topLevel = source.split("\n").filter((line) => /^[a-zA-Z]/.test(line));
    for (const line of topLevel) {
      assert.match(line, /^(import|export|const|function|class)\b/, `${file}: top-level statement ${line}`);
    }
    assert.doesNotMatch(source, /\b(window|document|app)\./, `${file} touches the page`);
  }
});

test("the extension registers through app.registerExtension and adds a DOM widget, patching nothing", () => {
  const source = readFileSync(new URL("tokenfocus.js", jsDir), "utf8");
  assert.match(source, /app\.registerExtension\(/);
  assert.match(source, /\.addDOMWidget\(/);
  assert.doesNotMatch(source, /\.prototype\b|LiteGraph|LGraph|app\.(graph|canvas)\b|window\./);
});
