// The Health page: /readyz in words, each collection's state, and key figures from /metrics (the admin's
// once access keys exist), refreshed every few seconds.

import { api, ApiError, badge, el, hasToken, indexText, isAdmin, notice, num, put, table } from "./ui.js";

/** Prometheus text as [{name, labels, value}] (comments skipped). */
export function parseMetrics(text) {
  const out = [];
  for (const line of text.split("\n")) {
    const m = /^([A-Za-z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m || line.startsWith("#")) continue;
    const labels = {};
    for (const [, k, v] of (m[2] || "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[k] = v.replace(/\\(.)/g, "$1");
    out.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return out;
}

function sum(samples, name, where = () => true) {
  return samples.filter((s) => s.name === name && where(s.labels)).reduce((total, s) => total + s.value, 0);
}

function readyWords(r) {
  const index = r.index || {};
  const lines = [
    `Serving model ${r.model} (${r.model_source}, ${r.pooling} pooling, ${r.model_dim} dims) on ${r.encoder_device} ` +
      `with the ${r.engine} engine${r.engine_reason ? `: ${r.engine_reason}` : ""}.`,
    index.loaded
      ? `Version ${r.version}: ${num(index.count)} documents in a ${indexText(index.spec)} index on ${index.device}` +
        `${index.pending_changes ? `, ${index.pending_changes} changes in its log` : ""}.`
      : "No index yet: searches answer 409 until a rebuild.",
    r.whitening
      ? `Whitening β ${num(r.whitening.beta)}, γ ${num(r.whitening.gamma)}: ${r.dim} of ${r.model_dim} dims served.`
      : "No whitening fitted: raw vectors.",
  ];
  if (r.engine_choice) {
    lines.push(`New versions on this machine get ${r.engine_choice.engine} (WHITEVEC_ENGINE=${r.engine_choice.configured}).`);
  }
  if (r.limits) {
    lines.push(`Limits: ${r.limits.max_texts} texts per request, ${num(r.limits.max_text_chars)} characters per text, ` +
      `k ≤ ${r.limits.max_k}.`);
  }
  return lines;
}

function readyView(r) {
  const out = [
    el("p", { class: "status-line" }, badge(r.status), " ", r.status === "ready"
      ? "Ready: /embed and /search are answered."
      : "Degraded: answering, but something needs an operator (below)."),
    el("ul", { class: "words" }, readyWords(r).map((line) => el("li", {}, line))),
  ];
  if (r.refused) {
    out.push(notice("warning", `Version ${r.refused.version} was refused (${r.refused.reason}); ` +
      `serving ${r.refused.served_instead ?? "no version"} instead.`));
  }
  if (r.collections) {
    out.push(el("h2", {}, "Collections"), table(["name", "status", "documents", "active version", "problem"],
      Object.entries(r.collections).map(([name, c]) => [el("a", { href: `#versions/${encodeURIComponent(name)}` }, name),
        badge(c.status), num(c.documents), c.active_version ?? "—",
        c.error || (c.refused ? `refused ${c.refused.version}: ${c.refused.reason}` : "")])));
  }
  return out;
}

function metricsView(samples) {
  const requests = "whitevec_requests_total";
  const statuses = new Map();
  for (const s of samples.filter((x) => x.name === requests)) {
    statuses.set(s.labels.status, (statuses.get(s.labels.status) || 0) + s.value);
  }
  const byStatus = [...statuses.entries()].sort().map(([code, n]) => `${code} ${num(n, 0)}`).join(", ") || "none";
  const search = (l) => (l.route || "").endsWith("/search");
  const searches = sum(samples, "whitevec_request_duration_seconds_count", search);
  const seconds = sum(samples, "whitevec_request_duration_seconds_sum", search);
  const byLabel = (name, label) => samples.filter((s) => s.name === name && s.value)
    .map((s) => `${s.labels[label]} ${num(s.value, 0)}`).join(", ") || "none";
  const rows = [
    ["requests since start", num(sum(samples, requests), 0)],
    ["by status (503s while loading included)", byStatus],
    ["searches, mean latency", searches ? `${num(searches, 0)}, ${num((seconds / searches) * 1000, 1)} ms` : "none yet"],
    ["queue (tokens waiting for the model)", num(sum(samples, "whitevec_queue_depth"), 0)],
    ["documents by collection", byLabel("whitevec_index_vectors", "collection")],
    ["jobs by state", byLabel("whitevec_jobs", "state")],
    ["refused credentials", byLabel("whitevec_auth_failures_total", "reason")],
  ];
  return [el("h2", {}, "Key metrics"), table(["", ""], rows),
    el("p", { class: "muted" }, "From /metrics (Prometheus text), refreshed every 5 s.")];
}

const METRICS_NEED_ADMIN = "Figures from /metrics name every collection, so once access keys exist only the " +
  "admin token reads them: type it above to see them.";

export async function healthPage(view) {
  let refused = false;
  const ready = el("div");
  const metrics = el("div");
  view.root.append(el("h1", {}, "Health"), ready, metrics);
  await view.every(5000, async () => {
    try {
      put(ready, readyView(await api("GET", "/readyz")));
    } catch (err) {
      if (!(err instanceof ApiError) || err.status !== 503) throw err;
      ready.replaceChildren(el("p", { class: "status-line" }, badge("not ready", "failed"), " ",
        `Not ready: ${err.message}`));
    }
    if (refused || (hasToken() && !(await isAdmin()))) {
      put(metrics, [el("h2", {}, "Key metrics"), el("p", { class: "muted" }, METRICS_NEED_ADMIN)]);
      return;
    }
    try {
      put(metrics, metricsView(parseMetrics(await api("GET", "/metrics"))));
    } catch (err) {
      if (!(err instanceof ApiError) || (err.status !== 401 && err.status !== 403)) throw err;
      refused = true; // asked once on this visit: a refusal counts in /metrics, so it is not asked again
      put(metrics, [el("h2", {}, "Key metrics"), el("p", { class: "muted" }, METRICS_NEED_ADMIN)]);
    }
  });
}
