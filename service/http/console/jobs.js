// The Jobs page: every job with its state and live progress (polled), cancel, the error of a failed one;
// one job's page adds a training's loss curve and before/after figures, or a rebuild's result, and the
// Spearman-against-dim plot of auto whitening.

import { lossChart, searchTuningChart, tuningChart } from "./plots.js";
import { adminOnly, api, badge, el, errorNotice, indexText, notice, num, put, table, toJSON, when, whiteningText } from "./ui.js";

const FINAL = new Set(["succeeded", "failed", "cancelled", "interrupted"]);
const UNITS = { encoding: "documents", training: "steps", tuning: "pair sentences" };
/** Loss per step seen while this tab watched a running training (job id → step → loss). */
const samples = new Map();

function progressCell(job) {
  const { done, total, phase } = job.progress;
  if (job.state === "queued") return el("span", { class: "progress-text" }, "waiting for the jobs before it");
  const bar = total > 0 ? el("progress", { max: String(total), value: String(Math.min(done, total)) })
    : el("progress", {}); // not counting yet: an indeterminate bar
  const words = job.state === "succeeded" ? "done"
    : total > 0 ? `${phase ?? ""} ${done.toLocaleString("en")}/${total.toLocaleString("en")} ${UNITS[phase] ?? ""}`
      : (phase ?? "starting");
  return el("span", { class: "progress" }, FINAL.has(job.state) && job.state !== "succeeded" ? null : bar,
    el("span", { class: "progress-text" }, words.trim()));
}

function cancelButton(job, after) {
  if (FINAL.has(job.state)) return "";
  const button = el("button", { type: "button", class: "small cancel-job", onclick: async () => {
    button.disabled = true;
    try {
      after(await api("POST", `/admin/jobs/${encodeURIComponent(job.id)}/cancel`));
    } catch (err) {
      button.replaceWith(errorNotice(err));
    }
  } }, "Cancel");
  return button;
}

async function jobList(view, collection) {
  const holder = el("div");
  view.root.append(el("h1", {}, "Jobs", collection ? ` of collection ${collection}` : ""),
    el("p", { class: "muted" }, "The latest 100, newest first; progress is polled every second."), holder);
  const path = collection ? `/admin/jobs?collection=${encodeURIComponent(collection)}` : "/admin/jobs";
  let refresh;
  const draw = (jobs) => holder.replaceChildren(jobs.length ? table(
    ["job", "kind", "collection", "state", "progress", "created", "finished", "error", ""],
    jobs.map((j) => [el("a", { href: `#jobs/${encodeURIComponent(j.id)}` }, el("code", {}, j.id)), j.kind,
      j.collection, badge(j.state), progressCell(j), when(j.created_at), when(j.finished_at),
      j.error ? el("span", { class: "error-text", title: j.error }, j.error) : "", cancelButton(j, () => refresh())]),
  ) : notice("info", "No jobs yet: a rebuild (Versions page) or a training (POST /admin/train) starts one."));
  refresh = async () => draw(await api("GET", path));
  await view.every(1000, refresh);
}

function record(job) {
  const loss = job.detail && job.detail.loss;
  if (job.kind !== "train" || job.progress.phase !== "training" || typeof loss !== "number") return;
  if (!samples.has(job.id)) samples.set(job.id, new Map());
  samples.get(job.id).set(job.progress.done, loss);
}

/** The loss points of a job's record: [step, loss] pairs, or a plain list of losses (step i + 1); those
 * without a finite step and loss are left out. Null when the record has none. */
function recordedLoss(job) {
  const full = job.result && job.result.report && job.result.report.loss;
  if (!Array.isArray(full) || !full.length) return null;
  return full.map((p, i) => (Array.isArray(p) ? [Number(p[0]), Number(p[1])] : [i + 1, Number(p)]))
    .filter(([step, loss]) => Number.isFinite(step) && Number.isFinite(loss))
    .sort((a, b) => a[0] - b[0]);
}

/** The loss curve: the loss the job's result records (per step, or [step, loss] pairs), else what this tab
 * saw while the job ran. */
function lossSection(job) {
  const recorded = recordedLoss(job);
  const points = recorded && recorded.length ? recorded
    : [...(samples.get(job.id) || new Map()).entries()].sort((a, b) => a[0] - b[0]);
  const latest = job.detail && typeof job.detail.loss === "number" ? ` (latest ${num(job.detail.loss, 4)})` : "";
  const enough = recorded && recorded.length ? points.length >= 1 : points.length >= 2;
  return [el("h2", {}, "Loss", latest),
    enough ? el("figure", { class: "plot loss-plot" },
      lossChart(points, recorded && recorded.length ? null : "sampled while this page watched the job"))
      : el("p", { class: "muted" }, FINAL.has(job.state)
        ? "This job's record has no loss per step, and this page did not watch it run."
        : "The curve grows here while the job trains.")];
}

function beforeAfter(job) {
  const r = (job.result && job.result.report) || {};
  const d = job.detail || {};
  const pick = (key) => r[key] ?? d[key] ?? null;
  const rows = [["Spearman ×100 on the eval pairs", "eval"], ["paraphrase hit@1", "hit_at_1"]]
    .filter(([, key]) => pick(`${key}_before`) !== null || pick(`${key}_after`) !== null)
    .map(([label, key]) => {
      const [before, after] = [pick(`${key}_before`), pick(`${key}_after`)];
      const change = before !== null && after !== null ? after - before : null;
      return [label, num(before, 3), num(after, 3),
        change === null ? "—" : el("span", { class: change >= 0 ? "up" : "down" }, `${change >= 0 ? "+" : ""}${num(change, 3)}`)];
    });
  if (!rows.length) return [el("p", { class: "muted" }, "No eval pairs were given (eval_path): no before/after figures.")];
  return [el("h2", {}, "Before and after"), table(["", "before", "after", "change"], rows)];
}

