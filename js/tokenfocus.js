// TokenFocus frontend: a small live preview inside every TokenFocus node of where it acts (which blocks,
// which part of the denoising). It attaches to any node whose type starts with "TokenFocus_" and has a
// `blocks` or `start_percent`/`end_percent` widget, so new nodes get it for free.
//
// Only the public extension API: app.registerExtension, the nodeCreated hook and node.addDOMWidget. The
// preview redraws from the widgets' current values whenever the canvas draws the node (DOM widget onDraw),
// and only when they changed, so it follows every kind of edit (typing, dragging, undo, loading a workflow)
// without wrapping any callback.

import { app } from "../../scripts/app.js";
import { FAMILIES, guessFamily, previewState } from "./preview.js";

const PROPERTY = "TokenFocus preview model"; // node property: "auto", "any" or a family key
const WATCHED = ["blocks", "start_percent", "end_percent", "preset"];
const MODEL_FILE = /\.(safetensors|sft|ckpt|pt|pth|bin|gguf)$/i;
const HEIGHT = 136;
const COLORS = { on: "#4c9ffe", off: "#3b3f46", steps: "#e6a23c", text: "#b8bcc4", error: "#ff6b6b" };

function widgetValue(node, name) {
  const widget = node.widgets?.find((w) => w.name === name);
  if (!widget) return undefined;
  const linked = node.inputs?.some((input) => input.widget?.name === name && input.link != null);
  return linked ? null : widget.value;
}

// The loader a node's MODEL comes from, following MODEL inputs through patch nodes (a few hops at most).
function upstreamModelFile(node) {
  let current = node;
  for (let hop = 0; hop < 16 && current; hop++) {
    const slot = current.inputs?.findIndex((input) => input.type === "MODEL") ?? -1;
    if (slot < 0) break;
    if (current.inputs[slot].link == null || !current.graph) return null; // not connected (yet)
    current = current.getInputNode(slot);
  }
  return current?.widgets?.map((w) => w.value).find((v) => typeof v === "string" && MODEL_FILE.test(v)) ?? null;
}

function chosenFamily(node) {
  const choice = node.properties?.[PROPERTY] ?? "auto";
  if (choice === "any") return { family: null, source: "" };
  if (choice !== "auto") return { family: FAMILIES.find((f) => f.key === choice) ?? null, source: "" };
  const file = upstreamModelFile(node);
  const family = guessFamily(file);
  return { family, source: family ? " (guessed from the loader)" : "", file };
}

function el(tag, style = {}, text = "") {
  const e = document.createElement(tag);
  Object.assign(e.style, style);
  if (text) e.textContent = text;
  return e;
}

function cellRow(label, cells) {
  const row = el("div", { display: "flex", alignItems: "center", gap: "4px", height: "10px" });
  const grid = el("div", { display: "grid", gridTemplateColumns: `repeat(${cells.length}, 1fr)`, gap: "1px", flex: "1" });
  cells.forEach((on, i) => {
    const cell = el("div", { height: "8px", background: on ? COLORS.on : COLORS.off });
    cell.className = on ? "tokenfocus-block on" : "tokenfocus-block";
    cell.title = `${label === "single" ? "s" : ""}${i}`;
    grid.append(cell);
  });
  row.append(el("span", { width: "38px", flex: "none" }, label), grid);
  return row;
}

function stepsBar({ start, end }) {
  const row = el("div", { display: "flex", alignItems: "center", gap: "4px", height: "10px" });
  const bar = el("div", { position: "relative", flex: "1", height: "8px", background: COLORS.off });
  bar.title = "denoising: noise (0) on the left, clean (1) on the right";
  bar.append(el("div", { position: "absolute", left: `${start * 100}%`, width: `${(end - start) * 100}%`, top: 0, bottom: 0, background: COLORS.steps }));
  row.append(el("span", { width: "38px", flex: "none" }, "steps"), bar);
  return row;
}

function render(body, state) {
  body.replaceChildren(
    ...state.rows.map((row) => cellRow(row.label, row.cells)),
    ...(state.steps ? [stepsBar(state.steps)] : []),
    ...state.errors.map((text) => el("div", { color: COLORS.error, whiteSpace: "normal" }, text)),
    ...state.lines.map((text) => el("div", { overflowWrap: "anywhere" }, text)),
    ...state.notes.map((text) => el("div", { opacity: "0.7", overflowWrap: "anywhere" }, text)),
  );
  body.parentElement.dataset.error = state.errors.join("\n");
}

function familySelect(node, onChange) {
  const select = el("select", { font: "inherit", background: "transparent", color: "inherit", border: "none", width: "100%" });
  const options = [["auto", "model depth: guess from the loader"], ["any", "model depth: any model (indices only)"]];
  options.push(...FAMILIES.map((f) => [f.key, `model depth: ${f.label} (${f.double}${f.single ? ` + ${f.single} single` : ""})`]));
  for (const [value, text] of options) select.append(new Option(text, value));
  select.value = node.properties?.[PROPERTY] ?? "auto";
  select.addEventListener("change", () => {
    node.properties = { ...node.properties, [PROPERTY]: select.value };
    onChange();
  });
  return select;
}

function attachPreview(node) {
  const root = el("div", { font: "10px sans-serif", color: COLORS.text, display: "flex", flexDirection: "column", gap: "2px", overflow: "hidden" });
  root.className = "tokenfocus-preview";
  const body = el("div", { display: "flex", flexDirection: "column", gap: "2px" });
  let shown = null;
  const update = () => {
    const values = Object.fromEntries(WATCHED.map((name) => [name, widgetValue(node, name)]));
    const { family, source, file } = chosenFamily(node);
    const key = JSON.stringify([values, family?.key, source, file]);
    if (key === shown) return;
    shown = key;
    body.title = file ? `model file: ${file}` : "";
    const { blocks, start_percent: start, end_percent: end, preset } = values;
    render(body, previewState({ blocks, start, end, preset }, family, source));
  };
  const select = familySelect(node, () => {
    shown = null;
    update();
  });
  root.append(select, body);
  const widget = node.addDOMWidget("tokenfocus_preview", "tokenfocus-preview", root, {
    serialize: false,
    hideOnZoom: false,
    getValue: () => "",
    setValue: () => {},
    getMinHeight: () => HEIGHT,
    getMaxHeight: () => HEIGHT,
    onDraw: () => {
      const choice = node.properties?.[PROPERTY] ?? "auto";
      if (select.value !== choice) select.value = choice;
      update();
    },
  });
  widget.serialize = false; // not a value: keeps widgets_values exactly the node's inputs
  update();
}

app.registerExtension({
  name: "TokenFocus.Preview",
  nodeCreated(node) {
    const type = node.constructor?.comfyClass ?? node.type ?? "";
    const names = new Set(node.widgets?.map((w) => w.name));
    if (type.startsWith("TokenFocus_") && (names.has("blocks") || names.has("start_percent") || names.has("end_percent"))) {
      attachPreview(node);
    }
  },
});
