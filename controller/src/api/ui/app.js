// kedge's dashboard: reads the agent's JSON API with the caller's credentials and renders it.
// Every value from the API reaches the page through textContent (the `el` helper), never as HTML,
// so a container name or label cannot inject markup or script. No framework, no build step.
"use strict";

const TOKEN_KEY = "kedge-token";
const state = { identity: null, serverVersion: "", refreshTimer: null, events: [], watches: [] };

// ---- DOM helpers: text only ----

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null) continue;
    node.appendChild(typeof child === "object" ? child : document.createTextNode(String(child)));
  }
  return node;
}

function table(headers, rows) {
  return el("table", {}, el("thead", {}, el("tr", {}, headers.map((h) => el("th", {}, h)))), el("tbody", {}, rows));
}

function showError(message) {
  const node = document.getElementById("error");
  node.textContent = message || "";
  node.hidden = !message;
}

// ---- The API ----

function headers(extra) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  const all = Object.assign({ Accept: "application/json" }, extra || {});
  if (token) all.Authorization = "Bearer " + token;
  return all;
}

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function api(path, options) {
  const opts = Object.assign({}, options || {});
  opts.headers = headers(opts.body ? { "Content-Type": "application/json" } : {});
  const response = await fetch(path, opts);
  const text = await response.text();
  let body = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch (_) {
    body = null;
  }
  if (!response.ok) {
    const message = (body && body.error) || response.status + " " + response.statusText;
    throw new ApiError(response.status, message);
  }
  return body;
}

async function items(path) {
  const list = await api(path);
  return (list && list.items) || [];
}

// Reads a newline-delimited JSON stream, calling onLine for each object, until it ends or fails.
async function stream(path, onLine, signal) {
  const response = await fetch(path, { headers: headers(), signal });
  if (!response.ok) throw new ApiError(response.status, "watch " + path + ": " + response.status);
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, end).trim();
      buffer = buffer.slice(end + 1);
      if (!line) continue;
      try {
        onLine(JSON.parse(line));
      } catch (_) {
        // A line that is not JSON is skipped.
      }
    }
  }
}

// Follows a watch route, reconnecting with a growing pause when it ends or fails.
function follow(path, onLine) {
  const controller = new AbortController();
  state.watches.push(controller);
  let pause = 500;
  const live = document.getElementById("live");
  (async () => {
    while (!controller.signal.aborted) {
      try {
        live.textContent = "live";
        live.className = "live on";
        await stream(path, (line) => {
          pause = 500;
          onLine(line);
        }, controller.signal);
      } catch (error) {
        if (controller.signal.aborted) return;
        if (error instanceof ApiError && error.status === 401) return needToken();
      }
      live.textContent = "reconnecting";
      live.className = "live off";
      await new Promise((resolve) => setTimeout(resolve, pause));
      pause = Math.min(pause * 2, 10000);
      // Whatever happened while disconnected is read again.
      scheduleRender();
    }
  })();
}

// ---- Formatting ----

function condition(object, type) {
  const conditions = (object.status && object.status.conditions) || [];
  return conditions.find((c) => c.type === type);
}

function conditionCell(object, type) {
  const c = condition(object, type);
  if (!c) return el("td", { class: "cond unknown", "data-cond": type }, "-");
  const good = type === "Degraded" ? c.status === "False" : c.status === "True";
  return el("td", { class: "cond " + (good ? "good" : "bad"), "data-cond": type, title: c.message || "" },
    c.status + (c.reason ? " (" + c.reason + ")" : ""));
}

function age(timestamp) {
  if (!timestamp) return "-";
  const seconds = Math.max(0, Math.floor((Date.now() - Date.parse(timestamp)) / 1000));
  if (!isFinite(seconds)) return "-";
  if (seconds < 120) return seconds + "s";
  if (seconds < 7200) return Math.floor(seconds / 60) + "m";
  if (seconds < 172800) return Math.floor(seconds / 3600) + "h";
  return Math.floor(seconds / 86400) + "d";
}

