// The rebuild form of the Versions page: the body of POST /admin/collections/<name>/rebuild, built from a
// few fields and shown before it is sent; the job it starts opens on the Jobs page.

import { adminPath, api, el, errorNotice, toJSON } from "./ui.js";

/** A number field's value: the number, or the text itself when it is not one (the server says what is wrong). */
function number(text) {
  const trimmed = text.trim();
  return trimmed !== "" && !Number.isNaN(Number(trimmed)) ? Number(trimmed) : trimmed;
}

function field(label, input, hint) {
  return el("label", { class: "field" }, el("span", {}, label), input, hint ? el("small", { class: "muted" }, hint) : null);
}

export function rebuildForm(name) {
  const input = (id, attrs = {}) => el("input", { type: "text", id: `rebuild-${id}`, spellcheck: "false", ...attrs });
  const select = (id, options) => el("select", { id: `rebuild-${id}` },
    options.map(([value, label]) => el("option", { value }, label)));
  const f = {
    source: select("source", [["file", "a JSONL file in the data dir's import/ folder"],
      ["stored", "the served corpus, from its stored vectors (no model run)"]]),
    path: input("path", { placeholder: "docs.jsonl" }),
    mode: select("mode", [["replace", "replace: the file becomes the corpus"],
      ["merge", "merge: added to the served corpus, same id replaced"]]),
    shrink: el("input", { type: "checkbox", id: "rebuild-shrink" }),
    whitening: select("whitening", [["default", "the collection's default (re-whitening: as served)"],
      ["set", "set β, γ and dim"], ["auto", "auto: tuned on labelled pairs"]]),
    beta: input("beta", { placeholder: "0…1" }),
    gamma: input("gamma", { placeholder: "0…1" }),
    dim: input("dim", { placeholder: "all" }),
    pairs: input("pairs", { placeholder: "pairs.tsv" }),
    maxDim: input("max-dim", { placeholder: "the model's" }),
    tolerance: input("tolerance", { placeholder: "0.3" }),
    index: select("index", [["", "as before"], ["flat", "flat (exact)"], ["ivf", "ivf"], ["hnsw", "hnsw"]]),
  };
  const fromFile = el("div", { class: "row" }, field("File", f.path), field("Mode", f.mode),
    el("label", { class: "field check" }, f.shrink, el("span", {}, "allow a replace that leaves fewer than half")));
  const setParams = el("div", { class: "row" }, field("β (mean removal)", f.beta),
    field("γ (variance equalisation)", f.gamma), field("dim", f.dim));
  const autoParams = el("div", { class: "row" }, field("Pairs file", f.pairs, "sentence1<TAB>sentence2<TAB>score"),
    field("max dim", f.maxDim), field("tolerance", f.tolerance, "Spearman ×100"));
  const preview = el("pre", { class: "request", id: "rebuild-body" });
  const status = el("div");

  const body = () => {
    const out = {};
    if (f.source.value === "stored") out.reencode = false;
    else {
      out.path = f.path.value.trim();
      if (f.mode.value === "merge") out.mode = "merge";
      if (f.shrink.checked) out.confirm_shrink = true;
    }
    if (f.whitening.value === "set") {
      const w = {};
      for (const key of ["beta", "gamma", "dim"]) if (f[key].value.trim()) w[key] = number(f[key].value);
      out.whitening = w;
    } else if (f.whitening.value === "auto") {
      const auto = { pairs: f.pairs.value.trim() };
      if (f.maxDim.value.trim()) auto.max_dim = number(f.maxDim.value);
      if (f.tolerance.value.trim()) auto.tolerance = number(f.tolerance.value);
      out.whitening = { auto };
    }
    if (f.index.value) out.index = { type: f.index.value };
    return out;
  };
  const update = () => {
    fromFile.hidden = f.source.value !== "file";
    setParams.hidden = f.whitening.value !== "set";
    autoParams.hidden = f.whitening.value !== "auto";
    preview.textContent = toJSON(body(), 2);
  };
  const start = async (event) => {
    event.preventDefault();
    status.replaceChildren(el("p", { class: "muted" }, "submitting…"));
    try {
      const accepted = await api("POST", adminPath(name, "rebuild"), body());
      location.hash = `#jobs/${encodeURIComponent(accepted.job_id)}`;
    } catch (err) {
      status.replaceChildren(errorNotice(err));
    }
  };

  const form = el("form", { class: "rebuild", oninput: update, onchange: update, onsubmit: start },
    el("div", { class: "row" }, field("Documents", f.source)), fromFile,
    el("div", { class: "row" }, field("Whitening", f.whitening), field("Index", f.index)), setParams, autoParams,
    el("p", { class: "muted" }, `POST ${adminPath(name, "rebuild")} with:`), preview,
    el("button", { type: "submit", id: "start-rebuild" }, "Start rebuild"), status);
  update();
  return el("details", { class: "panel" }, el("summary", {}, `Rebuild ${name}`), form);
}
