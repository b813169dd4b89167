"""Runs the VM boots a test session starts early, one after another, outside the pytest process.

``python -m tests.vm.boot_runner SPEC.json``: SPEC is a list of {"command": [...], "timeout": s, "log": path}. Each
boot's output goes to its log, then "<log>.done" gets {"returncode", "seconds", "timed_out"}. Its own process, so the
pytest process holds no file or thread of the boots: tests that count their own descriptors see none come or go.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time


def main(spec_path: str) -> int:
    with open(spec_path) as f:
        boots = json.load(f)
    for boot in boots:
        started = time.monotonic()
        timed_out = False
        with open(boot["log"], "wb") as log:
            proc = subprocess.Popen(boot["command"], stdout=log, stderr=subprocess.STDOUT)
            try:
                returncode = proc.wait(timeout=boot["timeout"])
            except subprocess.TimeoutExpired:
                proc.kill()
                returncode = proc.wait()
                timed_out = True
        done = {"returncode": returncode, "seconds": round(time.monotonic() - started), "timed_out": timed_out}
        with open(boot["log"] + ".done", "w") as f:
            json.dump(done, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
