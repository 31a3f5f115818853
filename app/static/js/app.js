// The dashboard's entry point: picks the view from the URL fragment (#/jobs, #/new, #/jobs/<id>,
// #/signin), asks the server whether it needs an API key, and keeps the top bar in step.

import { apiKey, authState, setApiKey, setUnauthorizedHandler } from "./api.js";
import { fill, h } from "./dom.js";
import { renderJob } from "./view-job.js";
import { renderJobs } from "./view-jobs.js";
import { renderNew } from "./view-new.js";
import { renderSignIn } from "./view-signin.js";

const main = document.getElementById("main");
const session = document.getElementById("session");
let auth = "unknown"; // "open" | "ok" | "needs-key"
let current = null; // the view's AbortController: leaving a view stops its streams and timers

function parseRoute() {
  const [path, query = ""] = location.hash.replace(/^#/, "").split("?");
  const parts = path.split("/").filter(Boolean);
  return { parts, params: new URLSearchParams(query) };
}

function renderSession() {
  if (auth === "open") {
    fill(session, h("span", { title: "This server accepts requests without an API key" }, "Open server · no sign-in needed"));
  } else if (auth === "ok") {
    fill(
      session,
      h("span", {}, "Signed in with an API key"),
      h("button", { type: "button", onclick: signOut }, "Sign out"),
    );
  } else {
    fill(session);
  }
}

function signOut() {
  setApiKey(null);
  auth = "needs-key";
  renderSession();
  location.hash = "#/signin";
}

function markNav(name) {
  for (const a of document.querySelectorAll("[data-nav]")) {
    if (a.dataset.nav === name) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
}

async function route() {
  if (current) current.abort();
  current = new AbortController();
  const { signal } = current;
  const { parts, params } = parseRoute();

  if (auth === "needs-key" && parts[0] !== "signin") {
    location.hash = "#/signin";
    return;
  }
  const ctx = {
    main,
    signal,
    params,
    navigate: (hash) => {
      location.hash = hash;
    },
    signedIn: () => {
      auth = apiKey() ? "ok" : "open";
      renderSession();
    },
  };
  main.replaceChildren();
  // Views that follow a job keep running after their first paint; focus once it is there.
  setTimeout(focusMain, 0);
  try {
    if (parts[0] === "signin") {
      markNav(null);
      document.title = "Sign in · nncompress";
      renderSignIn(ctx);
    } else if (parts[0] === "new") {
      markNav("new");
      document.title = "New job · nncompress";
      await renderNew(ctx);
    } else if (parts[0] === "jobs" && parts[1]) {
      markNav("jobs");
      document.title = `Job ${parts[1].slice(0, 8)} · nncompress`;
      await renderJob(ctx, parts[1]);
    } else {
      markNav("jobs");
      document.title = "Jobs · nncompress";
      await renderJobs(ctx);
    }
  } catch (error) {
    if (signal.aborted) return;
    main.append(h("p", { class: "notice error", role: "alert" }, `Could not load this page: ${error.message}`));
  }
}

// A screen reader starts reading the new view, as after a page load; the sign-in view focuses its field.
function focusMain() {
  if (!main.contains(document.activeElement)) main.focus({ preventScroll: true });
}

async function start() {
  setUnauthorizedHandler(() => {
    setApiKey(null);
    auth = "needs-key";
    renderSession();
    if (!location.hash.startsWith("#/signin")) location.hash = "#/signin";
  });
  try {
    auth = await authState();
  } catch (error) {
    fill(main, h("p", { class: "notice error", role: "alert" }, `The API did not answer: ${error.message}`));
    return;
  }
  if (auth === "needs-key") setApiKey(null);
  renderSession();
  window.addEventListener("hashchange", route);
  if (!location.hash || location.hash === "#/") location.hash = auth === "needs-key" ? "#/signin" : "#/jobs";
  else route();
}

start();