function tuningSection(tuning) {
  const held = tuning.held_out || {};
  const at = held.grid_best_at || {};
  return [el("h2", {}, "Auto whitening"), el("p", {}, tuning.reason), tuningChart(tuning),
    table(["held-out Spearman ×100", "value"], [
      ["the choice", num(held.chosen)],
      [`the grid's best (β ${num(at.beta)} γ ${num(at.gamma)} dim ${at.dim}${at.raw ? ", raw" : ""})`, num(held.grid_best)],
      ["raw vectors", num(held.raw)]]),
    el("p", { class: "muted" }, `Chosen on ${tuning.split?.choose} pairs, reported on the other ${tuning.split?.report} ` +
      `(seed ${tuning.split?.seed}), tolerance ${tuning.tolerance}; pairs: ${tuning.pairs}.`)];
}

function searchTuningSection(tuning) {
  return [el("h2", {}, "Auto search"), el("p", {}, tuning.reason), searchTuningChart(tuning),
    table(["candidate", "choosing hit@1", "MRR@10", "held-out hit@1", "MRR@10"], tuning.table.map((r) => [
      r.candidate === tuning.candidate ? el("b", {}, `${r.candidate} ★`) : r.candidate,
      num(r.choose.hit_at_1), num(r.choose.mrr_at_10), num(r.report.hit_at_1), num(r.report.mrr_at_10)])),
    el("p", { class: "muted" }, `Chosen on ${tuning.split?.choose} queries, reported on the other ` +
      `${tuning.split?.report} (seed ${tuning.split?.seed}) over ${tuning.corpus} sentences; pairs: ${tuning.pairs}.`)];
}

function buildResult(result) {
  const w = result.whitening || {};
  return [el("h2", {}, "Result"), table(["", ""], [
    ["version", el("a", { href: "#versions" }, el("code", {}, result.version))],
    ["documents", num(result.documents)], ["model", result.model ?? "—"],
    ["whitening", whiteningText({ ...(w.params || {}), output_dim: w.output_dim })],
    ["index", indexText(result.index && (result.index.spec || result.index))],
    ["re-encoded", result.reencoded === false ? "no (stored vectors)" : "yes"], ["seconds", num(result.seconds)],
  ]), (result.warnings || []).length ? notice("warning", el("ul", {}, result.warnings.map((w2) => el("li", {}, w2)))) : null];
}

function figures(job) {
  const out = [];
  const result = job.result || {};
  if (job.kind === "train") {
    out.push(...lossSection(job), ...beforeAfter(job));
    const r = result.report;
    if (r) {
      out.push(el("p", { class: "muted" }, `${r.n_classes} classes from ${r.n_texts} texts, ${r.steps} steps in ` +
        `${num(r.train_seconds)} s; model folder ${result.model_dir}.`));
    }
    if (result.comparison) {
      out.push(el("h2", {}, "Base and fine-tuned"), table(["", "Spearman ×100", "hit@1"],
        Object.entries(result.comparison).map(([what, v]) => [what, num(v.spearman), num(v.hit_at_1, 3)])));
    }
    if (result.activation) out.push(...buildResult(result.activation));
    if (result.activation && result.activation.tuning) out.push(...tuningSection(result.activation.tuning));
  } else if (job.result) {
    if (result.version) out.push(...buildResult(result));
    if (result.tuning) out.push(...tuningSection(result.tuning));
    if (result.search_tuning) out.push(...searchTuningSection(result.search_tuning));
  }
  return out;
}

function summary(job, show) {
  const times = [["created", job.created_at], ["started", job.started_at], ["finished", job.finished_at]]
    .map(([k, v]) => el("span", {}, `${k} `, when(v)));
  return [
    el("p", { class: "job-head" }, el("b", {}, job.kind), " in collection ",
      el("a", { href: `#versions/${encodeURIComponent(job.collection)}` }, job.collection), " ",
      el("span", { class: "job-state" }, badge(job.state)), " ", cancelButton(job, show)),
    el("div", { class: "job-progress" }, progressCell(job)),
    el("p", { class: "muted times" }, times),
    job.error ? notice(job.state === "failed" ? "error" : "warning", job.error) : null,
  ];
}

async function jobDetail(view, id) {
  const head = el("div");
  const body = el("div");
  const raw = el("pre", { class: "json" });
  view.root.append(el("p", {}, el("a", { href: "#jobs" }, "← all jobs")), el("h1", {}, "Job ", el("code", {}, id)),
    head, body, el("details", { class: "panel" }, el("summary", {}, `The job as JSON (GET /admin/jobs/${id})`), raw));
  let shown = "";
  const show = (job) => {
    record(job);
    const text = toJSON(job, 2);
    if (text === shown) return;
    shown = text;
    put(head, summary(job, show));
    put(body, figures(job));
    raw.textContent = text;
  };
  await view.every(500, async () => {
    const job = await api("GET", `/admin/jobs/${encodeURIComponent(id)}`);
    show(job);
    return !FINAL.has(job.state);
  });
}

export async function jobsPage(view, args) {
  if (!(await adminOnly(view.root, "The Jobs page"))) {
    view.root.prepend(el("h1", {}, "Jobs"));
    return;
  }
  if (args[0] === "collection") return jobList(view, args[1]);
  if (args[0]) return jobDetail(view, args[0]);
  return jobList(view);
}
