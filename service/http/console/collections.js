// The Collections page (documents, model, whitening, active version of each) and the Versions page of one
// collection (its kept versions, the active one marked, a rollback with a confirm step, a rebuild form).

import { rebuildForm } from "./rebuild.js";
import {
  adminOnly, adminPath, api, badge, chooseCollection, collectionInput, el, errorNotice, indexText, notice, num, table,
  when,
  whiteningText,
} from "./ui.js";

function collectionLinks(name) {
  const encoded = encodeURIComponent(name);
  return el("span", { class: "links" },
    el("a", { href: `#search/${encoded}` }, "search"), " · ",
    el("a", { href: `#versions/${encoded}` }, "versions"), " · ",
    el("a", { href: `#jobs/collection/${encoded}` }, "jobs"));
}

/** What /readyz tells anyone about collections on a server without access keys (no admin token needed). */
async function readyCollections() {
  try {
    return (await api("GET", "/readyz")).collections || null;
  } catch {
    return null;
  }
}

export async function collectionsPage(view) {
  view.root.append(el("h1", {}, "Collections"));
  if (!(await adminOnly(view.root, "The Collections page"))) {
    const ready = await readyCollections();
    if (ready) {
      view.root.append(el("p", { class: "muted" }, "What /readyz shows without the admin token:"),
        table(["name", "documents", "active version", "status"], Object.entries(ready).map(([name, c]) => [
          el("b", {}, name), num(c.documents), c.active_version ?? "—", badge(c.status)])));
    }
    return;
  }
  const names = (await api("GET", "/admin/collections")).collections.map((c) => c.name);
  const details = await Promise.all(names.map((n) => api("GET", `/admin/collections/${encodeURIComponent(n)}`)));
  view.root.append(table(
    ["name", "documents", "model", "dim", "whitening", "index", "active version", "status", "created", ""],
    details.map((c) => [el("b", {}, c.name), num(c.documents), c.model ?? "—", num(c.dim), whiteningText(c.whitening),
      indexText(c.index), c.active_version ? el("code", {}, c.active_version) : "—", badge(c.status),
      when(c.created_at), collectionLinks(c.name)])));
}

function modelText(m) {
  if (!m) return "—";
  return el("span", {}, m.name ?? "—", el("br"), el("span", { class: "muted" },
    [m.pooling, m.engine, m.dim ? `${m.dim} dims` : null].filter(Boolean).join(" · ")));
}

function versionWhitening(w) {
  const out = [whiteningText(w)];
  if (w && w.tuned) out.push(el("br"), el("span", { class: "muted", title: w.tuned.reason || "" },
    `tuned on ${w.tuned.pairs}: held-out ${num(w.tuned.held_out && w.tuned.held_out.chosen)}`));
  if (w && w.suggestion) out.push(el("br"), el("span", { class: "muted", title: w.suggestion.why || "" },
    `unlabelled hint: β ${num(w.suggestion.beta)} γ ${num(w.suggestion.gamma)}`));
  return el("span", {}, out);
}

function changesText(c) {
  if (!c) return "—";
  return `+${c.added ?? 0} −${c.gone ?? 0} → ${num(c.live_documents)} live`;
}

/** The rollback (or roll-forward) cell: a button, then a confirm step naming both versions. */
function activateCell(name, v, active, older, reload, say) {
  const cell = el("span", { class: "activate" });
  const ask = () => cell.replaceChildren(
    el("span", {}, `Serve ${v.version} instead of ${active}? `),
    el("button", { type: "button", class: "danger confirm-activate", onclick: yes }, "Yes, activate"),
    " ",
    el("button", { type: "button", class: "small", onclick: initial }, "Cancel"));
  const yes = async () => {
    cell.replaceChildren(el("span", { class: "muted" }, "loading and verifying…"));
    try {
      const done = await api("POST", adminPath(name, `versions/${encodeURIComponent(v.version)}/activate`));
      say(notice("ok", `Version ${done.active} is active in collection ${name}: ${done.documents} documents.`));
    } catch (err) {
      say(errorNotice(err));
    }
    reload();
  };
  function initial() {
    cell.replaceChildren(el("button", { type: "button", class: "activate-version", "data-version": v.version,
      onclick: ask }, older ? "Roll back to this" : "Activate"));
  }
  initial();
  return cell;
}

export async function versionsPage(view, [name = "default"]) {
  chooseCollection(name); // the nav's Versions link and the next Search follow the collection shown here
  const messages = el("div", { class: "messages" });
  const listing = el("div");
  const say = (node) => messages.replaceChildren(node);
  const reload = async () => {
    let answer;
    try {
      answer = await api("GET", adminPath(name, "versions"));
    } catch (err) {
      listing.replaceChildren(errorNotice(err));
      return;
    }
    const activeAt = answer.versions.findIndex((v) => v.version === answer.active);
    listing.replaceChildren(answer.versions.length ? table(
      ["version", "created", "activated", "documents", "model", "whitening", "index", "changes", ""],
      answer.versions.map((v, i) => [
        el("span", {}, el("code", {}, v.version), " ", v.active ? badge("active") : null,
          v.served && !v.active ? badge("served") : null),
        when(v.created_at), when(v.activated_at), num(v.documents),
        v.damaged ? el("span", { class: "damaged" }, v.damaged) : modelText(v.model),
        versionWhitening(v.whitening), indexText(v.index), changesText(v.changes),
        v.active || v.damaged ? "" : activateCell(name, v, answer.active, activeAt >= 0 && i > activeAt, reload, say),
      ]),
      (i) => (answer.versions[i].active ? "active" : ""),
    ) : notice("info", `Collection ${name} has no version yet: start a rebuild below.`));
  };
  view.root.append(el("h1", {}, "Versions of ", el("span", { class: "collection-name" }, name)));
  if (!(await adminOnly(view.root, "The Versions page"))) return;
  view.root.append(
    el("p", {}, el("label", {}, "Collection ",
      collectionInput(name, (picked) => { location.hash = `#versions/${encodeURIComponent(picked)}`; })),
    " ", el("span", { class: "muted" }, "Newest first. Activating a version serves its model, whitening and index " +
      "together; a damaged one is refused and nothing changes.")),
    messages, listing,
    rebuildForm(name));
  await reload();
}
