"""What a model folder's weights went through: each export appends its run to
<component>/training.json (steps, wall-clock minutes, hardware, the run's arguments), which the model
card (eval/model_card.py) reads. A run that continued from the folder's weights (--init-from, or a
frozen encoder) keeps the entries before it; a run from scratch starts the list again."""

import json
import os
import platform
from datetime import date
from pathlib import Path

import torch


def hardware() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"
    return f"CPU ({os.cpu_count()} cores, {platform.machine()})"


def run_minutes(log_path: Path) -> float:
    """Wall-clock training minutes in a run's log.jsonl, summed over its resumes (each resume's
    clock starts again from 0)."""
    total, segment = 0.0, 0.0
    if log_path.exists():
        for line in log_path.read_text().splitlines():
            minutes = json.loads(line).get("minutes")
            if minutes is None:
                continue
            if minutes < segment:  # a resume
                total += segment
            segment = minutes
    return round(total + segment, 1)


def append_run(component_dir: Path, run_dir: Path, checkpoint: dict, continued: bool, note: str = ""):
    """Record a run from its checkpoint (step, args, and the hardware it trained on, which may not be
    the machine that exports it)."""
    path = component_dir / "training.json"
    step, args = checkpoint["step"], checkpoint["args"]
    runs = json.loads(path.read_text()) if continued and path.exists() else []
    entry = {
        "run": Path(run_dir).name,
        "steps": step,
        "minutes": run_minutes(Path(run_dir) / "log.jsonl"),
        "hardware": checkpoint.get("hardware", hardware()),
        "exported": date.today().isoformat(),
        "args": {k: v for k, v in args.items() if k not in ("export", "run_dir")},
    }
    if note:
        entry["note"] = note
    runs = [run for run in runs if run["run"] != entry["run"]] + [entry]  # re-exporting a run replaces its entry
    temp = path.with_suffix(".tmp")
    temp.write_text(json.dumps(runs, indent=2) + "\n")
    os.replace(temp, path)
