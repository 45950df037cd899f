"""What every tutorial shares: its command line (``--quick``, ``--json PATH``)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any


def main(run: Callable[[bool], dict[str, Any]], doc: str | None) -> None:
    """Parse ``--quick`` and ``--json``, run the tutorial, write what it measured."""
    ap = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a seconds-long version")
    ap.add_argument("--json", default=None, help="write the measured numbers there")
    args = ap.parse_args()
    result = run(args.quick)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
