// gitfleet's web dashboard: hand-written, no dependencies. Every text from the hub (App names,
// messages from Git and clusters) goes into the page as text nodes, never as HTML.
"use strict";

const STATES = {
  h: "Synced, Healthy", p: "Progressing", o: "OutOfSync", f: "Failed or Degraded",
  s: "Suspended", u: "Unknown", x: "Disconnected", ".": "no Target",
};

let me = null;
let grid = null;
// The grid's cells by App and cluster, for live updates.
let cellElements = new Map();
let page = null; // what the current view shows: {kind, name, data}
const filters = { label: "", project: "", app: "" };

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") e.className = v;
    else if (k === "onclick") e.addEventListener("click", v);
    else if (k === "oninput") e.addEventListener("input", v);
    // Through the CSSOM: the Content-Security-Policy refuses style attributes.
    else if (k === "style") for (const [p, x] of Object.entries(v)) e.style.setProperty(p, x);
    else e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function csrf() {
  const m = document.cookie.split(";").map((c) => c.trim()).find((c) => c.startsWith("gitfleet_csrf="));
  return m ? m.slice("gitfleet_csrf=".length) : "";
}

async function api(path, options) {
  const r = await fetch(path, Object.assign({ credentials: "same-origin", cache: "no-store" }, options || {}));
  let body = null;
  try { body = await r.json(); } catch (_) { body = null; }
  if (!r.ok) {
    const err = new Error((body && body.error) || r.status + " " + r.statusText);
    err.status = r.status;
    throw err;
  }
  return body;
}

function toast(text, error) {
  const t = document.getElementById("toast");
  t.textContent = text;
  t.className = error ? "error" : "";
  t.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { t.hidden = true; }, 6000);
}

function when(unix) {
  if (!unix) return "-";
  return new Date(unix * 1000).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}

function short(rev) { return rev ? rev.slice(0, 12) : "-"; }

function setMain(...children) {
  const main = document.getElementById("main");
  main.replaceChildren(...children);
}

function crumbs(...parts) {
  document.getElementById("crumbs").replaceChildren(...parts.flatMap((p, i) => (i ? [" / ", p] : [p])));
}

// --- the grid -------------------------------------------------------------------------------

function labelMatches(labels, filter) {
  if (!filter) return true;
  return filter.split(",").map((s) => s.trim()).filter(Boolean).every((term) => {
    const [k, v] = term.split("=");
    if (v === undefined) return Object.prototype.hasOwnProperty.call(labels || {}, k);
    return (labels || {})[k] === v;
  });
}

function cellTitle(app, cluster, code, rev) {
  return app + " on " + cluster + ": " + STATES[code] + (rev ? " @ " + rev : "");
}

function renderGrid() {
  crumbs(el("span", {}, "fleet"));
  if (!grid) return;
  // A live refresh redraws the rows only, so that a filter being typed keeps its focus.
  if (document.getElementById("grid")) return drawRows();
  const projects = [...new Set(grid.apps.map((a) => a.project))].sort();
  const controls = el("div", { class: "filters" },
    el("input", { id: "filter-label", placeholder: "cluster labels: env=prod,ring", value: filters.label,
      oninput: (e) => { filters.label = e.target.value; drawRows(); } }),
    el("select", { id: "filter-project", oninput: (e) => { filters.project = e.target.value; drawRows(); } },
      el("option", { value: "" }, "all Projects"),
      projects.map((p) => el("option", { value: p, selected: p === filters.project }, p))),
    el("input", { id: "filter-app", placeholder: "App name", value: filters.app,
      oninput: (e) => { filters.app = e.target.value; drawRows(); } }));
  const legend = el("div", { class: "legend" },
    Object.entries(STATES).map(([c, t]) => el("span", { style: { "--c": "var(--" + (c === "." ? "n" : c) + ")" } }, t)));
  const count = el("p", { id: "grid-count", class: "muted" });
  const table = el("table", { class: "grid", id: "grid" });
  setMain(el("h1", {}, "Fleet"), controls, legend, count, table);
  drawRows();
}

