"""The page ``facesearch serve`` shows at ``/``: a full client of the service, with a URL per view.

- ``/#search`` (and ``/#face=ID``): drop a photo, see its faces boxed and the answer in words;
- ``/#people``: everyone, merge two, sort the unassigned faces;
- ``/#person=ID``: one person's photos: name, split faces off, "not this person", merge;
- ``/#duplicates``: duplicate photos side by side, choose per group, move (after a confirmation), undo.

Plain HTML and JavaScript (``page_js.py``), no CDN, no fetch beyond this server. The script and the
style are files of their own (``/app.js``, ``/app.css``), never inline, so the page keeps working under
the service's Content-Security-Policy (``headers.py``), which runs no inline code. User text is inserted
with ``textContent``, never as markup. A token given as ``/?token=…`` travels with every call (the
hash of a view's URL leaves the query string alone). Everything is reachable by keyboard: views are
links (``accesskey`` s, p, d), faces are checkboxes, forms submit on Enter.
"""

from facesearch.service.page_js import SCRIPT

STYLE = r"""
body{font:14px system-ui,sans-serif;margin:0;background:#f6f6f4;color:#222}
header{background:#223;color:#fff;padding:10px 16px}header b{font-size:18px}
nav a{color:#fff;margin-right:14px;text-decoration:none;padding:2px 6px;border-radius:4px}
nav a[aria-current=page]{background:#556}main{padding:16px}
:focus-visible{outline:3px solid #f90;outline-offset:2px}
#drop{border:2px dashed #889;border-radius:8px;padding:28px;text-align:center;background:#fff;cursor:pointer}
#drop.over{background:#eef}.muted{color:#666}.err{color:#b00}.ok{color:#070}
.wrap{position:relative;display:inline-block;margin-top:12px}.wrap img{max-width:640px;max-height:480px;display:block}
.box{position:absolute;border:2px solid #e33;box-sizing:border-box}
.box span{position:absolute;left:0;top:-18px;background:#e33;color:#fff;font-size:12px;padding:0 3px;white-space:nowrap}
.card{background:#fff;border-radius:8px;padding:10px;margin:10px 0}.row{display:flex;flex-wrap:wrap;gap:8px}
.cell,.tile{font-size:12px;width:120px;overflow:hidden;overflow-wrap:anywhere}
.row>a img{width:96px;height:96px;object-fit:cover;border-radius:4px;display:block}
.cell img,.tile img{width:112px;height:112px;object-fit:cover;border-radius:4px;display:block}
.tile{position:relative;cursor:pointer;border:2px solid transparent;border-radius:6px;padding:2px}
.tile input{position:absolute;left:6px;top:6px;width:18px;height:18px}
.tile:has(input:checked){border-color:#36c;background:#eef}
.dup{display:flex;gap:12px;flex-wrap:wrap}.dup label{width:250px;cursor:pointer;border:2px solid #ddd;border-radius:6px;
 padding:4px;font-size:12px;overflow-wrap:anywhere}.dup label:has(input:checked){border-color:#070;background:#efe}
.dup img{width:240px;height:180px;object-fit:contain;background:#eee;display:block}
.keep{background:#070;color:#fff;border-radius:3px;padding:0 4px}
.verdict{font-size:16px}.tools{margin:8px 0;display:flex;gap:8px;flex-wrap:wrap;align-items:center}
#confirm{position:fixed;left:50%;top:30%;transform:translateX(-50%);background:#fff;border:2px solid #223;
 border-radius:8px;padding:16px 20px;box-shadow:0 6px 30px #0005;max-width:560px;z-index:9}
button{font:inherit;padding:3px 10px}details{margin-top:4px}nav{margin-top:6px}
"""

BODY = r"""<header><b>facesearch</b> <span id="health" class="muted"></span>
<nav><a href="#search" accesskey="s">Search</a><a href="#people" accesskey="p">People</a>
<a href="#duplicates" accesskey="d">Duplicates</a></nav></header>
<main>
<section id="search"><div id="drop" tabindex="0" role="button">Drop a photo here, or click to choose one
<input id="file" type="file" accept="image/*" hidden></div>
<div id="status" class="muted" aria-live="polite"></div><div id="result"></div></section>
<section id="people" hidden><div id="people-list" class="muted">loading…</div></section>
<section id="person" hidden><div id="person-view" class="muted">loading…</div></section>
<section id="duplicates" hidden><div id="dup-list" class="muted">loading…</div></section>
<div id="confirm" role="dialog" aria-modal="true" hidden><p id="confirm-text"></p>
<button id="confirm-yes">Yes, do it</button> <button id="confirm-no">Cancel</button></div>
</main>"""

PAGE = ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>facesearch</title>\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        "<link rel=\"stylesheet\" href=\"/app.css\"></head>"
        "<body>\n" + BODY + "\n<script src=\"/app.js\"></script></body></html>\n")
FILES = {"/app.js": (SCRIPT, "text/javascript; charset=utf-8"), "/app.css": (STYLE, "text/css; charset=utf-8")}
