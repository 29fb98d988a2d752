"""Where the studio's files go: one folder per run under the output folder, removed after a while.

A run's folder has a unique name (time, then random hex), so two people generating the same seed at
the same second never write over each other. Cleanup only ever removes folders with that shape of
name: pointing --output-dir at a folder that holds other things deletes none of them.
"""

import re
import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

RUN_NAME = re.compile(r"^\d{8}-\d{6}-[0-9a-f]{8}$")  # e.g. 20250101-120000-1a2b3c4d


@dataclass(frozen=True)
class StudioSettings:
    output_dir: Path  # each run's folder is made here; the only folder the server may serve files from
    keep_hours: float = 24.0  # runs older than this are deleted at startup and before each run


def new_run_dir(output_dir: Path) -> Path:
    """Make and return a fresh, uniquely named folder for one run's files."""
    output_dir.mkdir(parents=True, exist_ok=True)
    while True:
        folder = output_dir / f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(4)}"
        try:
            folder.mkdir()
            return folder
        except FileExistsError:  # 1 in 4 billion within the same second; draw again
            continue


def clean_old_runs(output_dir: Path, keep_hours: float, now: float | None = None) -> list[Path]:
    """Delete run folders last modified more than `keep_hours` ago; return the ones deleted."""
    if not output_dir.is_dir():
        return []
    cutoff = (time.time() if now is None else now) - keep_hours * 3600
    removed = []
    for folder in output_dir.iterdir():
        if not folder.is_dir() or folder.is_symlink() or not RUN_NAME.match(folder.name):
            continue
        try:
            if folder.stat().st_mtime < cutoff:
                shutil.rmtree(folder)
                removed.append(folder)
        except FileNotFoundError:  # another studio process cleaned it first
            continue
    return removed
