// The dataserv dashboard. Reads only the public API; no build step.
"use strict";

const REFRESH_SECONDS = 30;
const SKEW_WARNING_SECONDS = 10;
const ONLINE_WINDOW_GUESS = 15 * 60;  // the default --online-time, for advice only

const state = {
  days: 7,
  updatedAt: null,   // browser time of the last good refresh
  skew: null,        // server clock minus browser clock, seconds
  chart: null,
};

function $(id) { return document.getElementById(id); }

// A GET of the public API; notes the server's Date header to estimate clock skew.
async function getJSON(path) {
  const sent = Date.now();
  const answer = await fetch(path, {headers: {"Accept": "application/json"}});
  const received = Date.now();
  const date = answer.headers.get("Date");
  if (date) {
    // The Date header has whole seconds: compare with the middle of the request.
    const server = Date.parse(date);
    if (!Number.isNaN(server)) state.skew = (server - (sent + received) / 2) / 1000;
  }
  if (!answer.ok) {
    const text = (await answer.text()).trim();
    const error = new Error(text || answer.status + " " + answer.statusText);
    error.status = answer.status;
    throw error;
  }
  return answer.json();
}

function plural(n, unit) { return n + " " + unit + (n === 1 ? "" : "s"); }

// 75 -> "1 minute 15 seconds"; coarse for long spans.
function duration(seconds) {
  seconds = Math.max(0, Math.round(seconds));
  if (seconds < 60) return plural(seconds, "second");
  if (seconds < 3600) {
    const m = Math.floor(seconds / 60), s = seconds % 60;
    return plural(m, "minute") + (s ? " " + plural(s, "second") : "");
  }
  if (seconds < 86400) {
    const h = Math.floor(seconds / 3600), m = Math.floor(seconds % 3600 / 60);
    return plural(h, "hour") + (m ? " " + plural(m, "minute") : "");
  }
  const d = Math.floor(seconds / 86400), h = Math.floor(seconds % 86400 / 3600);
  return plural(d, "day") + (h ? " " + plural(h, "hour") : "");
}

function terabytes(tb) {
  if (tb === undefined || tb === null) return "–";
  return tb.toLocaleString(undefined, {maximumFractionDigits: 2}) + " TB";
}

function when(unixSeconds) {
  return new Date(unixSeconds * 1000).toLocaleString(undefined, {
    dateStyle: "medium", timeStyle: "short"});
}

// -- totals, history and the top farmers -----------------------------------

function axisTime(value) {
  const date = new Date(value);
  const scale = state.chart && state.chart.scales.x;
  const span = scale ? scale.max - scale.min : state.days * 86400000;
  if (span <= 15 * 60000) {
    return date.toLocaleTimeString(undefined, {hour: "2-digit", minute: "2-digit", second: "2-digit"});
  }
  return span <= 2 * 86400000
    ? date.toLocaleTimeString(undefined, {hour: "2-digit", minute: "2-digit"})
    : date.toLocaleDateString(undefined, {month: "short", day: "numeric"});
}

function makeChart() {
  if (typeof Chart === "undefined") return null;
  const css = getComputedStyle(document.documentElement);
  const color = name => css.getPropertyValue(name).trim();
  return new Chart($("chart"), {
    type: "line",
    data: {datasets: [
      {label: "online farmers", yAxisID: "farmers", data: [], borderColor: color("--farmers"),
       backgroundColor: color("--farmers"), pointRadius: 2, borderWidth: 2, tension: 0.2,
       order: 0},
      {label: "claimed TB", yAxisID: "tb", data: [], borderColor: color("--claimed"),
       backgroundColor: color("--claimed-fill"), pointBackgroundColor: color("--claimed"),
       pointRadius: 2, borderWidth: 2, tension: 0.2, borderDash: [6, 4], fill: "origin",
       order: 2},
      {label: "verified TB", yAxisID: "tb", data: [], borderColor: color("--verified"),
       backgroundColor: color("--verified"), pointRadius: 2, borderWidth: 2, tension: 0.2,
       hidden: true, order: 1},
    ]},
    options: {
      animation: false,
      maintainAspectRatio: false,
      parsing: false,
      interaction: {mode: "index", intersect: false},
      plugins: {
        legend: {position: "bottom", labels: {
          boxWidth: 12,
          // verified TB appears once the server reports it
          filter: (item, data) => data.datasets[item.datasetIndex].data.length > 0,
        }},
        tooltip: {callbacks: {
          title: items => items.length ? new Date(items[0].parsed.x).toLocaleString() : "",
          label: item => item.dataset.yAxisID === "tb"
            ? item.dataset.label.replace(" TB", "") + ": " + terabytes(item.parsed.y)
            : item.dataset.label + ": " + item.parsed.y.toLocaleString(),
        }},
      },
      scales: {
        x: {type: "linear", title: {display: true, text: "time (your local time)"},
            ticks: {callback: axisTime, maxRotation: 0, autoSkipPadding: 12}},
        farmers: {type: "linear", position: "left", beginAtZero: true,
                  title: {display: true, text: "online farmers"},
                  ticks: {precision: 0}},
        tb: {type: "linear", position: "right", beginAtZero: true,
             title: {display: true, text: "capacity (TB)"},
             grid: {drawOnChartArea: false}},
      },
    },
  });
}