// Compares dotted versions numerically where both parts are numbers ("0.10.0" > "0.9.1").
function compareVersions(a, b) {
  const left = String(a).split(/[.+-]/);
  const right = String(b).split(/[.+-]/);
  for (let i = 0; i < Math.max(left.length, right.length); i++) {
    const x = left[i] || "0";
    const y = right[i] || "0";
    const nx = Number(x);
    const ny = Number(y);
    const order = isNaN(nx) || isNaN(ny) ? x.localeCompare(y) : nx - ny;
    if (order !== 0) return order;
  }
  return 0;
}

function objectLink(object) {
  const m = object.metadata;
  return el("a", { href: "#/container/" + encodeURIComponent(m.namespace) + "/" + encodeURIComponent(m.name) }, m.name);
}

function labelList(labels) {
  return Object.entries(labels || {}).map(([k, v]) => el("span", { class: "label" }, k + "=" + v));
}

// ---- Views ----

async function viewHosts(root) {
  const [hosts, campaigns] = await Promise.all([items("/api/v1/hosts"), items("/api/v1/upgrades")]);
  // kedge has no release feed: the newest version known is the newest any agent (or this server) runs.
  const newest = hosts.map((h) => h.version).concat([state.serverVersion]).filter(Boolean)
    .reduce((a, b) => (compareVersions(a, b) >= 0 ? a : b), "");
  root.appendChild(el("h2", {}, "Hosts"));
  root.appendChild(table(["NAME", "READY", "AGENT", "DOCKER", "NEWER KEDGE", "LABELS", "LAST UPGRADE"],
    hosts.map((h) => {
      const behind = newest && h.version && compareVersions(h.version, newest) < 0;
      const upgrade = h.upgrade ? h.upgrade.state + (h.upgrade.version ? " to " + h.upgrade.version : "") : "-";
      return el("tr", { "data-host": h.name },
        el("td", {}, h.name),
        el("td", { class: "ready " + (h.ready ? "good" : "bad") }, h.ready ? "Ready" : "NotReady"),
        el("td", { class: "version" }, h.version || "-"),
        el("td", { class: "docker" }, h.dockerVersion || "-"),
        el("td", { class: "newer" }, behind ? newest + " available" : "up to date"),
        el("td", {}, labelList(h.labels)),
        el("td", {}, upgrade));
    })));
  root.appendChild(el("p", { class: "hint" },
    "\"Newer kedge\" compares each agent with the newest version any agent of this store (or this server) runs; "
    + "kedge does not ask a registry for releases."));
  if (state.identity && state.identity.role === "admin") root.appendChild(upgradeForm(newest));
  const latest = campaigns[campaigns.length - 1];
  if (latest) root.appendChild(campaignView(latest));
}

// The form is made once and the same element is put back each time the view is read again (every
// few seconds on the hosts page), so that what is being typed, and the focus, stay.
function upgradeForm(newest) {
  if (!state.upgradeForm) state.upgradeForm = makeUpgradeForm(newest);
  return state.upgradeForm;
}

function makeUpgradeForm(newest) {
  const input = el("input", { id: "upgrade-version", placeholder: "version (image tag)", value: newest || "" });
  const selector = el("input", { id: "upgrade-selector", placeholder: "host label selector (optional)" });
  const result = el("span", { id: "upgrade-result" });
  const button = el("button", { id: "upgrade-agents", type: "submit" }, "Upgrade agents");
  return el("form", {
    id: "upgrade-form",
    class: "panel",
    onsubmit: async (event) => {
      event.preventDefault();
      const version = input.value.trim();
      if (!version) {
        result.textContent = "name the version to upgrade to";
        return;
      }
      if (!window.confirm("Upgrade the agents to " + version + ", one host at a time?")) return;
      button.disabled = true;
      try {
        const body = { version };
        if (selector.value.trim()) body.selector = selector.value.trim();
        const campaign = await api("/api/v1/upgrades", { method: "POST", body: JSON.stringify(body) });
        result.textContent = "campaign " + campaign.id + " created";
        scheduleRender();
      } catch (error) {
        result.textContent = error.message;
      } finally {
        button.disabled = false;
      }
    },
  }, el("h3", {}, "Upgrade agents"), input, " ", selector, " ", button, " ", result);
}

