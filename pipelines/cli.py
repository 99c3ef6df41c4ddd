"""The ``fewtrunc`` command line: one sub-command per module, each with its own ``--help``.

A command module exposes ``HELP`` (one line), ``DESCRIPTION`` (what it teaches in ``--help``),
``add_arguments(parser)`` and ``main(args) -> int``; heavy imports live inside ``main`` so that
``fewtrunc --help`` stays instant (importing every command module costs nothing: none imports
torch, Ray or Beam before its ``main`` runs). ``COMMANDS`` is the registry: a new command is one
module plus one line there.

What reaches the terminal is redacted (``pipelines.infra.storage.redact``): fewtrunc's errors are when
they are made; an unexpected exception's traceback is printed redacted here, as a URL's
password or signature may be in any library's message.
"""
from __future__ import annotations

import argparse
import sys
import traceback

from pipelines.commands import inspect, pack_demo, report, run, verify
from pipelines.infra.errors import FewtruncError
from pipelines.infra.storage.redact import redact_text
from training.commands import score, train

# name -> command module; the order is the order shown in --help.
COMMANDS = {
    "pack-demo": pack_demo,
    "run": run,
    "verify": verify,
    "inspect": inspect,
    "report": report,
    "train": train,
    "score": score,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fewtrunc",
        description="Tokenize corpora, Best-fit Pack documents into training sequences without "
        "needless truncation, and write Arrow shards; plus the training-side tools (EL2N pruning, "
        "Error Norm Truncation, loss truncation). Run `fewtrunc COMMAND --help` for each command.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in COMMANDS.items():
        p = sub.add_parser(
            name,
            help=module.HELP,
            description=getattr(module, "DESCRIPTION", module.HELP),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(p)
        p.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(getattr(args, "_module", None), "PASS_UNKNOWN_FLAGS", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra = extra
    if not getattr(args, "_module", None):
        parser.print_help()
        return 2
    try:
        return int(args._module.main(args) or 0)
    except FewtruncError as exc:
        print(redact_text(f"fewtrunc {args.command}: error: {exc}"), file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and closed early: not an error
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print(f"fewtrunc {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception:  # a bug, or a library's error not translated yet: its traceback, redacted
        print(redact_text(traceback.format_exc()), end="", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