function showHistory(history) {
  const points = history.history;
  $("chart-empty").hidden = points.length > 0;
  if (!state.chart) state.chart = makeChart();
  const chart = state.chart;
  if (!chart) return;
  const at = p => p.time * 1000;
  chart.data.datasets[0].data = points.map(p => ({x: at(p), y: p.total_farmers}));
  chart.data.datasets[1].data = points.map(p => ({x: at(p), y: p.total_TB}));
  const verified = points.filter(p => typeof p.verified_TB === "number");
  chart.data.datasets[2].data = verified.map(p => ({x: at(p), y: p.verified_TB}));
  chart.data.datasets[2].hidden = verified.length === 0;
  // A young server has less history than the range asked for: show what there is.
  const first = points.length ? at(points[0]) : history.since * 1000;
  const last = history.until * 1000;
  const start = Math.max(history.since * 1000, first);
  const pad = Math.max(60000, (last - start) * 0.03);
  chart.options.scales.x.min = Math.max(history.since * 1000, start - pad);
  chart.options.scales.x.max = last;
  chart.update();
}

function showTop(online) {
  const body = $("top");
  body.replaceChildren();
  for (const farmer of online.farmers.slice(0, 50)) {
    const row = body.insertRow();
    const cells = [[farmer.payout_addr, "id"], [farmer.height.toLocaleString(), "n"],
                   [duration(farmer.last_seen) + " ago", "n"],
                   [typeof farmer.uptime === "number" ? farmer.uptime.toFixed(1) + " %" : "–", "n"]];
    for (const [text, kind] of cells) {
      const cell = row.insertCell();
      cell.textContent = text;
      cell.className = kind;
    }
  }
  if (!online.farmers.length) {
    const cell = body.insertRow().insertCell();
    cell.colSpan = 4;
    cell.className = "muted";
    cell.textContent = "Nobody is online right now.";
  }
}

async function refresh() {
  const now = Date.now() / 1000;
  const since = Math.floor(now - state.days * 86400);
  try {
    const [total, address, history, online] = await Promise.all([
      getJSON("/api/total"), getJSON("/api/address"),
      getJSON("/api/total/history?since=" + since), getJSON("/api/online/json")]);
    $("farmers").textContent = total.total_farmers.toLocaleString();
    $("claimed").textContent = terabytes(total.total_TB);
    const hasVerified = typeof total.verified_TB === "number";
    $("verified-box").hidden = !hasVerified;
    if (hasVerified) $("verified").textContent = terabytes(total.verified_TB);
    $("address").textContent = address.address;
    showHistory(history);
    showTop(online);
    state.updatedAt = Date.now();
    $("problem").textContent = "";
  } catch (error) {
    $("problem").textContent = "Could not refresh: " + error.message;
  }
  tick();
}

function tick() {
  if (state.updatedAt === null) return;
  const ago = Math.round((Date.now() - state.updatedAt) / 1000);
  $("updated").textContent = "updated " + (ago < 1 ? "just now" : duration(ago) + " ago");
}

// -- farmer lookup ----------------------------------------------------------

function detail(list, term, value) {
  const dt = document.createElement("dt");
  dt.textContent = term;
  const dd = document.createElement("dd");
  dd.textContent = value;
  list.append(dt, dd);
}

function plotScore(plot) {
  const score = plot.score;
  if (typeof score !== "number") return null;
  return score <= 1 ? score * 100 : score;  // a fraction or a percentage
}

