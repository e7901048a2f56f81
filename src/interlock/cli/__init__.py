"""The ``interlock`` command line (see docs/cli.md).

``main(argv) -> int`` never calls ``sys.exit``; the console script and ``python -m interlock``
do. Exit codes: 0 success, 1 run failed or crashed, 2 usage or pipeline-definition error,
3 store unreachable, 4 run cancelled, 5 run not finished (still running or waiting for a
human).
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Sequence
from typing import TextIO

from interlock.errors import InterlockError

from .commands import (
    Streams,
    cmd_cancel,
    cmd_graph,
    cmd_resume,
    cmd_retry,
    cmd_run,
    cmd_status,
    cmd_validate,
)
from .common import (
    DEFAULT_STORE,
    EXIT_CANCELLED,
    EXIT_FAILED,
    EXIT_STORE,
    EXIT_USAGE,
    CliError,
    is_store_error,
)
from .worker import cmd_worker

__all__ = ["build_parser", "main"]


def _store_option(parser: argparse.ArgumentParser, required: bool) -> None:
    if required:
        parser.add_argument("--store", required=True, metavar="URL",
                            help="store URL, e.g. sqlite:///interlock.db or redis://host/0")
    else:
        parser.add_argument("--store", default=os.environ.get("INTERLOCK_STORE", DEFAULT_STORE),
                            metavar="URL",
                            help="store URL (default: $INTERLOCK_STORE or %(default)s)")


def _plugins_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--plugins", action="append", metavar="MODULE",
                        help="import MODULE first (registers @plugin functions); repeatable, "
                             "comma-separated lists accepted")


def _execution_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workers", type=int, default=4, metavar="N",
                        help="parallel workers (default: %(default)s)")
    parser.add_argument("--processes", action="store_true",
                        help="run plugins in N worker processes instead of threads")
    _plugins_option(parser)
    parser.add_argument("--quiet", "-q", action="store_true",
                        help="no progress bar and no table; print only the run id")
    _limit_option(parser)


def _limit_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--limit", action="append", metavar="NAME=N",
                        help="raise or lower a kernel limit (interlock.Limits), e.g. "
                             "max_outputs_per_task=100000; repeatable")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="interlock",
                                     description="Run and inspect Interlock DAG pipelines.")
    parser.add_argument("--log-level", default="WARNING",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="log level of the 'interlock' loggers on stderr")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="validate a pipeline, start a run and execute it")
    run.add_argument("pipeline", metavar="PIPELINE", help="pipeline file (.yaml, .yml, .json)")
    run.add_argument("--input", action="append", metavar="KEY=VALUE",
                     help="a run input value (JSON if it parses, else text); repeatable")
    run.add_argument("--input-json", metavar="FILE", help="run input as a JSON object file "
                                                          "('-' reads stdin)")
    _store_option(run, required=False)
    run.add_argument("--run-id", metavar="ID", help="run id (default: random)")
    _execution_options(run)
    run.set_defaults(handler=cmd_run)

    validate = sub.add_parser("validate", help="validate a pipeline file; nothing is written")
    validate.add_argument("pipeline", metavar="PIPELINE")
    _plugins_option(validate)
    validate.add_argument("--skip-plugins", action="store_true",
                          help="check the definition only, not that plugins resolve")
    validate.set_defaults(handler=cmd_validate)

    status = sub.add_parser("status", help="show a run (exit code reflects its state)")
    status.add_argument("run_id", metavar="RUN_ID")
    _store_option(status, required=False)
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")
    status.set_defaults(handler=cmd_status)

    for name, handler, text in (
        ("resume", cmd_resume, "continue an interrupted run"),
        ("retry", cmd_retry, "retry a failed, crashed or cancelled run from its failure "
                             "boundary, then execute it"),
    ):
        command = sub.add_parser(name, help=text)
        command.add_argument("run_id", metavar="RUN_ID")
        _store_option(command, required=False)
        _execution_options(command)
        command.set_defaults(handler=handler)

    cancel = sub.add_parser("cancel", help="cancel a run")
    cancel.add_argument("run_id", metavar="RUN_ID")
    _store_option(cancel, required=False)
    cancel.add_argument("--reason", default="cancelled from the command line")
    cancel.set_defaults(handler=cmd_cancel)

    graph = sub.add_parser("graph", help="print a pipeline as Mermaid or DOT")
    graph.add_argument("pipeline", metavar="PIPELINE")
    graph.add_argument("--format", choices=["mermaid", "dot"], default="mermaid")
    graph.set_defaults(handler=cmd_graph)

    worker = sub.add_parser("worker", help="serve tasks from a queue until SIGTERM/Ctrl-C")
    _store_option(worker, required=True)
    worker.add_argument("--queue", metavar="URL",
                        help="queue URL (interlock.queues entry points; default: the store URL)")
    _plugins_option(worker)
    worker.add_argument("--batch", type=int, default=64, metavar="N",
                        help="claim and complete up to N fast tasks per store call (default 64; "
                             "1 = one at a time)")
    worker.add_argument("--concurrency", type=int, default=1, metavar="N",
                        help="worker threads (default: %(default)s)")
    _limit_option(worker)
    worker.add_argument("--receive-timeout", type=float, default=1.0, metavar="SECONDS",
                        help=argparse.SUPPRESS)
    worker.set_defaults(handler=cmd_worker)
    return parser


def _configure_logging(level: str, stream: TextIO) -> tuple[logging.Handler, int]:
    """Log ``interlock.*`` records of ``level`` and above to ``stream`` (the CLI's stderr)."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("interlock")
    previous = logger.level
    logger.addHandler(handler)
    logger.setLevel(level)
    return handler, previous


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), run the command, return its exit code."""
    io = Streams()
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    handler, previous_level = _configure_logging(args.log_level, io.err)
    try:
        code: int = args.handler(args, io)
        return code
    except CliError as exc:
        io.error(f"error: {exc}")
        return exc.code
    except KeyboardInterrupt:
        io.error("interrupted")
        return EXIT_CANCELLED
    except InterlockError as exc:
        if is_store_error(exc):
            io.error(f"error: store unavailable: {' '.join(str(exc).split())}")
            return EXIT_STORE
        io.error(f"error: {' '.join(str(exc).split())}")
        return EXIT_USAGE
    except Exception as exc:
        if is_store_error(exc):
            io.error(f"error: store failure: {type(exc).__name__}: {exc}")
            return EXIT_STORE
        logging.getLogger("interlock.cli").exception("unexpected error")
        io.error(f"error: {type(exc).__name__}: {exc}")
        return EXIT_FAILED
    finally:
        logging.getLogger("interlock").removeHandler(handler)
        logging.getLogger("interlock").setLevel(previous_level)
