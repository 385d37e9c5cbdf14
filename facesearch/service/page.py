"""The page ``facesearch serve`` shows at ``/``: drop a photo, see its faces boxed and their matches;
browse people; review duplicate groups. Plain HTML and a little JavaScript, no CDN, no fetch
beyond this server. User text is inserted with ``textContent``, never as markup."""

PAGE = r"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>facesearch</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:14px system-ui,sans-serif;margin:0;background:#f6f6f4;color:#222}
header{background:#223;color:#fff;padding:10px 16px}header b{font-size:18px}
nav button{margin-right:6px}main{padding:16px}
#drop{border:2px dashed #889;border-radius:8px;padding:28px;text-align:center;background:#fff;cursor:pointer}
#drop.over{background:#eef}.muted{color:#777}.err{color:#b00}
.wrap{position:relative;display:inline-block;margin-top:12px}.wrap img{max-width:640px;max-height:480px;display:block}
.box{position:absolute;border:2px solid #e33;box-sizing:border-box}
.box span{position:absolute;left:0;top:-18px;background:#e33;color:#fff;font-size:12px;padding:0 3px;white-space:nowrap}
.face{background:#fff;border-radius:8px;padding:10px;margin:10px 0}.row{display:flex;flex-wrap:wrap;gap:8px}
.cell{font-size:12px;width:120px;overflow:hidden}.cell img{width:112px;height:112px;object-fit:cover;border-radius:4px}
</style></head><body>
<header><b>facesearch</b> <span id="health" class="muted"></span>
<nav style="margin-top:6px"><button data-tab="search">Search</button><button data-tab="people">People</button>
<button data-tab="dedupe">Duplicates</button></nav></header>
<main>
<section id="search"><div id="drop">Drop a photo here, or click to choose one
<input id="file" type="file" accept="image/*" hidden></div>
<div id="status" class="muted"></div><div id="result"></div></section>
<section id="people" hidden><div id="people-list" class="muted">loading…</div></section>
<section id="dedupe" hidden><div id="dedupe-list" class="muted">loading…</div></section>
</main>
<script>
const token = new URLSearchParams(location.search).get("token");
const auth = token ? {"Authorization": "Bearer " + token} : {};
const withToken = u => token ? u + (u.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token) : u;
const el = (tag, text, cls) => { const e = document.createElement(tag); if (text !== undefined) e.textContent = text;
  if (cls) e.className = cls; return e; };
async function api(path, opts) {
  const r = await fetch(path, Object.assign({headers: auth}, opts || {}));
  const body = await r.json();
  if (!r.ok) throw new Error(body.error + (body.hint ? " (" + body.hint + ")" : ""));
  return body;
}
function thumb(faceId) { const i = el("img"); i.src = withToken("/api/faces/" + faceId + "/thumb"); i.alt = "face " + faceId;
  i.title = "search with this face"; i.style.cursor = "pointer"; i.onclick = () => searchFace(faceId); return i; }
async function searchFace(faceId) {  // an indexed face as the query photo: "who else is this?"
  const r = await fetch(withToken("/api/faces/" + faceId + "/thumb?size=320"));
  if (!r.ok) { document.getElementById("status").textContent = "no face " + faceId; return; }
  show("search"); search(new File([await r.blob()], "face " + faceId + ".jpg", {type: "image/jpeg"}));
}
api("/api/health").then(h => { document.getElementById("health").textContent =
  h.faces + " faces, " + h.labelled_faces + " named"; }).catch(e => { document.getElementById("health").textContent = e.message; });
const drop = document.getElementById("drop"), file = document.getElementById("file");
drop.onclick = () => file.click();
drop.ondragover = e => { e.preventDefault(); drop.classList.add("over"); };
drop.ondragleave = () => drop.classList.remove("over");
drop.ondrop = e => { e.preventDefault(); drop.classList.remove("over"); if (e.dataTransfer.files[0]) search(e.dataTransfer.files[0]); };
file.onchange = () => { if (file.files[0]) search(file.files[0]); };
async function search(f) {
  const status = document.getElementById("status"), out = document.getElementById("result");
  status.textContent = "searching…"; out.replaceChildren();
  const form = new FormData(); form.append("image", f); form.append("top", "5");
  let r;
  try { r = await api("/api/query", {method: "POST", body: form}); }
  catch (e) { status.textContent = ""; out.append(el("p", e.message, "err")); return; }
  status.textContent = r.faces.length + " face(s); τ " + r.tau + " (" + r.tau_source + ")";
  const wrap = el("div", undefined, "wrap"), img = el("img"); img.src = URL.createObjectURL(f); wrap.append(img); out.append(wrap);
  img.onload = () => r.faces.forEach((face, k) => {
    const s = img.width / img.naturalWidth, b = face.box, box = el("div", undefined, "box");
    Object.assign(box.style, {left: b[0] * s + "px", top: b[1] * s + "px", width: (b[2] - b[0]) * s + "px", height: (b[3] - b[1]) * s + "px"});
    box.append(el("span", (k + 1) + ": " + (face.identity || "unknown"))); wrap.append(box); });
  r.faces.forEach((face, k) => {
    const card = el("div", undefined, "face face-result");
    let who = face.identity ? face.identity + " (d " + face.distance + ")" :
      (face.quality_ok === false ? "unknown: too hard to read to name" : "unknown" + (face.candidate ? " (nearest named: " + face.candidate + ")" : ""));
    card.append(el("b", "face " + (k + 1) + " → " + who));
    const row = el("div", undefined, "row");
    face.matches.forEach(m => { const c = el("div", undefined, "cell"); c.append(thumb(m.face_id), el("div", (m.label || "—") + " · d " + m.distance));
      c.append(el("div", m.path.split("/").pop(), "muted")); row.append(c); });
    card.append(row); out.append(card); });
  document.body.dataset.faces = String(r.faces.length);  // for a headless browser: the answer arrived
}
async function loadPeople() {
  const box = document.getElementById("people-list");
  try { const r = await api("/api/people"); box.replaceChildren(); box.className = "";
    r.people.forEach(p => { const card = el("div", undefined, "face"), h = el("b", "person " + p.id + ": " + (p.name || "unnamed") + " · " + p.faces.length + " faces");
      const row = el("div", undefined, "row"); p.faces.slice(0, 12).forEach(f => row.append(thumb(f.face_id)));
      card.append(h, row); box.append(card); });
    box.append(el("p", r.unassigned.length + " unassigned faces", "muted")); }
  catch (e) { box.textContent = e.message; box.className = "err"; }
}
async function loadDedupe() {
  const box = document.getElementById("dedupe-list");
  try { const r = await api("/api/dedupe"); box.replaceChildren(); box.className = "";
    box.append(el("p", r.n_groups + " groups at τ " + r.tau + " (report only)", "muted"));
    r.groups.slice(0, 100).forEach((g, n) => { const card = el("div", undefined, "face"), row = el("div", undefined, "row");
      card.append(el("b", "group " + (n + 1) + ": keep " + (g.keeper || "").split("/").pop()));
      g.members.forEach(m => { const c = el("div", undefined, "cell"); if (m.face_id !== undefined) c.append(thumb(m.face_id));
        c.append(el("div", (m.path || "").split("/").pop())); row.append(c); });
      card.append(row); box.append(card); }); }
  catch (e) { box.textContent = e.message; box.className = "err"; }
}
function show(tab) {
  document.querySelectorAll("main section").forEach(s => s.hidden = s.id !== tab);
  if (tab === "people") loadPeople(); if (tab === "dedupe") loadDedupe();
}
document.querySelectorAll("nav button").forEach(b => b.onclick = () => show(b.dataset.tab));
const link = location.hash.match(/^#face=(\d+)$/);  // /#face=ID: search with an indexed face
if (link) searchFace(link[1]);
</script></body></html>
"""
