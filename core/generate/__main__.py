"""``python -m core.generate ...``: the generate command without the rest of the CLI.

Same flags as ``python -m core generate``. Handy where only this stage
is installed, and used by the tests to run (and kill -9) a real generate process.
"""

import argparse
import logging
import sys

from core.errors import StudioError
from core.generate.cli import register


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.generate")
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    args = parser.parse_args(["generate", *(sys.argv[1:] if argv is None else argv)])
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        code, _ = args.handler(args)
    except StudioError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
