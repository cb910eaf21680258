// The Search page: a query against a collection with k, a mode (dense, lexical, hybrid and its fusion) and a
// metadata filter; the request as JSON and as curl (to copy), the answer's warnings, then the hits with score,
// text and metadata, and with "explain" each side's score and rank and the matched words. In a collection with
// passages a hit is a document: its matched passages are marked in its text (the best one brightest), and a long
// text is shown around them.

import {
  api, chooseCollection, collectionInput, copyButton, curlCommand, currentCollection, el, errorNotice, isAdmin, notice,
  num, parseJSON, table, toJSON,
} from "./ui.js";

const OPERATORS = [
  ["$eq", "="], ["$ne", "≠"], ["$in", "in"], ["$nin", "not in"],
  ["$gt", ">"], ["$gte", "≥"], ["$lt", "<"], ["$lte", "≤"], ["$exists", "exists"],
];
const LISTS = new Set(["$in", "$nin"]);

/** The form as the user left it: kept while the tab is open, so coming back to Search keeps the query. */
const form = { collection: "default", query: "", k: 10, conditions: [], mode: "", method: "rrf", rrfK: 60, alpha: 0.5,
  explain: false, group: "" };
/** Characters of context shown around each matched passage of a long text. */
const CONTEXT = 120;

/** A typed value: JSON when it reads as a JSON scalar (2020, true, null, "quoted"), else the text itself. */
export function parseValue(text) {
  const trimmed = text.trim();
  try {
    const value = parseJSON(trimmed);
    if (value === null || ["string", "number", "bigint", "boolean"].includes(typeof value)) return value;
  } catch {
    // plain text
  }
  return trimmed;
}

/** A list for $in / $nin: a JSON list, or values separated by commas. */
function parseList(text) {
  const trimmed = text.trim();
  if (trimmed.startsWith("[")) {
    try {
      const list = parseJSON(trimmed);
      if (Array.isArray(list)) return list;
    } catch {
      // fall back to commas
    }
  }
  return trimmed === "" ? [] : trimmed.split(",").map(parseValue);
}

/** The filter object the API takes: AND over keys; a key's lone `=` is written as the plain value. */
export function buildFilter(conditions) {
  const filter = {};
  for (const { key, op, value } of conditions) {
    const name = key.trim();
    if (!name) continue;
    const ops = (filter[name] ??= {});
    if (op === "$exists") ops.$exists = value !== "false";
    else ops[op] = LISTS.has(op) ? parseList(value) : parseValue(value);
  }
  for (const [name, ops] of Object.entries(filter)) {
    const keys = Object.keys(ops);
    if (keys.length === 1 && keys[0] === "$eq") filter[name] = ops.$eq;
  }
  return Object.keys(filter).length ? filter : null;
}

function requestBody() {
  const body = { query: form.query, k: form.k };
  if (form.mode) body.mode = form.mode;  // none: the collection's default
  if (form.mode === "hybrid") {
    body.fusion = form.method === "rrf" ? { method: "rrf", k: form.rrfK } : { method: "weighted", alpha: form.alpha };
  }
  if (form.explain) body.explain = true;
  if (form.group) body.group = form.group;
  const filter = buildFilter(form.conditions);
  if (filter) body.filter = filter;
  return body;
}

/** One side of an explained hit: "score (#rank)", or a dash where that side did not find it. */
function sideCell(side) {
  if (!side) return el("span", { class: "muted" }, "—");
  return el("span", { class: "side" }, num(side.score, 4), el("span", { class: "muted" }, ` #${side.rank}`));
}

function searchPath() {
  return form.collection === "default" ? "/search" : `/collections/${encodeURIComponent(form.collection)}/search`;
}

/** The same request as a shell command: `$WHITEVEC_API_KEY` stands in for the token (none when none is typed). */
function curl() {
  return curlCommand("POST", searchPath(), requestBody());
}

