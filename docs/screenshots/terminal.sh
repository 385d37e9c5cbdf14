#!/usr/bin/env bash
# The terminal screenshots of the README: `index` and `query` in an 80×32 tmux pane, captured as text
# (index.txt, query.txt; rendered to PNG by render_terminal.py). Needs tmux and the repo's .venv.
# Usage: docs/screenshots/terminal.sh [WORKDIR]   (default: a fresh temporary folder)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"; repo="$(cd "$here/../.." && pwd)"
work="${1:-$(mktemp -d)}"; mkdir -p "$work"; cd "$work"
"$repo/.venv/bin/python" - <<'PY'
import os
from facesearch.photos.synthetic import make_identity_folder
p = make_identity_folder("Pictures", n_people=4, per_person=9, seed=7)
for old, new in zip(sorted(os.listdir(p)), ["ann", "bo", "cleo", "dev"]):
    os.rename(os.path.join(p, old), os.path.join(p, new))
PY
capture() {  # capture NAME COMMAND: run COMMAND in an 80-column pane, keep what it shows
  tmux kill-session -t fs-shot 2>/dev/null || true
  tmux new-session -d -s fs-shot -x 80 -y 32 -c "$work" \
    "env PATH=$repo/.venv/bin:\$PATH FACESEARCH_HOME=$work/.facesearch PS1='$ ' bash --norc -i"
  sleep 1
  tmux send-keys -t fs-shot "clear; $2; echo __done__" Enter
  for _ in $(seq 600); do tmux capture-pane -p -t fs-shot | grep -q '^__done__' && break; sleep 0.5; done
  tmux capture-pane -p -t fs-shot | grep -v '^__done__' | sed -e :a -e '/^\n*$/{$d;N;ba' -e '}' > "$here/$1.txt"
  tmux kill-session -t fs-shot
}
capture index "facesearch index Pictures --label-from-folder"
capture query "facesearch query Pictures/bo/004.png --top 4"
capture query-verbose "facesearch query Pictures/bo/004.png --top 3 --verbose"
"$repo/.venv/bin/python" "$here/render_terminal.py" "$here"/index.txt "$here"/query.txt "$here"/query-verbose.txt