function campaignView(campaign) {
  const done = campaign.hosts.filter((h) => ["Succeeded", "RolledBack", "Failed", "Skipped"].includes(h.state)).length;
  const section = el("section", { id: "campaign", class: "panel", "data-campaign": campaign.id, "data-state": campaign.state },
    el("h3", {}, "Campaign " + campaign.id + ": " + campaign.state + " (" + done + "/" + campaign.hosts.length + " hosts done)"),
    el("progress", { max: campaign.hosts.length || 1, value: done }),
    campaign.message ? el("p", {}, campaign.message) : null,
    table(["HOST", "STATE", "IMAGE", "MESSAGE"], campaign.hosts.map((h) =>
      el("tr", { "data-campaign-host": h.name }, el("td", {}, h.name), el("td", { class: "state" }, h.state),
        el("td", {}, h.image || "-"), el("td", {}, h.message || "")))));
  if (campaign.state === "Running" && state.identity && state.identity.role === "admin") {
    section.appendChild(el("button", {
      id: "cancel-campaign",
      onclick: async () => {
        try {
          await api("/api/v1/upgrades/" + encodeURIComponent(campaign.id) + "/cancel", { method: "POST" });
          scheduleRender();
        } catch (error) {
          showError(error.message);
        }
      },
    }, "Cancel campaign"));
  }
  return section;
}

async function viewUpgrades(root) {
  const campaigns = await items("/api/v1/upgrades");
  root.appendChild(el("h2", {}, "Upgrade campaigns"));
  if (state.identity && state.identity.role === "admin") {
    const hosts = await items("/api/v1/hosts");
    const newest = hosts.map((h) => h.version).concat([state.serverVersion]).filter(Boolean)
      .reduce((a, b) => (compareVersions(a, b) >= 0 ? a : b), "");
    root.appendChild(upgradeForm(newest));
  }
  if (!campaigns.length) root.appendChild(el("p", {}, "No campaign yet."));
  for (const campaign of campaigns.slice().reverse()) root.appendChild(campaignView(campaign));
}

async function viewContainers(root) {
  const containers = await items("/api/v1/containers");
  const filter = el("input", { id: "filter", placeholder: "filter by name, host, image or label", value: state.filter || "" });
  root.appendChild(el("h2", {}, "Containers"));
  root.appendChild(filter);
  const byHost = new Map();
  for (const c of containers) {
    const host = (c.status && c.status.host) || (c.spec.placement && c.spec.placement.host) || "(unplaced)";
    if (!byHost.has(host)) byHost.set(host, []);
    byHost.get(host).push(c);
  }
  const groups = el("div", { id: "container-groups" });
  for (const [host, list] of [...byHost.entries()].sort()) {
    groups.appendChild(el("section", { class: "host-group", "data-group": host }, el("h3", {}, host),
      table(["NAMESPACE", "NAME", "READY", "SYNCED", "DEGRADED", "IMAGE", "RESTARTS", "AGE", "LABELS"],
        list.map((c) => el("tr", {
          "data-container": c.metadata.namespace + "/" + c.metadata.name,
          "data-search": [c.metadata.namespace, c.metadata.name, host, c.spec.image,
            ...Object.entries(c.metadata.labels || {}).map(([k, v]) => k + "=" + v)].join(" ").toLowerCase(),
        },
        el("td", {}, c.metadata.namespace),
        el("td", { class: "name" }, objectLink(c)),
        conditionCell(c, "Ready"),
        conditionCell(c, "Synced"),
        conditionCell(c, "Degraded"),
        el("td", { class: "image" }, c.spec.image),
        el("td", { class: "restarts" }, String((c.status && c.status.restartCount) || 0)),
        el("td", {}, age(c.metadata.creationTimestamp || (c.status && c.status.lastStartedAt))),
        el("td", { class: "labels" }, labelList(c.metadata.labels)))))));
  }
  root.appendChild(groups);
  const apply = () => {
    state.filter = filter.value;
    const words = filter.value.toLowerCase().split(/\s+/).filter(Boolean);
    for (const row of groups.querySelectorAll("tr[data-search]")) {
      row.hidden = !words.every((w) => row.getAttribute("data-search").includes(w));
    }
  };
  filter.addEventListener("input", apply);
  apply();
  if (!containers.length) root.appendChild(el("p", {}, "No containers."));
}

