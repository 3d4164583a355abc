"""The ``affinevae`` command line: a thin layer over the Python API.

Each sub-command lives in its own module of this package and registers itself in
:data:`COMMANDS` with an ``add_arguments(parser)`` and a ``run(args) -> int``.
User errors (:class:`affinevae.errors.AffineVAEError`) and command lines that do not parse print one
line to stderr and exit 2.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import logging
import os
import signal
import re
import sys
import warnings
from typing import Optional, Sequence

from ..errors import AffineVAEError
from ..limits import memory_limit_set
from ..plugins import load_plugins, loaded_plugins
from ..registry import Registry

COMMANDS: Registry = Registry("command")

# Modules that define sub-commands, in the order `affinevae --help` lists them.
COMMAND_MODULES = ["train", "encode", "sample", "info", "demo", "patches", "map", "align", "amortise", "sweep", "report",
                   "plot"]


def _load_commands() -> None:
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}")


class UsageError(Exception):
    """A command line that does not parse (unknown option, missing or malformed argument)."""


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (:class:`UsageError`, printed by :func:`main`
    as ``affinevae: error: ...`` with exit status 2) instead of argparse's usage block."""

    def error(self, message: str):
        """Raise ``message`` as a one-line :class:`UsageError` naming ``--help`` (not argparse's usage and exit)."""
        raise UsageError(f"{message} (see '{self.prog} --help')")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every registered sub-command."""
    from .. import __version__

    _load_commands()
    parser = OneLineParser(prog="affinevae", description="Content/pose representation learning for images: "
                                     "AE, VAE, cVAE, rVAE, crVAE and affine VAE.")
    plugins = [p.name for p in loaded_plugins() if p.error is None]
    parser.add_argument("--version", action="version", version=f"affinevae {__version__}"
                        + (f" (plugins: {', '.join(plugins)})" if plugins else ""))
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS.in_order():
        cmd = COMMANDS.get(name)
        p = sub.add_parser(name, help=cmd.help, description=cmd.help)
        cmd.add_arguments(p)
        p.add_argument("--max-memory", metavar="SIZE",
                       help="refuse data, models and searches that would need more memory than SIZE (e.g. 4G, "
                            "512M; default: the memory available now)")
        p.set_defaults(_run=cmd.run)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM (``timeout``, SLURM, ``docker stop``) raised as an interrupt, so that a command stops as
    on Ctrl-C: a training run keeps its last checkpoint, or is removed before its first one."""


def _terminate(signum, frame) -> None:
    raise Terminated()


@contextlib.contextmanager
def terminate_as_interrupt():
    """Within the block, SIGTERM raises :class:`Terminated` (main thread only; elsewhere a no-op)."""
    try:
        old = signal.signal(signal.SIGTERM, _terminate)
    except ValueError:  # not the main thread: signals cannot be caught here
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


#: Options whose value may start with a minus sign (argparse would take ``-90:90:30`` for an option), and
#: the pattern of such a value: numbers and ``:,.``, or for a pixel size a number and its unit (``-1arcsec``
#: then reaches the size's own check, "must be a finite number > 0", not argparse's "expected one argument").
DASH_VALUE_OPTIONS = {"--angles": r"-[0-9.][0-9.:,eE+-]*", "--sweep-angles": r"-[0-9.][0-9.:,eE+-]*",
                      "--bounds": r"-[0-9.][0-9.:,eE+-]*", "--dims": r"-[0-9.][0-9.,eE+-]*",
                      "--pixel-size": r"-[0-9.]\S*(?:\s*/\s*\S+)?|-[0-9.][0-9.eE+-]*\s+\S+"}


def join_dash_values(argv: Sequence[str]) -> list[str]:
    """``--angles -90:90:30`` as ``--angles=-90:90:30`` (for :data:`DASH_VALUE_OPTIONS` only, and
    only a value of their pattern), so that such a value is written as for any option."""
    out: list[str] = []
    for a in argv:
        if out and out[-1] in DASH_VALUE_OPTIONS and re.fullmatch(DASH_VALUE_OPTIONS[out[-1]], a):
            out[-1] = f"{out[-1]}={a}"
        else:
            out.append(a)
    return out


def _zarr_pending_task(record: logging.LogRecord) -> bool:
    """A logging filter for the ``asyncio`` logger: False (dropped) for the "Task was destroyed but it is
    pending!" record of a zarr read that an error (a corrupt chunk) ended, whose task the interpreter
    collects after the one-line error; every other record passes."""
    text = str(record.msg)
    return not (text.startswith("Task was destroyed but it is pending") and "zarr" in record.getMessage())


def load_plugins_said() -> None:
    """:func:`affinevae.plugins.load_plugins` before the options are read (a plugin's model is a
    ``--model`` choice), each plugin that fails to import said in one ``affinevae: warning:`` line on stderr."""
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        load_plugins()
    for w in said:
        print(f"affinevae: warning: {w.message}", file=sys.stderr)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``affinevae`` console script; returns the exit status (143 after SIGTERM,
    130 after Ctrl-C)."""
    aio = logging.getLogger("asyncio")
    if _zarr_pending_task not in aio.filters:
        aio.addFilter(_zarr_pending_task)
    load_plugins_said()
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(join_dash_values(sys.argv[1:] if argv is None else argv))
        if extra:
            raise UsageError(f"unrecognized arguments: {' '.join(extra)} (see 'affinevae {args.command} --help')")
    except UsageError as exc:
        print(f"affinevae: error: {exc}", file=sys.stderr)
        return 2
    # catch_warnings restores the filters and showwarning, not formatwarning: put it back ourselves, so a
    # caller's process (a notebook, a test) keeps its own format after the command
    formatwarning = warnings.formatwarning
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            # deprecations inside torch itself are not the user's to act on
            warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch(\.|$)")
            warnings.formatwarning = lambda msg, cat, *a, **k: f"affinevae: warning: {msg}\n"
            import matplotlib

            # names from the command line (run directories, titles) are drawn literally, never as mathtext
            with memory_limit_set(args.max_memory), matplotlib.rc_context({"text.parse_math": False}), \
                    terminate_as_interrupt():
                return int(args._run(args) or 0)
    except AffineVAEError as exc:
        print(f"affinevae: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader went away (`affinevae info --json | head`): stop quietly
        # stdout's descriptor now writes to /dev/null, so that the interpreter's flush at exit does not
        # fail again; the descriptor opened for that is closed (a caller's process keeps no extra one)
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(devnull, sys.stdout.fileno())
            finally:
                os.close(devnull)
        except (OSError, ValueError, AttributeError, io.UnsupportedOperation):  # no real descriptor (a StringIO)
            pass
        return 141
    except OSError as exc:  # the machine's refusal (permissions, disk, a file in the way) not caught nearer
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        print(f"affinevae: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except Terminated:
        print("affinevae: terminated", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("affinevae: interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.formatwarning = formatwarning


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