function conditionRow(condition, redraw) {
  const value = condition.op === "$exists"
    ? el("select", { "aria-label": "exists", onchange: (e) => { condition.value = e.target.value; redraw(); } },
      el("option", { value: "true", selected: condition.value !== "false" }, "true"),
      el("option", { value: "false", selected: condition.value === "false" }, "false"))
    : el("input", { type: "text", value: condition.value, class: "filter-value", spellcheck: "false",
      placeholder: LISTS.has(condition.op) ? "a, b, 3  or  [\"a\", 3]" : "text, 2020, true, null",
      oninput: (e) => { condition.value = e.target.value; redraw(false); } });
  return el("div", { class: "condition" },
    el("input", { type: "text", value: condition.key, class: "filter-key", placeholder: "metadata key",
      spellcheck: "false", oninput: (e) => { condition.key = e.target.value; redraw(false); } }),
    el("select", { class: "filter-op", "aria-label": "operator",
      onchange: (e) => { condition.op = e.target.value; redraw(); } },
    OPERATORS.map(([op, label]) => el("option", { value: op, selected: op === condition.op }, label))),
    value,
    el("button", { type: "button", class: "small", title: "remove this condition",
      onclick: () => { form.conditions.splice(form.conditions.indexOf(condition), 1); redraw(); } }, "✕"));
}

function metadataCell(metadata) {
  const entries = Object.entries(metadata || {});
  if (!entries.length) return el("span", { class: "muted" }, "—");
  return el("span", { class: "metadata" }, entries.map(([k, v]) =>
    el("span", { class: "kv" }, el("b", {}, k), " ", typeof v === "string" ? v : toJSON(v))));
}

/** Marked ranges over a hit's text, in code points as the server counts them (a JS string counts UTF-16 units):
 * the passages merged where they overlap, each knowing whether it holds the best passage. */
export function markRanges(passages) {
  const sorted = passages.map((p, i) => ({ start: p.start, end: p.end, best: i === 0 }))
    .sort((a, b) => a.start - b.start);
  const merged = [];
  for (const p of sorted) {
    const last = merged[merged.length - 1];
    if (last && p.start <= last.end) {
      last.end = Math.max(last.end, p.end);
      last.best ||= p.best;
    } else merged.push({ ...p });
  }
  return merged;
}

/** A hit's text with its passages marked; a long one shown as its marked parts with CONTEXT around each. */
function passageText(text, passages) {
  const chars = Array.from(text);
  const ranges = markRanges(passages);
  const parts = [];
  let at = 0;
  for (const r of ranges) {
    const from = chars.length > 4 * CONTEXT ? Math.max(at, r.start - CONTEXT) : at;
    if (from > at) parts.push(el("span", { class: "muted" }, " … "));
    parts.push(chars.slice(from, r.start).join(""));
    parts.push(el("mark", { class: r.best ? "passage best" : "passage", title: "a matched passage" },
      chars.slice(r.start, r.end).join("")));
    at = r.end;
  }
  const tail = chars.length > 4 * CONTEXT ? Math.min(chars.length, at + CONTEXT) : chars.length;
  parts.push(chars.slice(at, tail).join(""));
  if (tail < chars.length) parts.push(el("span", { class: "muted" }, " …"));
  return el("span", { class: "hit-text" }, parts);
}

function answerView(answer, ms) {
  const result = answer.results[0];
  const explained = result.hits.some((h) => h.explain);
  const warnings = answer.warnings || [];
  return el("div", { class: "answer" },
    warnings.length ? notice("warning", el("ul", {}, warnings.map((w) => el("li", {}, w)))) : null,
    el("p", { class: "muted" }, `${result.hits.length} hits from version ${answer.version} in ${ms} ms`),
    result.hits.length
      ? table(["#", "score", "id", "text", "metadata", ...(explained ? ["dense", "lexical", "words"] : [])],
        result.hits.map((h, i) => [
          String(i + 1), el("span", { class: "score" }, num(h.score, 4)), el("code", {}, h.id),
          h.passages ? passageText(h.text, h.passages) : el("span", { class: "hit-text" }, h.text),
          metadataCell(h.metadata),
          ...(explained ? [sideCell(h.explain.dense), sideCell(h.explain.lexical),
            el("span", { class: "terms" }, ((h.explain.lexical && h.explain.lexical.terms) || []).join(" "))] : [])]))
      : notice("info", "No document matches."));
}