function drawRows() {
  const table = document.getElementById("grid");
  if (!table || !grid) return;
  const clusters = [];
  grid.clusters.forEach((c, i) => { if (labelMatches(c.labels, filters.label)) clusters.push(i); });
  const names = clusters.length <= 24;
  const rows = [];
  cellElements = new Map();
  let apps = 0;
  grid.apps.forEach((a, ai) => {
    if (filters.project && a.project !== filters.project) return;
    if (filters.app && !a.name.toLowerCase().includes(filters.app.toLowerCase())) return;
    apps += 1;
    const cells = grid.cells[ai];
    const revs = grid.revs[ai];
    // Past 200 clusters the squares shrink, so that 1,000 clusters × 20 Apps fit a screen or two.
    const strip = el("div", { class: "strip" + (names ? " names" : "") + (clusters.length > 200 ? " dense" : "") });
    for (const ci of clusters) {
      const c = grid.clusters[ci];
      const code = cells[ci];
      const rev = revs[ci] >= 0 ? grid.revisions[revs[ci]] : "";
      const cell = el("a", {
        class: "cell c-" + code, href: "#/cluster/" + encodeURIComponent(c.name),
        title: cellTitle(a.name, c.name, code, rev), "data-app": a.name, "data-cluster": c.name, "data-cell": code,
      }, names ? c.name : null);
      cellElements.set(a.name + "\u0000" + c.name, cell);
      strip.append(cell);
    }
    rows.push(el("tr", {},
      el("th", {}, el("a", { href: "#/app/" + encodeURIComponent(a.name), class: "app-link" }, a.name),
        el("div", { class: "muted" }, a.project)),
      el("td", {}, strip)));
  });
  table.replaceChildren(...rows);
  document.getElementById("grid-count").textContent =
    apps + " Apps × " + clusters.length + " clusters" + (names ? "" : " (hover a cell for its cluster and revision)");
}

function updateCell(msg) {
  if (!grid) return;
  const ai = grid.apps.findIndex((a) => a.name === msg.app);
  const ci = grid.clusters.findIndex((c) => c.name === msg.cluster);
  if (ai < 0 || ci < 0) { refreshSoon(); return; }
  const row = grid.cells[ai];
  grid.cells[ai] = row.slice(0, ci) + msg.cell + row.slice(ci + 1);
  let ri = grid.revisions.indexOf(msg.revision);
  if (msg.revision && ri < 0) { grid.revisions.push(msg.revision); ri = grid.revisions.length - 1; }
  grid.revs[ai][ci] = msg.revision ? ri : -1;
  const e = page && page.kind === "grid" && cellElements.get(msg.app + "\u0000" + msg.cluster);
  if (e) {
    e.className = "cell c-" + msg.cell;
    e.dataset.cell = msg.cell;
    e.title = cellTitle(msg.app, msg.cluster, msg.cell, msg.revision);
  }
}

// --- an App ---------------------------------------------------------------------------------

function confirmThen(text, action) {
  const modal = document.getElementById("confirm");
  document.getElementById("confirm-text").textContent = text;
  modal.hidden = false;
  const ok = document.getElementById("confirm-ok");
  const cancel = document.getElementById("confirm-cancel");
  const close = () => { modal.hidden = true; ok.onclick = null; cancel.onclick = null; };
  ok.onclick = () => { close(); action(); };
  cancel.onclick = close;
}

const ACTION_TEXT = {
  pause: "Pause the rollout of App %s? No further Target is given the new revision until it is resumed.",
  resume: "Resume the rollout of App %s?",
  promote: "Promote the rollout of App %s past its current wave?",
  rollback: "Roll App %s back to its last stable revision on every Target?",
  sync: "Sync App %s on every cluster now?",
};

async function act(app, action) {
  try {
    const r = await api("/ui/api/apps/" + encodeURIComponent(app) + "/" + action, {
      method: "POST", headers: { "x-gitfleet-csrf": csrf() },
    });
    toast(action + ": " + r.message);
    refreshSoon(0);
  } catch (e) {
    toast(action + " failed: " + e.message, true);
  }
}

