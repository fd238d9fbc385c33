"""Thin wrapper: ``python bench/load.py ARGS`` is ``relaycast bench ARGS`` run from a checkout
(see docs/benchmarks.md). Example:

    python bench/load.py --ramp --viewers 400 --duration 10 --bitrate 2.5M --codec vp8 \
        --json bench-relaycast.json --plots docs/img
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from relaycast.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
