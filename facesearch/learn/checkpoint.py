"""Resumable training state: model + optimizer tensors in safetensors, counters in JSON.

Never pickle: the optimizer's per-parameter state is flattened to named tensors.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from facesearch.core.atomic import atomic_path, atomic_write_json


def _paths(stem: Path) -> tuple[Path, Path]:
    return Path(str(stem) + ".resume.safetensors"), Path(str(stem) + ".resume.json")


def save_checkpoint(stem: Path, model: torch.nn.Module, opt: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Save everything needed to continue training after ``state['epoch']``."""
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    opt_state = opt.state_dict()
    for pid, st in opt_state["state"].items():
        for name, val in st.items():
            t = val if torch.is_tensor(val) else torch.tensor(val)
            tensors[f"opt.{pid}.{name}"] = t.detach().cpu().contiguous()
    st_path, js_path = _paths(stem)
    with atomic_path(st_path) as tmp:
        save_file(tensors, str(tmp))
    atomic_write_json(js_path, {**state, "param_groups": opt_state["param_groups"]})


def load_checkpoint(stem: Path, model: torch.nn.Module, opt: torch.optim.Optimizer) -> dict[str, Any] | None:
    """Restore model and optimizer in place; return the saved counters, or None if absent."""
    st_path, js_path = _paths(stem)
    if not (st_path.is_file() and js_path.is_file()):
        return None
    state = json.loads(js_path.read_text())
    tensors = load_file(str(st_path))
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    opt_state: dict[int, dict[str, torch.Tensor]] = {}
    for key, val in tensors.items():
        if key.startswith("opt."):
            _, pid, name = key.split(".", 2)
            opt_state.setdefault(int(pid), {})[name] = val
    opt.load_state_dict({"state": opt_state, "param_groups": state.pop("param_groups")})
    return state


def remove_checkpoint(stem: Path) -> None:
    for p in _paths(stem):
        p.unlink(missing_ok=True)