function renderApp(d) {
  crumbs(el("a", { href: "#/" }, "fleet"), el("span", {}, "App " + d.name));
  const r = d.rollout;
  const head = [el("h1", {}, "App ", el("span", { id: "app-name" }, d.name)),
    el("p", { class: "muted" }, "Project " + d.project)];
  if (r) {
    head.push(el("p", {},
      el("span", { id: "rollout-summary", class: "summary " + r.summary }, r.summary),
      " rollout " + r.number + " to " + short(r.revision) + (r.suspended ? " (App suspended)" : ""),
      r.reason ? el("span", { class: "muted" }, " — " + r.reason) : null));
  } else {
    head.push(el("p", { class: "muted" }, "No rollout yet: the App's Repo has not been fetched."));
  }
  // Pause while it progresses, resume while it is paused; the others whenever allowed.
  const shown = d.actions.filter((a) => !r ||
    (a !== "pause" || r.summary !== "paused") && (a !== "resume" || r.summary === "paused"));
  if (shown.length) {
    head.push(el("div", { class: "actions", id: "actions" }, shown.map((a) =>
      el("button", { type: "button", "data-action": a, class: a === "rollback" ? "danger" : "",
        onclick: () => confirmThen(ACTION_TEXT[a].replace("%s", JSON.stringify(d.name)), () => act(d.name, a)) },
      a[0].toUpperCase() + a.slice(1)))));
  }
  const waves = r ? r.waves.map((w, i) => {
    const total = Math.max(w.total, 1);
    return el("div", { class: "wave", "data-wave": i },
      el("strong", {}, "Wave " + (i + 1) + (w.name ? " " + w.name : "") + " "),
      el("span", { class: "bar", title: w.updated + " updated, " + w.healthy + " healthy of " + w.total },
        el("span", { class: "u", style: { width: (100 * w.updated / total) + "%" } }),
        el("span", { class: "g", style: { width: (100 * w.healthy / total) + "%" } })),
      " " + w.progress + ": " + w.updated + "/" + w.total + " updated, " + w.healthy + " healthy" +
        (w.failed ? ", " + w.failed + " failed" : ""));
  }) : [];
  const rows = d.targets.map((t) => el("tr", { "data-cluster": t.cluster },
    el("td", {}, el("a", { href: "#/cluster/" + encodeURIComponent(t.cluster) }, t.cluster),
      t.connected ? null : el("span", { class: "muted" }, " (disconnected)")),
    el("td", { title: t.revision || "" }, short(t.revision)),
    el("td", { class: "state-" + (t.sync || "") }, t.sync || "-"),
    el("td", { class: "state-" + (t.health || "") }, t.health || "-"),
    el("td", {}, t.message || "", t.held ? el("div", { class: "muted" }, t.held) : null,
      t.resources.length ? el("details", {}, el("summary", {}, t.resources.length + " resources"),
        el("table", { class: "targets" }, t.resources.map((o) => el("tr", {},
          el("td", {}, o.kind + " " + (o.namespace ? o.namespace + "/" : "") + o.name),
          el("td", { class: "state-" + o.health }, o.health),
          el("td", {}, o.message))))) : null)));
  const events = d.events.map(eventItem);
  setMain(...head,
    el("h2", {}, "Waves"), el("div", { id: "waves" }, waves.length ? waves : el("p", { class: "muted" }, "-")),
    el("h2", {}, "Targets"),
    el("table", { class: "targets", id: "targets" },
      el("tr", {}, ["Cluster", "Revision", "Sync", "Health", "Reason"].map((h) => el("th", {}, h))), rows),
    el("h2", {}, "Events"), el("ul", { class: "events", id: "events" }, events));
}

function eventItem(e) {
  return el("li", { "data-id": e.id }, el("time", {}, when(e.at)), el("span", { class: "kind" }, e.kind),
    e.cluster ? e.cluster + ": " : "", e.message, e.by ? el("span", { class: "muted" }, " (by " + e.by + ")") : null);
}

// --- a cluster ------------------------------------------------------------------------------

