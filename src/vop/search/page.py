"""The search page served at ``/``: one HTML document with inline CSS and JS (no build
step). It talks to the JSON API only, and puts every server string into the page with
``textContent`` or as an encoded URL component, never as HTML."""

from __future__ import annotations

__all__ = ["PAGE"]

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>vop search</title>
<style>
  :root { color-scheme: light dark; --card: #8881; --line: #8884; }
  body { font-family: system-ui, sans-serif; margin: 0 auto; max-width: 1200px; padding: 1rem; }
  header { display: flex; gap: .5rem; flex-wrap: wrap; align-items: center; }
  h1 { font-size: 1.2rem; margin: 0 1rem 0 0; }
  #q { flex: 1 1 20rem; font-size: 1rem; padding: .45rem .6rem; }
  button, select { font-size: 1rem; padding: .4rem .7rem; }
  #examples { margin: .6rem 0; display: flex; gap: .4rem; flex-wrap: wrap; }
  #examples button { font-size: .8rem; padding: .2rem .5rem; border-radius: 1rem; border: 1px solid var(--line);
                     background: none; cursor: pointer; }
  #status { color: #888; margin: .5rem 0; min-height: 1.2em; }
  #status.error { color: #c33; }
  #results { display: grid; grid-template-columns: repeat(auto-fill, minmax(320px, 1fr)); gap: .8rem; }
  .result { background: var(--card); border: 1px solid var(--line); border-radius: .5rem; padding: .5rem;
            cursor: pointer; }
  .result:hover { border-color: #48f; }
  .result img { width: 100%; height: auto; image-rendering: pixelated; display: block; border-radius: .25rem;
                background: #0002; min-height: 2rem; }
  .meta { display: flex; justify-content: space-between; gap: .5rem; font-size: .85rem; margin-top: .35rem; }
  .path { overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
  .score { font-variant-numeric: tabular-nums; font-weight: 600; }
  #player { position: fixed; inset: 0; background: #000c; display: none; align-items: center;
            justify-content: center; flex-direction: column; gap: .5rem; }
  #player.open { display: flex; }
  #player video { max-width: 90vw; max-height: 80vh; min-width: min(480px, 90vw); background: #000; }
  #player .caption { color: #eee; }
</style>
</head>
<body>
<header>
  <h1>vop search</h1>
  <input id="q" type="search" placeholder="describe a video, e.g. a red circle moves and ends up on the right"
         maxlength="1000" autofocus>
  <select id="index" title="index"></select>
  <select id="k" title="results">
    <option>5</option><option selected>10</option><option>20</option><option>50</option>
  </select>
  <button id="go">Search</button>
</header>
<div id="examples"></div>
<div id="status"></div>
<div id="results"></div>
<div id="player" role="dialog" aria-modal="true">
  <video id="video" controls autoplay loop playsinline></video>
  <div class="caption" id="caption"></div>
  <button id="close">Close (Esc)</button>
</div>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
const status = (text, error) => { $("status").textContent = text; $("status").className = error ? "error" : ""; };
const withIndex = (url, index) => index ? url + "?index=" + encodeURIComponent(index) : url;

async function getJSON(url) {
  const response = await fetch(url, { headers: { "Accept": "application/json" } });
  let body = null;
  try { body = await response.json(); } catch (e) { /* not JSON */ }
  if (!response.ok) throw new Error((body && body.error) || ("HTTP " + response.status));
  return body;
}

function card(hit) {
  const div = document.createElement("div");
  div.className = "result";
  div.dataset.id = hit.id;
  const img = document.createElement("img");
  img.alt = hit.path;
  img.loading = "lazy";
  img.src = hit.thumb_url;
  const meta = document.createElement("div");
  meta.className = "meta";
  const path = document.createElement("span");
  path.className = "path";
  path.textContent = hit.rank + ". " + hit.path;
  path.title = hit.path;
  const score = document.createElement("span");
  score.className = "score";
  score.textContent = hit.score.toFixed(3);
  meta.append(path, score);
  div.append(img, meta);
  div.addEventListener("click", () => play(hit));
  return div;
}

function play(hit) {
  const video = $("video");
  video.src = hit.media_url;
  $("caption").textContent = hit.path + "  (score " + hit.score.toFixed(3) + ")";
  $("player").classList.add("open");
  video.play().catch(() => {});
}

function closePlayer() {
  const video = $("video");
  video.pause();
  video.removeAttribute("src");
  video.load();
  $("player").classList.remove("open");
}

async function search() {
  const q = $("q").value.trim();
  if (!q) { status("Type a description of the video you are looking for.", true); return; }
  const params = new URLSearchParams({ q: q, k: $("k").value });
  if ($("index").value) params.set("index", $("index").value);
  history.replaceState(null, "", "?" + params.toString());
  status("Searching...");
  const started = performance.now();
  try {
    const body = await getJSON("/api/search?" + params.toString());
    const grid = $("results");
    grid.replaceChildren(...body.results.map(card));
    const ms = Math.round(performance.now() - started);
    status(body.results.length + " results from " + body.index + " in " + ms + " ms");
  } catch (e) {
    $("results").replaceChildren();
    status(e.message, true);
  }
}

async function init() {
  try {
    const health = await getJSON("/api/health");
    for (const idx of health.indexes) {
      const option = document.createElement("option");
      option.value = idx.name;
      option.textContent = idx.name + " (" + idx.videos + " videos, " + idx.method + ")";
      $("index").append(option);
    }
    $("index").hidden = health.indexes.length < 2;
    for (const text of health.examples || []) {
      const b = document.createElement("button");
      b.textContent = text;
      b.addEventListener("click", () => { $("q").value = text; search(); });
      $("examples").append(b);
    }
  } catch (e) { status(e.message, true); }
  const params = new URLSearchParams(location.search);
  if (params.get("index")) $("index").value = params.get("index");
  if (params.get("k")) $("k").value = params.get("k");
  if (params.get("q")) { $("q").value = params.get("q"); search(); }
}

$("go").addEventListener("click", search);
$("q").addEventListener("keydown", (e) => { if (e.key === "Enter") search(); });
$("close").addEventListener("click", closePlayer);
$("player").addEventListener("click", (e) => { if (e.target === $("player")) closePlayer(); });
document.addEventListener("keydown", (e) => { if (e.key === "Escape") closePlayer(); });
init();
</script>
</body>
</html>
"""
