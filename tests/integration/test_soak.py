"""The shortened soak (issue 7): ``tools/soak.py`` against the real ``deblurd run``
process, 200 triggers of 160x120 frames as fast as the daemon accepts them.

Nothing lost (every trigger request is a result, a busy reply or an error; every accepted
one got its outcome), no errors, the daemon exits 0, and its resident memory is flat after
the warm-up (fitted growth under 5 MiB). The full run (1000+ triggers) is
``python tools/soak.py``; its numbers are in docs/reliability.md.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

TOOL = Path(__file__).resolve().parents[2] / "tools" / "soak.py"


def test_short_soak_loses_nothing_and_memory_is_flat(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    cmd = [sys.executable, str(TOOL), "--triggers", "200", "--size", "160x120",
           "--sample-s", "0.2", "--json", str(out)]  # fmt: skip
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert p.returncode == 0, p.stdout + p.stderr
    print(p.stdout)
    r = json.loads(out.read_text())
    assert r["results"] + r["busy"] + r["errors"] == r["triggers"] == 200, r
    assert r["lost"] == 0 and r["refused"] == 0
    assert r["errors"] == 0, r["error_codes"]
    assert r["results"] >= 30, r
    assert r["daemon_jobs"]["done"] == r["results"] and r["daemon_jobs"]["failed"] == 0
    assert r["exit_status"] == 0
    assert len(r["rss_mib"]) >= 5
    assert abs(r["rss_growth_after_warmup_mib"]) < 5.0, r["rss_mib"]
