"""`python -m workbench.netboot serve [--inventory PATH]`: the networking node as a process of its own.

`fab cloud.up` runs the node this way in the background, so that it outlives
the command; `fab netboot.stop` (or `fab cloud.down`) ends it. The
configuration comes from $WORKBENCH_CONFIG, as for every workbench process.
"""

from __future__ import annotations

import argparse
import sys

from workbench.core import config as wb_config
from workbench.core.errors import WorkbenchError
from workbench.netboot import inventory, node


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workbench.netboot")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the networking node until SIGTERM")
    serve.add_argument("--inventory", default="", help="the inventory (default: netboot/inventory.toml)")
    args = parser.parse_args(argv)
    try:
        config = wb_config.load()
        node.serve(config, inventory.load(config, args.inventory or None))
    except WorkbenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
