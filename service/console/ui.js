// What every page shares: the token (this tab's memory only), calls to the HTTP API, safe DOM building
// (text always goes in as text: nothing from the server is ever parsed as HTML), and formatting.

let token = "";

/** The token the user typed: a variable in this module, never written to storage, cookies or the URL. */
export function setToken(value) {
  token = value.trim();
}

export function hasToken() {
  return token !== "";
}

/** An error answer from the API: its status and the message the server wrote for people. */
export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** Call the API as the SDK does; the parsed JSON (or text) of a 2xx answer, else an ApiError. */
export async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  const init = { method, headers, cache: "no-store", credentials: "omit", referrerPolicy: "no-referrer" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (err) {
    throw new ApiError(0, `the server did not answer (${err.message})`);
  }
  const text = await response.text();
  let data = text;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    // /metrics is text; keep it as it came
  }
  if (!response.ok) {
    const message = data && data.error && data.error.message ? data.error.message : `HTTP ${response.status}`;
    throw new ApiError(response.status, message);
  }
  return data;
}

/** An element with attributes (`on…` functions become listeners) and children (strings become text). */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") node.addEventListener(key.slice(2), value);
    else if (key === "class") node.className = value;
    else if (key === "value") node.value = value;
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  return add(node, children);
}

/** Append children to a node: nodes as they are, strings as text; null, undefined and false are skipped. */
function add(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

/** Replace a node's children (as `el` takes them). */
export function put(node, ...children) {
  node.replaceChildren();
  return add(node, children);
}

/** A message box: `error`, `warning`, `ok` or `info`. */
export function notice(kind, ...children) {
  return el("div", { class: `notice ${kind}`, role: kind === "error" ? "alert" : "status" }, ...children);
}

/** What went wrong, as the server said it; with no token typed, where to type one. */
export function errorNotice(err) {
  const hint = (err.status === 401 || err.status === 403) && !hasToken()
    ? " (type the admin token or an access key in the Token field above)" : "";
  return notice("error", err.status ? `${err.status}: ` : "", err.message, hint);
}

/** A table from column titles (all empty: no header row) and rows of cells (strings or nodes). */
export function table(columns, rows, rowClass = () => "") {
  return el("div", { class: "table-wrap" }, el("table", {},
    columns.some(Boolean) ? el("thead", {}, el("tr", {}, columns.map((c) => el("th", {}, c)))) : null,
    el("tbody", {}, rows.map((cells, i) => el("tr", { class: rowClass(i) || null }, cells.map((c) => el("td", {}, c)))))));
}

export function badge(text, kind = text) {
  return el("span", { class: `badge ${kind}` }, text);
}

/** A timestamp (ISO 8601 string or epoch seconds) as `2026-12-02 01:30:00Z`; the raw value on hover. */
export function when(value) {
  if (value === null || value === undefined) return "—";
  const date = typeof value === "number" ? new Date(value * 1000) : new Date(value);
  if (Number.isNaN(date.getTime())) return String(value);
  return el("time", { datetime: date.toISOString(), title: String(value) },
    date.toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z"));
}

export function num(value, digits = 2) {
  if (value === null || value === undefined) return "—";
  return typeof value === "number" ? String(Number(value.toFixed(digits))) : String(value);
}

/** A whitening's parameters in one line: `β 1 · γ 1 · dim 256 → 256 · fitted on 1,200`. */
export function whiteningText(w) {
  if (!w) return "—";
  if (w.auto) return `auto, tuned on ${w.auto.pairs}`;
  const parts = [`β ${num(w.beta)}`, `γ ${num(w.gamma)}`, `dim ${w.dim ?? "all"}`];
  if (w.output_dim !== undefined && w.output_dim !== null) parts[2] += ` → ${w.output_dim}`;
  if (w.fitted_on) parts.push(`fitted on ${w.fitted_on.toLocaleString("en")}`);
  return parts.join(" · ");
}

/** An index spec in one line: `hnsw · m 32 · ef_search 128`. */
export function indexText(spec) {
  if (!spec) return "—";
  const rest = Object.entries(spec).filter(([k, v]) => k !== "type" && v !== null && v !== undefined);
  return [spec.type, ...rest.map(([k, v]) => `${k} ${v}`)].join(" · ");
}

/** Collection names this credential may see: the admin list, else /readyz's (open servers), else `default`. */
export async function collectionNames() {
  if (hasToken()) {
    try {
      return (await api("GET", "/admin/collections")).collections.map((c) => c.name);
    } catch {
      // not the admin token: fall through
    }
  }
  try {
    const ready = await api("GET", "/readyz");
    if (ready.collections) return Object.keys(ready.collections);
  } catch {
    // not ready yet
  }
  return ["default"];
}

/** A text input that suggests collection names; `onpick` gets the chosen name. */
export function collectionInput(value, onpick) {
  const list = el("datalist", { id: `collections-${Math.random().toString(36).slice(2)}` });
  const input = el("input", { type: "text", value, list: list.id, spellcheck: "false", name: "collection",
    onchange: () => onpick(input.value.trim() || "default") });
  collectionNames().then((names) => list.replaceChildren(...names.map((n) => el("option", { value: n }))));
  return el("span", {}, input, list);
}

/** The admin API path of a collection's route (`default` included: it is a collection like the others). */
export function adminPath(name, route) {
  return `/admin/collections/${encodeURIComponent(name)}/${route}`;
}

/** Copy text to the clipboard, saying on the button whether it worked. */
export function copyButton(text) {
  const button = el("button", { type: "button", class: "small", onclick: async () => {
    try {
      await navigator.clipboard.writeText(text());
      button.textContent = "copied";
    } catch {
      button.textContent = "select and copy by hand";
    }
    setTimeout(() => { button.textContent = "copy"; }, 1500);
  } }, "copy");
  return button;
}
