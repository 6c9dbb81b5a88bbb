"""The ``m3e-rag`` command's shell: the top-level parser, dispatch to the subcommands, errors and exit codes.

A stable interface that scripts depend on: ``--json`` prints machine-readable output on stdout,
progress bars go to stderr (only on a terminal), and bad input exits non-zero with a one-line
``error: ...`` on stderr. The model comes from ``--model`` or ``$M3E_MODEL``; for an existing index
with neither given, the model recorded in the index is used. Each command group adds its own subparsers
and handlers: :mod:`~m3e_rag.cli.ingest` (ingest, search), :mod:`~m3e_rag.cli.evaluate` (eval),
:mod:`~m3e_rag.cli.index` (info, doctor), :mod:`~m3e_rag.cli.serve` (serve) and :mod:`~m3e_rag.cli.choose`
(models, similarity, compare).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

from m3e_rag.cli.adopt import ADOPT_COMMANDS, add_adopt_command
from m3e_rag.cli.choose import CHOOSE_COMMANDS, add_choose_commands
from m3e_rag.cli.delete import DELETE_COMMANDS, add_delete_command
from m3e_rag.cli.evaluate import EVAL_COMMANDS, add_eval_command
from m3e_rag.cli.index import INDEX_COMMANDS, add_index_commands
from m3e_rag.cli.ingest import INGEST_COMMANDS, add_ingest_commands
from m3e_rag.cli.options import Parser, name_the_flags
from m3e_rag.cli.output import escape_text
from m3e_rag.cli.serve import SERVE_COMMANDS, add_serve_command
from m3e_rag.errors import IndexDamagedError, M3ERagError

__all__ = ["main", "build_parser"]

#: Exit codes: bad input or a refused operation (the message says what to do), and a bug in m3e-rag;
#: a damaged index exits with ``m3e_rag.index.doctor.EXIT_DAMAGED`` (as ``m3e-rag doctor`` does).
EXIT_INPUT = 2
EXIT_BUG = 1


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests)."""
    parser = Parser(
        prog="m3e-rag", description="M3E retrieval over Chroma: ingest files, search them, evaluate retrieval."
    )
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log progress details and the model's loading bars to stderr")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    add_ingest_commands(sub)  # ingest, search
    add_eval_command(sub)
    add_index_commands(sub)  # info, doctor
    add_delete_command(sub)
    add_adopt_command(sub)
    add_serve_command(sub)
    add_choose_commands(sub)  # models, similarity, compare
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``m3e-rag`` command; returns the exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    if not args.verbose:
        # An application may quiet its libraries: transformers draws a bar for every weight load. Through
        # the environment (read when transformers loads), so commands that load no model never import it.
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        if "transformers" in sys.modules:
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
    commands = {**INGEST_COMMANDS, **EVAL_COMMANDS, **INDEX_COMMANDS, **SERVE_COMMANDS, **CHOOSE_COMMANDS,
                **ADOPT_COMMANDS, **DELETE_COMMANDS}
    handler = commands[args.command]
    try:
        return handler(args)
    except IndexDamagedError as exc:
        from m3e_rag.index.doctor import EXIT_DAMAGED  # sqlite3, uuid, tempfile: loaded only for a damaged index

        sys.stderr.write(f"error: {_one_line(exc)}\n")
        return EXIT_DAMAGED
    except M3ERagError as exc:
        # The library names its Python arguments (chunk_tokens=); a command-line user typed flags.
        sys.stderr.write(f"error: {name_the_flags(_one_line(exc))}\n")
        return EXIT_INPUT
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted\n")
        return 130
    except Exception as exc:  # a bug in m3e-rag: say so, briefly; the traceback with -v
        if args.verbose:
            traceback.print_exc()
        where = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
        at = f" at {Path(where.filename).name}:{where.lineno}" if where else ""
        sys.stderr.write(
            f"error: unexpected {type(exc).__name__}{at}: {_one_line(exc)} (a bug in m3e-rag; rerun with -v for the "
            "traceback and report it)\n"
        )
        return EXIT_BUG


def _one_line(exc: BaseException) -> str:
    """The exception's message on one line (the CLI prints exactly one ``error:`` line), controls escaped."""
    return escape_text(" ".join(str(exc).split())) or type(exc).__name__


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
