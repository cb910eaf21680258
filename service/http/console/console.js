// The console's entry point: hash navigation (#search, #collections, #versions/<collection>, #jobs,
// #jobs/<id>, #health), the token field, and the view each page draws into (its timers stop when you leave).

import { healthPage } from "./health.js";
import { jobsPage } from "./jobs.js";
import { collectionsPage, versionsPage } from "./collections.js";
import { searchPage } from "./search.js";
import { el, errorNotice, hasToken, isAdmin, setToken } from "./ui.js";

const PAGES = {
  search: searchPage,
  collections: collectionsPage,
  versions: versionsPage,
  jobs: jobsPage,
  health: healthPage,
};

/** Where a page draws, and its polling: `every` repeats a call until the user navigates away. */
class View {
  constructor(root) {
    this.root = root;
    this.open = true;
    this.timers = new Set();
    this.problem = el("div", { class: "poll-error" });
    root.append(this.problem);
  }

  /** Run `fn` now and then `ms` after each run ends, while the view is open; `fn` returning false stops it.
   * A failed run is shown at the top (the next success clears it) and polling goes on, unless the credential
   * was refused: asking again would only add to the server's count of refusals. */
  every(ms, fn) {
    const tick = async () => {
      if (!this.open) return;
      let again = true;
      try {
        again = (await fn()) !== false;
        this.problem.replaceChildren();
      } catch (err) {
        this.problem.replaceChildren(errorNotice(err));
        again = err.status !== 401 && err.status !== 403;
      }
      if (again && this.open) {
        const timer = setTimeout(() => { this.timers.delete(timer); tick(); }, ms);
        this.timers.add(timer);
      }
    };
    return tick();
  }

  close() {
    this.open = false;
    for (const timer of this.timers) clearTimeout(timer);
  }
}

let current = null;

async function route() {
  const [name, ...rest] = location.hash.replace(/^#/, "").split("/");
  const page = PAGES[name] ? name : "search";
  if (current) current.close();
  for (const link of document.querySelectorAll("nav a")) {
    link.classList.toggle("current", link.dataset.page === page);
  }
  const main = document.getElementById("main");
  const root = el("section", { class: `page page-${page}` });
  main.replaceChildren(root);
  current = new View(root);
  document.title = `whitevec · ${page}`;
  try {
    await PAGES[page](current, rest.map(decodeURIComponent));
  } catch (err) {
    root.append(errorNotice(err));
  }
}

function watchToken() {
  const input = document.getElementById("token");
  const state = document.getElementById("token-state");
  const apply = () => {
    setToken(input.value);
    state.textContent = hasToken() ? "set: held in this tab's memory only" : "none: search works while the server's searching is open; other pages need a token";
    if (hasToken()) {
      // asked once per token; the admin pages wait for the same answer instead of asking again
      const typed = input.value;
      isAdmin().then((admin) => {
        if (input.value !== typed) return;
        state.textContent = admin ? "the admin token: held in this tab's memory only"
          : "not the admin token (Search, Health): held in this tab's memory only";
      }, () => {});
    }
    route();
  };
  input.addEventListener("change", apply);
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter") input.blur();
  });
}

watchToken();
window.addEventListener("hashchange", route);
route();
