"""Command line: run the server, show its configuration, hash a password, read the history.

Exit statuses: 0 done, 1 the server or a command failed at run time (a port
in use, an unreadable history), 2 the command line or the configuration is
wrong (the message names the key and the file).
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import re
import sqlite3
import sys
import time
from datetime import datetime
from pathlib import Path

import bcrypt
import yaml

from ghostream import __version__
from ghostream.config import (
    DEFAULT_PATH,
    ConfigError,
    Settings,
    WorkerRole,
    load_settings,
    reference_markdown,
)

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
RELATIVE_TIME = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
HISTORY_VIEWS = ("sessions", "shows", "rebuild")
UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}

log = logging.getLogger("ghostream")


def build_parser() -> argparse.ArgumentParser:
    # Global options are accepted before and after the command.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-c",
        "--config",
        metavar="PATH",
        default=argparse.SUPPRESS,
        help=f"configuration file (default: {DEFAULT_PATH} if it exists)",
    )
    common.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=argparse.SUPPRESS,
        help="log more (-vv for protocol details)",
    )
    parser = argparse.ArgumentParser(
        prog="ghostream",
        description="Self-hosted live-streaming server: publish over SRT, "
        "watch over SRT, WebRTC or LL-HLS.",
        epilog="Without a command, runs the server. Any key can also be set with an "
        "environment variable GHOSTREAM_<SECTION>_<KEY>, e.g. GHOSTREAM_WEB_LISTENADDRESS=:8081.",
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"ghostream {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    run = commands.add_parser("run", parents=[common], help="run the server (the default)")
    # Set by the parent process for each of its workers (server.workers > 1).
    for parser_ in (parser, run):
        parser_.add_argument(
            "--worker", type=int, default=argparse.SUPPRESS, help=argparse.SUPPRESS
        )
        parser_.add_argument("--runtime", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    config = commands.add_parser(
        "config", parents=[common], help="print the effective configuration (secrets masked)"
    )
    config.add_argument(
        "--reference",
        action="store_true",
        help="print every key with its default and environment variable (Markdown)",
    )
    commands.add_parser(
        "hash-password",
        parents=[common],
        help="read a password (prompt or stdin) and print its bcrypt hash "
        "for auth.basic.credentials",
    )
    history = commands.add_parser(
        "history",
        parents=[common],
        help="print past publish and view sessions, or shows, or rebuild the history's tables",
    )
    history.add_argument(
        "what",
        nargs="?",
        choices=HISTORY_VIEWS,
        default="sessions",
        help="sessions (the default): one line per publish or view; shows: one line per show "
        "(a publish with its reconnects): start, duration (* while live), peak and unique "
        "viewers, watch time; "
        "rebuild: make sessions, totals and shows again from the event log",
    )
    history.add_argument("--stream", metavar="ID", help="only this stream (and its variants)")
    history.add_argument(
        "--since",
        metavar="WHEN",
        help="only sessions or shows since WHEN: a date (2026-11-24, 2026-11-24T18:00) "
        "or a duration ago (30m, 2h, 7d)",
    )
    history.add_argument("--limit", type=int, default=100, help="at most N sessions or shows (100)")
    history.add_argument("--json", action="store_true", help="print JSON lines")
    return parser


def configure_logging(verbosity: int, worker: int | None = None) -> None:
    level = logging.DEBUG if verbosity >= 1 else logging.INFO
    who = "" if worker is None else f"[worker {worker}] "
    logging.basicConfig(
        level=level,
        stream=sys.stderr,
        format=f"%(asctime)s %(levelname)-7s {who}%(name)s: %(message)s",
        datefmt="%Y-%m-%d %H:%M:%S",
    )
    if verbosity < 2:
        # Protocol-level chatter is only for -vv.
        logging.getLogger("ghostream.srt").setLevel(max(level, logging.INFO))
        for library in ("aioice", "aiortc"):
            logging.getLogger(library).setLevel(logging.WARNING)
    logging.getLogger("hypercorn").setLevel(logging.WARNING)
    logging.getLogger("ghostream.http").setLevel(logging.WARNING)


def parse_since(text: str, now: float | None = None) -> float:
    now = time.time() if now is None else now
    match = RELATIVE_TIME.fullmatch(text.strip())
    if match:
        return now - float(match.group(1)) * UNIT_SECONDS[match.group(2)]
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise ConfigError(
            f"--since {text!r}: expected a date like 2026-11-24 or a duration like 2h"
        ) from None


def hash_password() -> int:
    if sys.stdin.isatty():
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            print("ghostream: the passwords differ", file=sys.stderr)
            return EXIT_USAGE
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        print("ghostream: the password is empty", file=sys.stderr)
        return EXIT_USAGE
    if ":" in password:
        # The stream key is id:password; a colon is allowed but worth knowing about.
        print("ghostream: note: the password contains ':'", file=sys.stderr)
    print(bcrypt.hashpw(password.encode(), bcrypt.gensalt()).decode())
    return EXIT_OK


def show_history(settings: Settings, args: argparse.Namespace) -> int:
    from ghostream.history import queries
    from ghostream.history.log import open_for_reading, rebuild_projections

    since = parse_since(args.since) if args.since else None
    path = settings.history.database
    try:
        if args.what == "rebuild":
            count = rebuild_projections(path)
            print(f"rebuilt sessions, totals and shows of {path} from {count} events")
            return EXIT_OK
        db = open_for_reading(path)
        read = queries.shows if args.what == "shows" else queries.read_sessions
        rows = read(db, stream=args.stream, since=since, limit=args.limit)
        if args.what == "shows":
            from ghostream.outputs.recording import with_recordings

            rows = with_recordings(settings.recording_directory, rows)
    except (OSError, sqlite3.Error) as exc:
        print(f"ghostream: cannot read the history {path}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    line = _show_line if args.what == "shows" else _session_line
    if rows and not args.json and args.what == "shows":
        print(SHOWS_HEADER)
    for row in reversed(rows):
        print(json.dumps(row) if args.json else line(row))
    if not rows and not args.json:
        print(f"no {args.what}", file=sys.stderr)
    return EXIT_OK


def _session_line(session: dict) -> str:
    started = datetime.fromtimestamp(session["started"]).strftime("%Y-%m-%d %H:%M:%S")
    ended = session["ended"]
    duration = f"{ended - session['started']:8.1f}s" if ended is not None else "    live"
    return (
        f"{started} {duration} {session['kind']:<7} {session['stream']:<20} "
        f"{session['protocol']:<6} {session['peer']:<22} {session['bytes']:>12} B  "
        f"{session['end_reason'] or ''}"
    )


SHOWS_HEADER = (
    f"{'STARTED':<19} {'DURATION':>9} {'STREAM':<20} {'PEAK':>5} {'UNIQUE':>6} "
    f"{'VIEWS':>6} {'WATCH TIME':>10} {'AVG WATCH':>9} RECORDING"
)


def _show_line(show: dict) -> str:
    started = datetime.fromtimestamp(show["started"]).strftime("%Y-%m-%d %H:%M:%S")
    duration = _duration(show["duration"]) + ("*" if show["live"] else " ")
    return (
        f"{started} {duration:>9} {show['stream']:<20} {show['peak_viewers']:>5} "
        f"{show['unique_viewers']:>6} {show['views']:>6} {_duration(show['watch_seconds']):>10} "
        f"{_duration(show['average_watch_seconds']):>9} {_recording(show.get('recording'))}"
    )


def _recording(recording: dict | None) -> str:
    if recording is None:
        return "-"
    state = "recording" if recording["recording"] else "" if recording["complete"] else "partial"
    return f"{recording['bytes'] / 1e6:.1f} MB {_duration(recording['duration'])} {state}".rstrip()


def _duration(seconds: float) -> str:
    """1h02m, 4m05s, 12s: short enough for a column."""
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def main(argv: list[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(arguments)
    worker_index = getattr(args, "worker", None)
    configure_logging(getattr(args, "verbose", 0), worker_index)
    command = args.command or "run"
    if command == "hash-password":
        return hash_password()
    try:
        settings = load_settings(getattr(args, "config", None))
        if command == "config" and args.reference:
            print(reference_markdown(), end="")
            return EXIT_OK
        if command == "config":
            print(f"# from {settings.source}")
            print(yaml.safe_dump(settings.to_yaml_dict(mask_secrets=True), sort_keys=False), end="")
            return EXIT_OK
        if command == "history":
            return show_history(settings, args)
    except ConfigError as exc:
        print(f"ghostream: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    from ghostream.server import run

    worker = None
    if worker_index is not None:
        count = settings.server.worker_count
        worker = WorkerRole(worker_index, count, Path(getattr(args, "runtime", ".")))
    else:
        log.info("Ghostream %s starting with configuration from %s", __version__, settings.source)
    try:
        return run(settings, arguments, worker)
    except KeyboardInterrupt:
        # A second Ctrl-C during shutdown: everything is already closed, stop now.
        log.warning("interrupted again during shutdown; stopped")
        return 130