async function viewSets(root) {
  const sets = await items("/api/v1/containersets");
  root.appendChild(el("h2", {}, "ContainerSets"));
  root.appendChild(table(["NAMESPACE", "NAME", "READY", "UPDATED", "ROLLOUT", "IMAGE", "REVISION"], sets.map((s) => {
    const status = s.status || {};
    const wanted = s.spec.replicas || 0;
    const r = status.rollout;
    const progressing = condition(s, "Progressing");
    let rollout = progressing ? progressing.reason + (progressing.message ? ": " + progressing.message : "") : "-";
    if (r) {
      rollout = "rolling out " + r.revision + ": " + (r.updated || []).length + "/" + wanted + " written, batch ["
        + (r.batch || []).join(", ") + "]" + (r.paused ? ", paused: " + r.paused : "");
    } else if (status.failedRevision) {
      rollout = "revision " + status.failedRevision + " failed" + (status.failureMessage ? ": " + status.failureMessage : "");
    }
    return el("tr", { "data-set": s.metadata.namespace + "/" + s.metadata.name },
      el("td", {}, s.metadata.namespace), el("td", {}, s.metadata.name),
      el("td", {}, (status.readyReplicas || 0) + "/" + wanted),
      el("td", {}, el("progress", { max: wanted || 1, value: status.updatedReplicas || 0 }), " " + (status.updatedReplicas || 0) + "/" + wanted),
      el("td", { class: "rollout" }, rollout),
      el("td", {}, (s.spec.template && s.spec.template.spec && s.spec.template.spec.image) || "-"),
      el("td", {}, status.updateRevision || status.currentRevision || "-"));
  })));
}

async function viewGitSources(root) {
  const sources = await items("/api/v1/gitsources");
  root.appendChild(el("h2", {}, "GitSources"));
  root.appendChild(table(["NAMESPACE", "NAME", "URL", "READY", "APPLIED COMMIT", "LAST SYNC", "APPLIED", "ERRORS"], sources.map((g) => {
    const status = g.status || {};
    const commit = status.lastAppliedCommit ? (status.lastAppliedCommit.sha || JSON.stringify(status.lastAppliedCommit)) : "-";
    return el("tr", { "data-gitsource": g.metadata.namespace + "/" + g.metadata.name },
      el("td", {}, g.metadata.namespace), el("td", {}, g.metadata.name), el("td", {}, g.spec.url),
      conditionCell(g, "Ready"), el("td", {}, String(commit).slice(0, 12)), el("td", {}, age(status.lastSyncTime) + " ago"),
      el("td", {}, String(status.applied || 0)), el("td", {}, (status.errors || []).join("; ")));
  })));
}

function eventRow(e) {
  return el("li", { class: "event " + String(e.type).toLowerCase() },
    el("span", { class: "when" }, e.lastTimestamp || ""), " ",
    el("span", { class: "type" }, e.type), " ",
    el("span", { class: "object" }, e.involvedObject), " ",
    el("span", { class: "reason" }, e.reason), ": ",
    el("span", { class: "message" }, e.message),
    e.count > 1 ? el("span", { class: "count" }, " (x" + e.count + ")") : null);
}

