"""The script of the service's page (``page.py``): one view per URL hash, every change a JSON call.

Each view sets ``document.body.dataset.view`` and, once loaded, ``dataset.ready = "1"`` (what a
headless browser test waits for). Calls carry the token of ``/?token=…``; image URLs carry it as a
query parameter (an ``<img>`` cannot send a header).
"""

SCRIPT = r"""
"use strict";
const token = new URLSearchParams(location.search).get("token");
const auth = token ? {"Authorization": "Bearer " + token} : {};
const withToken = u => token ? u + (u.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token) : u;
const $ = id => document.getElementById(id);
const fmt = v => (v === null || v === undefined) ? "—" : String(v);
const base = p => String(p || "").split("/").pop();
const el = (tag, text, cls) => { const e = document.createElement(tag); if (text !== undefined) e.textContent = text;
  if (cls) e.className = cls; return e; };
async function api(path, opts) {
  const r = await fetch(path, Object.assign({headers: auth}, opts || {}));
  const body = await r.json();
  if (!r.ok) throw new Error(body.error + (body.hint ? " (" + body.hint + ")" : ""));
  return body;
}
const post = (path, body) => api(path, {method: "POST", body: JSON.stringify(body),
  headers: Object.assign({"Content-Type": "application/json"}, auth)});
function faceImg(faceId, size) { const i = el("img"); i.alt = "face " + faceId; i.loading = "lazy";
  i.src = withToken("/api/faces/" + faceId + "/thumb" + (size ? "?size=" + size : "")); return i; }
function faceLink(faceId) { const a = el("a"); a.href = "#face=" + faceId; a.title = "search with this face";
  a.append(faceImg(faceId)); return a; }
function photoImg(path) { const i = el("img"); i.alt = base(path); i.loading = "lazy";
  i.src = withToken("/api/photos/thumb?path=" + encodeURIComponent(path)); return i; }
function tile(face, cls) {  // a face to select: a checkbox (Space toggles it), its crop and its photo's name
  const t = el("label", undefined, "tile"), box = el("input"); box.type = "checkbox"; box.value = face.face_id;
  box.className = cls; box.setAttribute("aria-label", "face " + face.face_id + " in " + base(face.path));
  t.append(box, faceImg(face.face_id), el("span", base(face.path))); return t; }
const picked = cls => [...document.querySelectorAll("input." + cls + ":checked")].map(b => Number(b.value));
function say(id, text, cls) { const s = $(id); if (s) { s.textContent = text; s.className = cls || "muted"; } }
function ask(text) {  // nothing that moves files runs before the user says yes here
  return new Promise(done => {
    const box = $("confirm"), end = v => { box.hidden = true; done(v); };
    $("confirm-text").textContent = text; box.hidden = false; $("confirm-no").focus();
    $("confirm-yes").onclick = () => end(true); $("confirm-no").onclick = () => end(false);
    box.onkeydown = e => { if (e.key === "Escape") end(false); };
  });
}
function health() { api("/api/health").then(h => { $("health").textContent = h.faces + " faces, " +
  h.labelled_faces + " named"; }).catch(e => { $("health").textContent = e.message; }); }

// --- search ---------------------------------------------------------------------------------
let selfFace = null;  // searching with an indexed face: it is not its own match
async function searchFace(faceId) {
  const r = await fetch(withToken("/api/faces/" + faceId + "/thumb?size=320"));
  if (!r.ok) { say("status", "no face " + faceId, "err"); return; }
  selfFace = Number(faceId);
  await search(new File([await r.blob()], "face " + faceId + ".jpg", {type: "image/jpeg"}));
}
async function search(f) {
  const out = $("result"); say("status", "searching…"); out.replaceChildren();
  const form = new FormData(); form.append("image", f); form.append("top", "6");
  if (selfFace !== null) form.append("face", String(selfFace));  // the server leaves it out of the matches
  let r;
  try { r = await api("/api/query", {method: "POST", body: form}); }
  catch (e) { say("status", ""); out.append(el("p", e.message, "err")); return; }
  say("status", r.faces.length + " face(s) found");
  const wrap = el("div", undefined, "wrap"), img = el("img"); img.src = URL.createObjectURL(f); wrap.append(img);
  out.append(wrap);
  img.onload = () => r.faces.forEach((face, k) => {
    const s = img.width / img.naturalWidth, b = face.box, box = el("div", undefined, "box");
    Object.assign(box.style, {left: b[0] * s + "px", top: b[1] * s + "px", width: (b[2] - b[0]) * s + "px",
      height: (b[3] - b[1]) * s + "px"});
    box.append(el("span", (k + 1) + ": " + (face.identity || "unknown"))); wrap.append(box); });
  r.faces.forEach((face, k) => out.append(faceCard(face, k, r)));
  selfFace = null;
  document.body.dataset.faces = String(r.faces.length);  // for a headless browser: the answer arrived
}
// A clip's hit: its moment in words, and the clip playing from it (served for indexed clips' faces only).
function clock(s) { const t = Math.round(s * 10), m = Math.floor(t / 600), r = t % 600;
  return m + ":" + String(Math.floor(r / 10)).padStart(2, "0") + "." + (r % 10); }
function clipPlayer(m) { const v = el("video", undefined, "clip"); v.controls = true; v.preload = "none"; v.width = 160;
  v.poster = withToken("/api/faces/" + m.face_id + "/thumb?size=320");
  v.src = withToken("/api/faces/" + m.face_id + "/clip") + "#t=" + m.start_s + "," + m.end_s; return v; }
const MATCH_WORDS = {"very likely": "very likely the same", "likely": "likely the same", "": "probably not"};
function faceCard(face, k, r) {
  const card = el("div", undefined, "card face-result");
  card.append(el("div", "face " + (k + 1) + ": " + face.verdict_text, "verdict"), el("div", face.error_rate, "muted"));
  const matches = face.matches.filter(m => m.face_id !== selfFace).slice(0, 5), row = el("div", undefined, "row");
  matches.forEach(m => { const c = el("div", undefined, "cell"); c.append(faceLink(m.face_id),
    el("div", m.label || "—"), el("div", MATCH_WORDS[m.verdict || ""]), el("div", base(m.path), "muted"));
    if (m.start_s !== undefined) c.append(el("div", clock(m.start_s) + "–" + clock(m.end_s), "moment"), clipPlayer(m));
    row.append(c); });
  const det = el("details"), far = face.far === null ? "—" : (face.far_is_bound ? "≤" : "") + face.far;
  det.append(el("summary", "numbers"), el("div", "distance " + fmt(face.distance) + " to " +
    (face.candidate || "nobody named") + "; τ " + r.tau + " (" + r.tau_source + "); FAR " + far + "; margin " +
    fmt(face.margin) + "; quality " + fmt(face.quality) + "; box " + face.box.join(", ")));
  matches.forEach((m, n) => det.append(el("div", "#" + (n + 1) + " " + m.path + ": distance " + m.distance +
    ", cosine " + m.similarity)));
  card.append(row, det); return card;
}
const drop = $("drop"), file = $("file");
drop.onclick = () => file.click();
drop.onkeydown = e => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); file.click(); } };
drop.ondragover = e => { e.preventDefault(); drop.classList.add("over"); };
drop.ondragleave = () => drop.classList.remove("over");
drop.ondrop = e => { e.preventDefault(); drop.classList.remove("over");
  if (e.dataTransfer.files[0]) search(e.dataTransfer.files[0]); };
file.onchange = () => { if (file.files[0]) search(file.files[0]); };

// --- people ---------------------------------------------------------------------------------
const who = p => p.name || "unnamed person " + p.id;
function peopleSelect(people, skip) { const s = el("select"); s.setAttribute("aria-label", "person");
  people.filter(p => p.id !== skip).forEach(p => { const o = el("option", who(p) + " (" + p.faces.length + ")");
    o.value = p.id; s.append(o); }); return s; }
async function loadPeople() {
  const box = $("people-list"), r = await api("/api/people");
  box.replaceChildren(); box.className = "";
  const merge = el("button", "Merge the chosen people"), tools = el("div", undefined, "tools");
  tools.append(el("span", r.people.length + " people. Tick two or more who are one person:"), merge,
    el("span", "", "muted")); tools.lastChild.id = "people-status"; box.append(tools);
  merge.onclick = () => act("people-status", async () => {
    const ids = picked("people-pick"), named = r.people.find(p => ids.includes(p.id) && p.name);
    if (ids.length < 2) throw new Error("tick at least two people");
    const keep = named ? named.id : ids[0];
    for (const other of ids.filter(i => i !== keep)) await post("/api/people/" + keep + "/merge", {other});
    location.hash = "#person=" + keep; });
  r.people.forEach(p => {
    const card = el("div", undefined, "card person"), head = el("div", undefined, "tools"), pick = el("input");
    pick.type = "checkbox"; pick.className = "people-pick"; pick.value = p.id; pick.setAttribute("aria-label", who(p));
    const link = el("a", who(p)); link.href = "#person=" + p.id;
    head.append(pick, link, el("span", p.faces.length + " faces", "muted"));
    const row = el("div", undefined, "row"); p.faces.slice(0, 10).forEach(f => row.append(faceLink(f.face_id)));
    card.append(head, row); box.append(card); });
  const un = el("div", undefined, "card unassigned"), row = el("div", undefined, "row");
  un.append(el("b", r.unassigned.length + " faces not sorted into anyone yet"));
  if (r.unassigned.length && r.people.length) {
    const to = peopleSelect(r.people), go = el("button", "Put the chosen faces in"), t = el("div", undefined, "tools");
    t.append(go, to, el("span", "", "muted")); t.lastChild.id = "unassigned-status"; un.append(t);
    go.onclick = () => act("unassigned-status", async () => {
      await post("/api/people/" + to.value + "/assign", {faces: picked("unassigned-pick")}); await loadPeople(); });
  }
  r.unassigned.slice(0, 300).forEach(f => row.append(tile(f, "unassigned-pick"))); un.append(row); box.append(un);
}
async function act(statusId, fn) {  // run a correction, say how it went; the view reloads on success
  say(statusId, "working…");
  try { const msg = await fn(); health(); say(statusId, msg || "done", "ok"); }
  catch (e) { say(statusId, e.message, "err"); }
}
async function loadPerson(id) {
  const box = $("person-view"), [p, all] = await Promise.all([api("/api/people/" + id), api("/api/people")]);
  box.replaceChildren(); box.className = "";
  const form = el("form", undefined, "tools"), name = el("input"), save = el("button", "Save name");
  name.value = p.name || ""; name.placeholder = "name this person"; name.id = "person-name";
  name.setAttribute("aria-label", "name"); form.append(el("b", who(p)), name, save);
  form.onsubmit = e => { e.preventDefault(); act("person-status", async () => {
    await post("/api/people/" + p.id + "/name", {name: name.value}); await loadPerson(p.id); }); };
  const tools = el("div", undefined, "tools"), split = el("button", "Split the chosen faces off"),
    not = el("button", "Not this person"), merge = el("button", "Merge in:"), other = peopleSelect(all.people, p.id);
  tools.append(el("span", "Tick faces, then:"), split, not, merge, other);
  split.onclick = () => act("person-status", async () => {
    const r = await post("/api/people/" + p.id + "/split", {faces: picked("face-pick")});
    await loadPerson(p.id); return r.moved + " face(s) are now person " + r.new_person; });
  not.onclick = () => act("person-status", async () => {
    const ids = picked("face-pick"); if (!ids.length) throw new Error("tick the faces that are someone else");
    for (const f of ids) await post("/api/faces/" + f + "/not-person", {});
    await loadPerson(p.id); });
  merge.onclick = () => act("person-status", async () => {
    await post("/api/people/" + p.id + "/merge", {other: Number(other.value)}); await loadPerson(p.id); });
  const status = el("div", "", "muted"); status.id = "person-status"; status.setAttribute("aria-live", "polite");
  const faces = el("div", undefined, "row"); p.faces.forEach(f => faces.append(tile(f, "face-pick")));
  const photos = el("div", undefined, "row");
  p.photos.forEach(path => { const c = el("div", undefined, "cell"); c.append(photoImg(path), el("span", base(path)));
    c.title = path; photos.append(c); });
  box.append(form, el("p", p.faces.length + " faces in " + p.photos.length + " photos", "muted"), tools, status,
    faces, el("h3", "Photos"), photos);
}

// --- duplicates -----------------------------------------------------------------------------
let groups = [];
async function loadDuplicates() {
  const box = $("dup-list"), [r, h] = await Promise.all([api("/api/dedupe?scope=photos"), api("/api/health")]);
  groups = r.groups; box.replaceChildren(); box.className = "";
  box.append(el("p", r.n_groups + " groups of duplicate photos. Tick the groups to act on and the copy to keep in " +
    "each; the other copies move to the folder below. Nothing is deleted, and Undo puts them back."));
  const tools = el("div", undefined, "tools"), dest = el("input"), move = el("button", "Move the other copies…"),
    undo = el("button", "Undo the last move…");
  dest.id = "move-to"; dest.size = 50; dest.setAttribute("aria-label", "folder to move copies to");
  dest.placeholder = "folder to move copies to";
  dest.value = h.move_roots.length ? h.move_roots[0] + "/duplicates" : "";
  move.id = "move"; undo.id = "undo"; tools.append(dest, move, undo); box.append(tools);
  if (!h.move_roots.length) box.append(el("p", "This server may not move files: start it with " +
    "--allow-move-root FOLDER to move copies from here.", "err"));
  const status = el("div", "", "muted"); status.id = "dup-status"; status.setAttribute("aria-live", "polite");
  box.append(status);
  move.onclick = () => moveCopies(dest.value); undo.onclick = () => undoMove();
  groups.forEach((g, n) => {
    const card = el("div", undefined, "card dup-group"), head = el("label"), pick = el("input");
    pick.type = "checkbox"; pick.className = "group-pick"; pick.value = n;
    head.append(pick, el("b", " group " + (n + 1) + ": " + g.members.length + " copies"));
    const row = el("div", undefined, "dup");
    g.members.forEach(m => { const l = el("label"), keep = el("input"); keep.type = "radio"; keep.name = "keep-" + n;
      keep.value = m.path; keep.checked = m.path === g.keeper;
      const size = (m.size ? Math.round(m.size / 1024) + " KB · " : "") + m.n_faces +
        (m.n_faces === 1 ? " face" : " faces");
      l.append(keep, el("span", " keep this one"), photoImg(m.path), el("div", base(m.path)), el("div", size, "muted"));
      if (m.path === g.keeper) l.append(el("span", "suggested: " + g.keeper_reason, "keep"));
      l.title = m.path; row.append(l); });
    const det = el("details"); det.append(el("summary", "numbers"), el("div", "farthest pair " + g.max_distance +
      ", mean " + g.mean_distance + " (τ " + r.tau + ", " + r.tau_source + ")"));
    card.append(head, row, det); box.append(card); });
}
async function moveCopies(dest) {
  const chosen = picked("group-pick").map(n => ({members: groups[n].members.map(m => m.path),
    keeper: document.querySelector("input[name=keep-" + n + "]:checked").value}));
  if (!chosen.length) { say("dup-status", "tick the groups to act on first", "err"); return; }
  if (!dest.trim()) { say("dup-status", "name the folder to move the copies to", "err"); return; }
  const n = chosen.reduce((a, g) => a + g.members.length - 1, 0);
  if (!await ask("Move " + n + " photo(s) from " + chosen.length + " group(s) to " + dest + "? They leave the " +
    "index; nothing is deleted, and Undo puts them back.")) { say("dup-status", "nothing was moved"); return; }
  await act("dup-status", async () => {
    const r = await post("/api/dedupe/apply", {move_to: dest, groups: chosen, confirm: true});
    await loadDuplicates(); return r.moved + " photo(s) moved to " + r.move_to; });
}
async function undoMove() {
  if (!await ask("Put back the photos the last move took away?")) { say("dup-status", "nothing was moved"); return; }
  await act("dup-status", async () => {
    const r = await post("/api/undo", {confirm: true});
    say("dup-status", "restored " + r.restored + " photo(s); indexing them again…");
    for (let job = r.job; job && (job.status === "queued" || job.status === "running");)
      { await new Promise(w => setTimeout(w, 300)); job = await api("/api/jobs/" + job.id); }
    await loadDuplicates(); return "restored " + r.restored + " photo(s), indexed again"; });
}

// --- views ----------------------------------------------------------------------------------
const VIEWS = {"#search": "search", "#people": "people", "#duplicates": "duplicates"};
function route() {
  const m = location.hash.match(/^#(face|person)=(\d+)$/);
  const view = m ? (m[1] === "face" ? "search" : "person") : (VIEWS[location.hash] || "search");
  document.querySelectorAll("main section").forEach(s => s.hidden = s.id !== view);
  document.querySelectorAll("nav a").forEach(a => a.toggleAttribute("aria-current",
    a.getAttribute("href") === "#" + (view === "person" ? "people" : view)));
  document.querySelectorAll("nav a[aria-current]").forEach(a => a.setAttribute("aria-current", "page"));
  document.body.dataset.view = view; document.body.dataset.ready = "";
  const load = {people: loadPeople, duplicates: loadDuplicates, person: () => loadPerson(m[2]),
    search: () => m ? searchFace(m[2]) : null}[view];
  const box = {people: "people-list", person: "person-view", duplicates: "dup-list", search: "status"}[view];
  Promise.resolve().then(load).catch(e => say(box, e.message, "err"))
    .finally(() => { document.body.dataset.ready = "1"; });
}
window.addEventListener("hashchange", route);
health(); route();
"""