export async function searchPage(view, [collection]) {
  form.collection = collection || currentCollection();
  chooseCollection(form.collection);
  const conditions = el("div", { class: "conditions" });
  const json = el("pre", { class: "request" });
  const shell = el("pre", { class: "request" });
  const output = el("div", { class: "results" });

  const redraw = (rows = true) => {
    if (rows) conditions.replaceChildren(...form.conditions.map((c) => conditionRow(c, redraw)));
    json.textContent = toJSON(requestBody(), 2);
    shell.textContent = curl();
  };

  const run = async (event) => {
    event.preventDefault();
    if (!form.query.trim()) {
      output.replaceChildren(notice("info", "Type a query first."));
      return;
    }
    output.replaceChildren(el("p", { class: "muted" }, "searching…"));
    const started = performance.now();
    try {
      const answer = await api("POST", searchPath(), requestBody());
      output.replaceChildren(answerView(answer, Math.round(performance.now() - started)));
    } catch (err) {
      output.replaceChildren(errorNotice(err));
    }
  };

  const query = el("input", { type: "search", id: "query", value: form.query, placeholder: "a question or a sentence",
    oninput: (e) => { form.query = e.target.value; redraw(false); } });
  const k = el("input", { type: "number", id: "k", min: "1", max: "100", value: String(form.k),
    oninput: (e) => { form.k = Number(e.target.value) || 10; redraw(false); } });
  const fusion = el("span", { class: "fusion" });
  const drawFusion = () => fusion.replaceChildren(...(form.mode !== "hybrid" ? [] : [
    el("label", {}, "fusion ",
      el("select", { id: "fusion", onchange: (e) => { form.method = e.target.value; drawFusion(); redraw(false); } },
        el("option", { value: "rrf", selected: form.method === "rrf" }, "rrf"),
        el("option", { value: "weighted", selected: form.method === "weighted" }, "weighted"))),
    form.method === "rrf"
      ? el("label", {}, " k ", el("input", { type: "number", id: "rrf-k", min: "1", value: String(form.rrfK),
        oninput: (e) => { form.rrfK = Number(e.target.value) || 60; redraw(false); } }))
      : el("label", { title: "the dense side's weight; the lexical side's is 1 − alpha" }, " alpha ",
        el("input", { type: "number", id: "alpha", min: "0", max: "1", step: "0.1", value: String(form.alpha),
          oninput: (e) => { form.alpha = Number(e.target.value); redraw(false); } }))]));
  const mode = el("select", { id: "mode", "aria-label": "mode",
    onchange: (e) => { form.mode = e.target.value; drawFusion(); redraw(false); } },
  [["", "collection default"], ["dense", "dense (meaning)"], ["lexical", "lexical (words)"],
    ["hybrid", "hybrid (both)"]].map(([value, label]) => el("option", { value, selected: value === form.mode }, label)));
  const group = el("select", { id: "group", "aria-label": "group",
    title: "collections with passages: how a document scores (others ignore it)",
    onchange: (e) => { form.group = e.target.value; redraw(false); } },
  [["", "best passage"], ["mean_top", "mean of best 3"], ["none", "every passage"]]
    .map(([value, label]) => el("option", { value, selected: value === form.group }, label)));
  const explain = el("input", { type: "checkbox", id: "explain", checked: form.explain,
    onchange: (e) => { form.explain = e.target.checked; redraw(false); } });
  drawFusion();

  view.root.append(
    el("h1", {}, "Search"),
    el("form", { class: "search", onsubmit: run },
      el("div", { class: "row" },
        el("label", {}, "Collection ",
          collectionInput(form.collection, (name) => { form.collection = name; redraw(false); })),
        el("label", { class: "grow" }, "Query ", query),
        el("label", {}, "k ", k),
        el("button", { type: "submit", id: "run-search" }, "Search")),
      el("div", { class: "row" },
        el("label", {}, "Mode ", mode), fusion,
        el("label", { title: "collections with passages: how a document scores (others ignore it)" }, "Passages ",
          group),
        el("label", { title: "each side's score and rank, and the query's words each hit holds" }, explain,
          " explain")),
      el("fieldset", {},
        el("legend", {}, "Filter (all conditions must hold)"),
        conditions,
        el("button", { type: "button", class: "small", id: "add-condition",
          onclick: () => { form.conditions.push({ key: "", op: "$eq", value: "" }); redraw(); } }, "+ condition"))),
    el("details", { class: "request-box", open: true },
      el("summary", {}, "The request"),
      el("div", { class: "copy-row" }, el("span", { class: "muted" }, "JSON body"), copyButton(() => json.textContent)),
      json,
      el("div", { class: "copy-row" }, el("span", { class: "muted" }, "curl"), copyButton(() => shell.textContent)),
      shell),
    output);
  redraw();
  isAdmin().then(() => redraw(false), () => {}); // the curl line names the admin token once it is known to be one
  query.focus();
}