function renderCluster(d) {
  crumbs(el("a", { href: "#/" }, "fleet"), el("span", {}, "cluster " + d.name));
  setMain(el("h1", {}, "Cluster ", el("span", { id: "cluster-name" }, d.name)),
    el("p", {}, d.connected ? "connected" : "disconnected", el("span", { class: "muted" },
      " — agent " + (d.agentVersion || "?") + ", last contact " + when(d.lastContact))),
    el("p", { class: "labels" }, Object.entries(d.labels || {}).map(([k, v]) => el("span", {}, k + "=" + v))),
    el("table", { class: "targets", id: "targets" },
      el("tr", {}, ["App", "Revision", "Sync", "Health", "Reason"].map((h) => el("th", {}, h))),
      d.targets.map((t) => el("tr", {},
        el("td", {}, el("a", { href: "#/app/" + encodeURIComponent(t.app) }, t.app)),
        el("td", { title: t.revision || "" }, short(t.revision)),
        el("td", { class: "state-" + (t.sync || "") }, t.sync || "-"),
        el("td", { class: "state-" + (t.health || "") }, t.health || "-"),
        el("td", {}, t.message || "")))));
}

// --- routing and live updates ---------------------------------------------------------------

function route() {
  const h = decodeURIComponent(location.hash.replace(/^#\/?/, ""));
  if (h.startsWith("app/")) return { kind: "app", name: h.slice(4) };
  if (h.startsWith("cluster/")) return { kind: "cluster", name: h.slice(8) };
  return { kind: "grid" };
}

async function load() {
  const want = route();
  try {
    if (want.kind === "grid") {
      grid = await api("/ui/api/grid");
      page = want;
      renderGrid();
    } else if (want.kind === "app") {
      const d = await api("/ui/api/apps/" + encodeURIComponent(want.name));
      page = Object.assign(want, { data: d });
      renderApp(d);
    } else {
      const d = await api("/ui/api/clusters/" + encodeURIComponent(want.name));
      page = Object.assign(want, { data: d });
      renderCluster(d);
    }
  } catch (e) {
    if (e.status === 401) return signedOut();
    setMain(el("p", { class: "error" }, e.message));
  }
}

// At most one read pending: a burst of changes (a rollout over 1,000 clusters) reads once, and
// a steady stream of them still reads every `delay`.
let refreshTimer = null;
function refreshSoon(delay) {
  const d = delay === undefined ? 250 : delay;
  if (refreshTimer !== null && d > 0) return;
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(() => { refreshTimer = null; load(); }, d);
}

function signedOut() {
  document.getElementById("who").textContent = "";
  document.getElementById("signout").hidden = true;
  crumbs();
  setMain(el("h1", {}, "Sign in"),
    el("p", {}, "Run ", el("code", {}, "gitfleet dashboard"),
      " with your gitfleet credentials: it prints (and opens) a sign-in link that works once."));
}

function connect() {
  const live = document.getElementById("live");
  const es = new EventSource("/ui/api/stream");
  es.onopen = () => { live.className = "live"; live.id = "live"; live.dataset.state = "on"; };
  es.onerror = () => { live.className = "live off"; live.dataset.state = "off"; };
  es.addEventListener("cell", (m) => {
    const msg = JSON.parse(m.data);
    updateCell(msg);
    if (page && page.kind !== "grid" && (page.name === msg.app || page.name === msg.cluster)) refreshSoon();
  });
  es.addEventListener("app", (m) => {
    if (!page || page.kind === "grid" || page.name === m.data) refreshSoon(page && page.kind === "grid" ? 1000 : 250);
  });
  es.addEventListener("cluster", (m) => {
    if (!page || page.kind === "grid" || page.kind === "app" || page.name === m.data) refreshSoon(1000);
  });
  es.addEventListener("event", (m) => {
    const e = JSON.parse(m.data);
    const list = document.getElementById("events");
    if (page && page.kind === "app" && page.name === e.app && list && !list.querySelector('[data-id="' + e.id + '"]')) {
      list.prepend(eventItem(e));
    }
  });
  es.addEventListener("reset", () => refreshSoon(0));
}

async function start() {
  try {
    me = await api("/ui/api/me");
  } catch (e) {
    if (e.status === 401) return signedOut();
    return setMain(el("p", {}, e.message));
  }
  document.getElementById("who").textContent = me.name + " (" + me.role + ")";
  const so = document.getElementById("signout");
  so.hidden = false;
  so.addEventListener("click", async () => {
    await fetch("/ui/signout", { method: "POST", headers: { "x-gitfleet-csrf": csrf() } });
    signedOut();
  });
  window.addEventListener("hashchange", load);
  await load();
  connect();
}

start();
