"""`make demo`: a local hub, two providers, and the example jobs split across them.

Starts everything as real processes on loopback, runs ``examples/word_freq.py`` (with its
progress bar on a terminal) and ``examples/sha_search.py``, prints their results and the
summary, and stops everything again. Logs land in ``.demo/``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from kiln.testing import LocalCluster

HERE = Path(__file__).resolve().parent


def main() -> None:
    with LocalCluster(Path(".demo")) as cluster:
        url = cluster.start_hub()
        print(f"hub at {url}")
        for name in ("demo-p1", "demo-p2"):
            cluster.start_provider(name, cpus=1, memory="1GiB", wait=False)
        cluster.wait_for_providers({"demo-p1", "demo-p2"})
        print("providers demo-p1 and demo-p2 offer kiln-busybox:latest\n")
        subprocess.run([sys.executable, str(HERE / "word_freq.py"), "--hub", url], check=True)
        print()
        subprocess.run([sys.executable, str(HERE / "sha_search.py"), "--hub", url, "--space", "2000"], check=True)
    print("\nhub and providers stopped; logs in .demo/")


if __name__ == "__main__":
    main()
