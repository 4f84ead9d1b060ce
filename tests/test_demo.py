"""`make demo` in one command: the tour runs start to finish against real processes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from support import ROOT, base_env


def test_demo_tour_runs(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "demo.py"), "--once"],
        cwd=tmp_path,
        env=base_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    for step in (
        "GET /v1/models",
        "POST /api/register",
        "GET /v1/deposit",
        "credited",
        "POST /v1/chat/completions",
        "streamed",
        "POST /v1/completions",
        "GET /llms.txt",
        "MCP at /mcp",
        "GET /v1/usage",
    ):
        assert step in result.stdout, step
