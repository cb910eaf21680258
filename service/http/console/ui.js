// What every page shares: the token (this tab's memory only), calls to the HTTP API, safe DOM building
// (text always goes in as text: nothing from the server is ever parsed as HTML), and formatting.

let token = "";
/** Whether `token` is the admin token: a promise of true or false, asked of the server once per token. */
let adminCheck = null;
/** The server said the token typed is the admin token (curl lines then name $WHITEVEC_ADMIN_TOKEN). */
let adminKnown = false;
/** The collection last chosen on any page: the one the next page opens (and the nav's Versions link). */
let chosen = "default";

/** The token the user typed: a variable in this module, never written to storage, cookies or the URL. */
export function setToken(value) {
  const next = value.trim();
  if (next !== token) {
    adminCheck = null;
    adminKnown = false;
  }
  token = next;
}

/** The collection chosen last, on any page. */
export function currentCollection() {
  return chosen;
}

/** Remember `name` as the collection in use: pages opened next start from it, the nav's Versions link too. */
export function chooseCollection(name) {
  chosen = name || "default";
  const link = document.querySelector('nav a[data-page="versions"]');
  if (link) link.setAttribute("href", `#versions/${encodeURIComponent(chosen)}`);
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

/** An admin call the page did not make: no token typed, or the server already said this token is not the
 * admin token. Its status is 403 so that polling stops as it does for a refusal. */
export class AdminNeeded extends ApiError {
  constructor() {
    super(403, hasToken()
      ? "the token typed is not the admin token (an access key searches its collections and sees Health; " +
        "versions, jobs and collections are the admin's)"
      : "type it in the Token field above");
  }
}

/** JSON.parse that keeps integers beyond 2^53 exact, as BigInt (metadata ids often are; a Number would round
 * them, and a filter typed from what is shown would then match a neighbour). */
export function parseJSON(text) {
  return JSON.parse(text, (key, value, context) =>
    typeof value === "number" && !Number.isSafeInteger(value) && context && /^-?\d+$/.test(context.source)
      ? BigInt(context.source) : value);
}

/** JSON.stringify that writes a BigInt as the exact integer it is. */
export function toJSON(value, space) {
  return JSON.stringify(value, (key, v) => (typeof v === "bigint" ? JSON.rawJSON(v.toString()) : v), space);
}

/** One HTTP call, as the SDK makes it; the parsed JSON (or text) of a 2xx answer, else an ApiError. */
async function request(method, path, body) {
  const headers = { Accept: "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  const init = { method, headers, cache: "no-store", credentials: "omit", referrerPolicy: "no-referrer" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = toJSON(body);
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
    data = text ? parseJSON(text) : null;
  } catch {
    // /metrics is text; keep it as it came
  }
  if (!response.ok) {
    const message = data && data.error && data.error.message ? data.error.message : `HTTP ${response.status}`;
    throw new ApiError(response.status, message);
  }
  return data;
}

/** Whether the token typed is the admin token. The server is asked once per token (GET /admin/collections)
 * and its answer kept: an access key is refused once, not on every page and poll, since each refusal counts
 * in /metrics as a refused credential. Without a token: false, and nothing is asked. */
export function isAdmin() {
  if (!token) return Promise.resolve(false);
  if (!adminCheck) {
    const asked = token;
    const check = request("GET", "/admin/collections").then(() => {
      if (token === asked) adminKnown = true;
      return true;
    }, (err) => {
      if (err.status === 401 || err.status === 403) return false;
      if (adminCheck === check) adminCheck = null; // no answer about the token (server down, loading): ask later
      throw err;
    });
    adminCheck = check;
  }
  return adminCheck;
}

/** Resolves when the token typed is the admin token; else AdminNeeded, without a call to the server. */
async function adminGate() {
  for (;;) {
    const asked = token;
    const admin = await isAdmin();
    if (token !== asked) continue; // typed again meanwhile: ask about the new one
    if (!admin) throw new AdminNeeded();
    return;
  }
}

/** Call the API; `/admin/…` routes only once the token is known to be the admin token (see isAdmin). */
export async function api(method, path, body) {
  if (!path.startsWith("/admin/")) return request(method, path, body);
  await adminGate();
  const sent = token;
  try {
    return await request(method, path, body);
  } catch (err) {
    if ((err.status === 401 || err.status === 403) && token === sent) adminCheck = Promise.resolve(false);
    throw err;
  }
}

/** For a page only the admin token opens: true when the token typed is it; otherwise the page says so in a
 * sentence (nothing more is asked of the server for this token) and false. */
export async function adminOnly(root, what) {
  try {
    await adminGate();
    return true;
  } catch (err) {
    if (!(err instanceof AdminNeeded)) throw err;
    root.append(errorNotice(err, what));
    return false;
  }
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

/** What went wrong, as the server said it; with no token typed, where to type one. An admin call that was not
 * made says in a sentence that `what` (this page, this action) needs the admin token. */
export function errorNotice(err, what = "This page") {
  if (err instanceof AdminNeeded) {
    return el("div", { class: "notice info needs-admin", role: "status" }, `${what} needs the admin token: ${err.message}.`);
  }
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

/** Collection names this credential may see — the admin list, else /readyz's (open servers) — or null when
 * the server does not list them to it (an access key: it types the names it was given). */
export async function collectionNames() {
  try {
    if (await isAdmin()) return (await api("GET", "/admin/collections")).collections.map((c) => c.name);
  } catch {
    // not known to be the admin token: fall through
  }
  try {
    const ready = await api("GET", "/readyz");
    if (ready.collections) return Object.keys(ready.collections);
  } catch {
    // not ready yet
  }
  return null;
}

/** The collection to use: a list of the collections when the server lists them to this credential, else a
 * text field; `onpick` gets the chosen name (remembered for the next page too). */
export function collectionInput(value, onpick) {
  const pick = (name) => {
    chooseCollection(name);
    onpick(name);
  };
  const input = el("input", { type: "text", value, spellcheck: "false", name: "collection",
    onchange: () => pick(input.value.trim() || "default") });
  const holder = el("span", {}, input);
  collectionNames().then((names) => {
    if (!names) return;
    const all = names.includes(value) ? names : [value, ...names];
    const select = el("select", { name: "collection", onchange: () => pick(select.value) },
      ...all.map((n) => el("option", { value: n, ...(n === value ? { selected: "" } : {}) }, n)));
    holder.replaceChildren(select);
  }, () => {});
  return holder;
}

/** The admin API path of a collection's route (`default` included: it is a collection like the others). */
export function adminPath(name, route) {
  return `/admin/collections/${encodeURIComponent(name)}/${route}`;
}

/** The variable a copied command names for the token: the admin token for /admin calls, else the API key
 * (the names the server's start-up banner uses). */
function tokenVariable(path) {
  return path.startsWith("/admin/") || adminKnown ? "$WHITEVEC_ADMIN_TOKEN" : "$WHITEVEC_API_KEY";
}

/** A call as a shell command to copy: the token stays out of it (a variable stands in for it), and with no
 * token typed there is no Authorization header. */
export function curlCommand(method, path, body) {
  const verb = method === "GET" || (method === "POST" && body !== undefined) ? "" : ` -X ${method}`;
  const auth = hasToken() ? ` \\\n  -H "Authorization: Bearer ${tokenVariable(path)}"` : "";
  if (body === undefined) return `curl -s${verb} ${location.origin}${path}${auth}`;
  const data = toJSON(body).replaceAll("'", "'\\''");
  return `curl -s${verb} ${location.origin}${path} -H 'content-type: application/json'${auth} \\\n  -d '${data}'`;
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
