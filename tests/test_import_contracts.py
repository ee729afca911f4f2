"""The import contracts of pyproject.toml ([tool.importlinter]) hold: entry points above the
stages, stages above the core, the core above the basics; no stage imports another; only the
zoo stage and the registered ``mini`` backends (text-to-image, fine-tuner) reach ``lib.mini``;
the mini models do not use the training or generation core."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_import_contract_is_kept() -> None:
    lint = Path(sys.executable).parent / "lint-imports"
    proc = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    assert "4 kept, 0 broken" in proc.stdout