function adviceFor(farmer) {
  const advice = [];
  if (state.skew !== null && Math.abs(state.skew) >= SKEW_WARNING_SECONDS) {
    advice.push("This computer's clock is " + duration(Math.abs(state.skew)) +
      (state.skew > 0 ? " behind" : " ahead of") + " the server's. A farmer whose clock is off " +
      "by as much as the server's --auth-timeout (30 seconds by default) has every signed " +
      "request refused with 401: turn on automatic time (NTP) on the farming machine.");
  }
  if (!farmer.online) {
    advice.push("Not seen for " + duration(farmer.last_seen) + ", so not online. " +
      "Check that the farmer software runs, that it can reach this server, and that its " +
      "clock is right (see above).");
  } else if (farmer.last_seen > ONLINE_WINDOW_GUESS / 2) {
    advice.push("Last contact " + duration(farmer.last_seen) + " ago: the farmer goes " +
      "offline if it stays silent much longer.");
  }
  if (farmer.height === 0 && !(farmer.claimed_height > 0)) {
    advice.push("No height reported yet: the farmer has not told the server how much it stores.");
  }
  if (typeof farmer.claimed_height === "number" && farmer.claimed_height > farmer.height) {
    advice.push("Claimed height " + farmer.claimed_height.toLocaleString() + " is above the " +
      "credited " + farmer.height.toLocaleString() + ": the server credits a claim no faster " +
      "than a disk can fill, so the credited height catches up over time.");
  }
  const plots = Array.isArray(farmer.plots) ? farmer.plots : [];
  const weak = plots.filter(p => plotScore(p) !== null && plotScore(p) < 50);
  if (weak.length) {
    advice.push(plural(weak.length, "plot") + " answered fewer than half of the challenges: " +
      "check that the disks holding them are mounted and that the farmer fetches challenges " +
      "and answers within the window.");
  }
  if (typeof farmer.uptime === "number" && farmer.uptime < 90 && farmer.online) {
    advice.push("Uptime is " + farmer.uptime.toFixed(1) + " %: the farmer was offline for " +
      "part of the period. Keep it running and pinging.");
  }
  return advice;
}

function showFarmer(farmer) {
  $("farmer").hidden = false;
  const badge = $("farmer-state");
  badge.textContent = farmer.online ? "online" : "offline";
  badge.className = "badge " + (farmer.online ? "good" : "bad");
  $("farmer-name").textContent = farmer.btc_addr;
  const list = $("farmer-details");
  list.replaceChildren();
  detail(list, "last seen", duration(farmer.last_seen) + " ago");
  detail(list, "height (credited)", farmer.height.toLocaleString());
  if (typeof farmer.claimed_height === "number") {
    detail(list, "height (claimed)", farmer.claimed_height.toLocaleString());
  }
  if (typeof farmer.uptime === "number") detail(list, "uptime", farmer.uptime.toFixed(2) + " %");
  detail(list, "payout address", farmer.payout_addr);
  if (farmer.nodeid) detail(list, "node id", farmer.nodeid);
  if (farmer.reg_time) detail(list, "registered", when(farmer.reg_time));
  if (typeof farmer.audits === "number") detail(list, "audits", farmer.audits.toLocaleString());
  if (typeof farmer.bandwidth_upload === "number") {
    detail(list, "bandwidth up / down", farmer.bandwidth_upload + " / " + farmer.bandwidth_download);
  }
  const plots = Array.isArray(farmer.plots) ? farmer.plots : [];
  $("plots").hidden = plots.length === 0;
  const body = $("plots").querySelector("tbody");
  body.replaceChildren();
  for (const plot of plots) {
    const row = body.insertRow();
    const score = plotScore(plot);
    for (const [text, kind] of [[String(plot.plot_id || plot.id || "?"), "id"],
                                [plot.k ? "k=" + plot.k : (plot.size || "–"), ""],
                                [score === null ? "–" : score.toFixed(1) + " %", "n"]]) {
      const cell = row.insertCell();
      cell.textContent = text;
      cell.className = kind;
    }
  }
  const advice = $("advice");
  advice.replaceChildren();
  for (const text of adviceFor(farmer)) {
    const item = document.createElement("li");
    item.textContent = text;
    advice.append(item);
  }
}

async function lookUp(event) {
  event.preventDefault();
  const id = $("farmer-id").value.trim();
  $("lookup-error").textContent = "";
  if (!/^(1[1-9A-HJ-NP-Za-km-z]{25,34}|[0-9a-fA-F]{40})$/.test(id)) {
    $("farmer").hidden = true;
    $("lookup-error").textContent = "That is neither a Bitcoin address (1…) nor a 40-digit node id.";
    return;
  }
  try {
    showFarmer(await getJSON("/api/farmer/" + encodeURIComponent(id)));
  } catch (error) {
    $("farmer").hidden = true;
    $("lookup-error").textContent = error.status === 404
      ? "No farmer with that address or node id is registered on this server."
      : "Could not look it up: " + error.message;
  }
}

function chooseRange(event) {
  const button = event.target.closest("button[data-days]");
  if (!button) return;
  state.days = Number(button.dataset.days);
  for (const other of document.querySelectorAll(".range button")) {
    other.setAttribute("aria-pressed", String(other === button));
  }
  refresh();
}

document.addEventListener("DOMContentLoaded", () => {
  $("lookup").addEventListener("submit", lookUp);
  document.querySelector(".range").addEventListener("click", chooseRange);
  const fromLink = new URLSearchParams(location.search).get("farmer");
  if (fromLink) {
    $("farmer-id").value = fromLink;
    $("lookup").requestSubmit();
  }
  refresh();
  setInterval(refresh, REFRESH_SECONDS * 1000);
  setInterval(tick, 1000);
});
