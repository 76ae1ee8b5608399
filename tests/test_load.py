"""16 readers and 4 writers at once: nothing fails, every byte checks out, memory stays bounded."""

import json
import subprocess
import sys
from pathlib import Path

from conftest import fuse_unusable, skip_unless_root

LOAD = Path(__file__).resolve().parent.parent / "bench" / "load.py"


def test_sixteen_readers_and_four_writers():
    skip_unless_root("bench/load.py mounts as root")
    assert fuse_unusable() is None, fuse_unusable()
    result = subprocess.run([sys.executable, str(LOAD), "--seconds", "8", "--json"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    figures = json.loads(result.stdout)
    assert figures["errors"] == [] and figures["lost_or_wrong_in_store"] == []
    assert figures["reads"] > 0 and figures["writes"] > 0
    assert figures["daemon_peak_rss_mib"] < 400