async function viewEvents(root) {
  state.events = await items("/api/v1/events");
  state.events.sort((a, b) => String(a.lastTimestamp).localeCompare(String(b.lastTimestamp)));
  root.appendChild(el("h2", {}, "Events (live)"));
  root.appendChild(el("ul", { id: "events" }, state.events.slice(-200).reverse().map(eventRow)));
}

async function viewContainer(root, namespace, name) {
  const base = "/api/v1/namespaces/" + encodeURIComponent(namespace) + "/containers/" + encodeURIComponent(name);
  const c = await api(base);
  const status = c.status || {};
  root.appendChild(el("h2", {}, "Container " + namespace + "/" + name));
  const facts = [
    ["Image", c.spec.image], ["Host", status.host], ["Container ID", (status.containerId || "").slice(0, 12)],
    ["Image ID", status.imageId], ["Generation", c.metadata.generation + " (observed " + status.observedGeneration + ")"],
    ["Restarts", status.restartCount || 0], ["Last started", status.lastStartedAt], ["Last error", status.lastError],
  ];
  root.appendChild(el("dl", { id: "facts" }, facts.filter(([, v]) => v !== undefined && v !== null && v !== "")
    .map(([k, v]) => [el("dt", {}, k), el("dd", { "data-fact": k }, String(v))])));
  root.appendChild(el("h3", {}, "Labels"));
  root.appendChild(el("p", {}, labelList(c.metadata.labels)));
  root.appendChild(el("h3", {}, "Conditions"));
  root.appendChild(table(["TYPE", "STATUS", "REASON", "MESSAGE", "SINCE"], (status.conditions || []).map((k) =>
    el("tr", {}, el("td", {}, k.type), el("td", {}, k.status), el("td", {}, k.reason), el("td", {}, k.message),
      el("td", {}, age(k.lastTransitionTime) + " ago")))));
  root.appendChild(el("h3", {}, "Drift at the last repair"));
  const drift = status.drift || [];
  root.appendChild(drift.length ? table(["FIELD", "DECLARED", "SEEN"], drift.map((d) =>
    el("tr", {}, el("td", {}, d.field), el("td", {}, d.desired === undefined ? "-" : d.desired),
      el("td", {}, d.actual === undefined ? "-" : d.actual)))) : el("p", {}, "None recorded."));
  if (status.lastUpdate) {
    root.appendChild(el("h3", {}, "Last update"));
    root.appendChild(el("pre", {}, JSON.stringify(status.lastUpdate, null, 2)));
  }
  root.appendChild(el("h3", {}, "Events"));
  const events = await items("/api/v1/events?namespace=" + encodeURIComponent(namespace) + "&object=" + encodeURIComponent(name));
  root.appendChild(el("ul", {}, events.map(eventRow)));
  root.appendChild(el("h3", {}, "Logs (last 100 lines)"));
  const logs = el("pre", { id: "logs" });
  root.appendChild(logs);
  try {
    const response = await fetch(base + "/logs?tail=100", { headers: headers() });
    const text = await response.text();
    if (!response.ok) {
      let message = response.status + "";
      try {
        message = JSON.parse(text).error || message;
      } catch (_) { /* not JSON */ }
      logs.textContent = "(logs unavailable: " + message + ")";
    } else {
      logs.textContent = text.split("\n").filter(Boolean).map((line) => {
        try {
          const entry = JSON.parse(line);
          return entry.text !== undefined ? String(entry.text).replace(/\n$/, "") : line;
        } catch (_) {
          return line;
        }
      }).join("\n");
    }
  } catch (error) {
    logs.textContent = "(logs unavailable: " + error.message + ")";
  }
}

// ---- Routing and refresh ----

const VIEWS = {
  hosts: viewHosts, containers: viewContainers, sets: viewSets, gitsources: viewGitSources,
  events: viewEvents, upgrades: viewUpgrades, container: viewContainer,
};

let rendering = false;
let renderAgain = false;

async function render() {
  if (rendering) {
    renderAgain = true;
    return;
  }
  rendering = true;
  try {
    const parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
    const view = VIEWS[parts[0]] || viewHosts;
    const root = el("div", { "data-view": parts[0] || "hosts" });
    await view(root, ...parts.slice(1));
    const main = document.getElementById("view");
    const focused = document.activeElement && document.activeElement.id;
    const caret = focused && document.activeElement.tagName === "INPUT" ? document.activeElement.selectionStart : null;
    main.replaceChildren(root);
    if (focused) {
      const again = document.getElementById(focused);
      if (again) {
        again.focus();
        if (caret !== null && caret !== undefined && again.setSelectionRange) {
          try {
            again.setSelectionRange(caret, caret);
          } catch (_) { /* an input type without a caret */ }
        }
      }
    }
    document.body.setAttribute("data-rendered", String(Date.now()));
    showError("");
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) needToken();
    else showError(error.message);
  } finally {
    rendering = false;
    if (renderAgain) {
      renderAgain = false;
      scheduleRender();
    }
  }
}

// Re-renders soon, once for a burst of changes (the focused field and its caret are put back).
function scheduleRender() {
  clearTimeout(state.refreshTimer);
  state.refreshTimer = setTimeout(render, 300);
}

function onEvent(line) {
  if (!line || !line.object) return;
  if (location.hash.startsWith("#/events")) {
    const list = document.getElementById("events");
    if (list) {
      list.insertBefore(eventRow(line.object), list.firstChild);
      // A page left open for days keeps the newest few hundred.
      while (list.children.length > 500) list.removeChild(list.lastChild);
    }
    return;
  }
  scheduleRender();
}

function needToken() {
  for (const watch of state.watches) watch.abort();
  state.watches = [];
  document.getElementById("token-form").hidden = false;
  document.getElementById("view").replaceChildren();
  const live = document.getElementById("live");
  live.textContent = "signed out";
  live.className = "live off";
}

async function start() {
  document.getElementById("token-form").hidden = true;
  try {
    state.identity = await api("/api/v1/whoami");
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) return needToken();
    showError(error.message);
    return;
  }
  const who = state.identity;
  document.getElementById("whoami").textContent = "role: " + who.role + (who.token ? " (token " + who.token + ")" : "");
  document.body.setAttribute("data-role", who.role);
  document.getElementById("sign-out").hidden = !sessionStorage.getItem(TOKEN_KEY);
  try {
    const version = await api("/version");
    state.serverVersion = version.version || "";
    document.getElementById("server-version").textContent = "kedge " + state.serverVersion + " on " + version.host;
  } catch (_) { /* shown without */ }
  follow("/api/v1/watch/containers", scheduleRender);
  follow("/api/v1/watch/events", onEvent);
  // Campaigns and hosts have no watch route: a campaign's progress is read again every few seconds.
  setInterval(() => {
    if (!location.hash || location.hash.startsWith("#/hosts") || location.hash.startsWith("#/upgrades")) scheduleRender();
  }, 3000);
  render();
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("token-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const input = document.getElementById("token-input");
    sessionStorage.setItem(TOKEN_KEY, input.value.trim());
    input.value = "";
    try {
      await api("/api/v1/whoami");
    } catch (error) {
      sessionStorage.removeItem(TOKEN_KEY);
      document.getElementById("token-error").textContent = error.message;
      return;
    }
    document.getElementById("token-error").textContent = "";
    start();
  });
  document.getElementById("sign-out").addEventListener("click", (event) => {
    event.preventDefault();
    sessionStorage.removeItem(TOKEN_KEY);
    location.reload();
  });
  window.addEventListener("hashchange", render);
  start();
});
