"""The parent process: starts the workers, restarts one that dies, stops them all on a signal.

Workers are processes running `python -m ghostream` again, with the same
arguments plus `--worker I --runtime DIR`, rather than `multiprocessing`
children: a worker is then exactly the program a single server is (its
configuration loading, logging and exit statuses), nothing is pickled
across, and Trio's process API waits on each one in the parent's nursery.
Workers run in their own session, so a Ctrl-C in a terminal reaches the
parent alone and each worker is stopped once, with SIGTERM.

A worker that fails before its first "ready" (a port in use, a history it
cannot open) stops the whole server with its exit status, as a single
process would; one that dies later is restarted with the project's backoff.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import trio

from ghostream.backoff import Backoff
from ghostream.config import Settings
from ghostream.srt.steering import COOKIE_KEY
from ghostream.workers.link import parent_address

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILURE = 1
# A worker stops as a single server does; one that has not after this long is killed.
STOP_TIMEOUT = 20.0
REPORT_BYTES = 256


@dataclass
class Worker:
    index: int
    backoff: Backoff = field(default_factory=lambda: Backoff(0.5, 30.0, healthy_after=60.0))
    process: trio.Process | None = None
    started_at: float = 0.0
    ready_once: bool = False

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None


@dataclass(frozen=True)
class Exited:
    worker: Worker
    status: int


@dataclass(frozen=True)
class Ready:
    index: int
    pid: int


@dataclass(frozen=True)
class Signalled:
    signum: int


News = Exited | Ready | Signalled


class Parent:
    def __init__(self, count: int, arguments: list[str], runtime: Path) -> None:
        self.workers = [Worker(index) for index in range(count)]
        self.runtime = runtime
        self._command = [sys.executable, "-m", "ghostream", *arguments]
        self._environment = os.environ | {"GHOSTREAM_SERVER_WORKERS": str(count)}
        self._news_in, self._news = trio.open_memory_channel[News](math.inf)
        self._stopping = False

    async def run(self, signals: AsyncIterator[int]) -> int:
        key = os.open(self.runtime / COOKIE_KEY, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with open(key, "wb") as file:
            file.write(os.urandom(16))
        with trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as reports:
            await reports.bind(parent_address(self.runtime))
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._read_reports, reports)
                nursery.start_soon(self._forward_signals, signals)
                for worker in self.workers:
                    await self._start(worker, nursery)
                log.info(
                    "%d workers started: pids %s",
                    len(self.workers),
                    " ".join(str(worker.pid) for worker in self.workers),
                )
                status = await self._supervise(nursery)
                await self._stop_all()
                nursery.cancel_scope.cancel()
        return status

    async def _supervise(self, nursery: trio.Nursery) -> int:
        ready: set[int] = set()
        async for news in self._news:
            if isinstance(news, Signalled):
                log.info("%s received, stopping the workers", signal.Signals(news.signum).name)
                return EXIT_OK
            if isinstance(news, Ready):
                worker = self.workers[news.index]
                if worker.pid != news.pid:
                    continue
                if worker.ready_once:
                    log.info("worker %d ready again (pid %d)", news.index, news.pid)
                worker.ready_once = True
                if len(ready) < len(self.workers):
                    ready.add(news.index)
                    if len(ready) == len(self.workers):
                        pids = ", ".join(f"worker {w.index} pid {w.pid}" for w in self.workers)
                        log.info("Ghostream workers ready: %s", pids)
                continue
            worker = news.worker
            if not worker.ready_once:
                log.error(
                    "worker %d stopped before it was ready (status %s); stopping the server",
                    worker.index,
                    news.status,
                )
                return news.status if news.status > 0 else EXIT_FAILURE
            lasted = trio.current_time() - worker.started_at
            delay = worker.backoff.failed(lasted)
            log.warning(
                "worker %d (pid %s) ended unexpectedly (%s); restarting it in %.1f s",
                worker.index,
                worker.pid,
                _status_text(news.status),
                delay,
            )
            nursery.start_soon(self._restart_later, worker, delay, nursery)
        return EXIT_FAILURE

    async def _restart_later(self, worker: Worker, delay: float, nursery: trio.Nursery) -> None:
        await trio.sleep(delay)
        if not self._stopping:
            await self._start(worker, nursery)
            log.info("worker %d restarted: pid %d", worker.index, worker.pid)

    async def _start(self, worker: Worker, nursery: trio.Nursery) -> None:
        command = [*self._command, "--worker", str(worker.index), "--runtime", str(self.runtime)]
        process = await trio.lowlevel.open_process(
            command, stdin=subprocess.PIPE, start_new_session=True, env=self._environment
        )
        worker.process = process
        worker.started_at = trio.current_time()
        nursery.start_soon(self._wait, worker, process)

    async def _wait(self, worker: Worker, process: trio.Process) -> None:
        status = await process.wait()
        if not self._stopping:
            self._news_in.send_nowait(Exited(worker, status))

    async def _read_reports(self, reports: trio.socket.SocketType) -> None:
        while True:
            data = await reports.recv(REPORT_BYTES)
            match data.decode(errors="replace").split():
                case ["ready", index, pid] if index.isdigit() and pid.isdigit():
                    if int(index) < len(self.workers):
                        self._news_in.send_nowait(Ready(int(index), int(pid)))
                case _:
                    log.debug("unexpected report from a worker: %r", data[:64])

    async def _forward_signals(self, signals: AsyncIterator[int]) -> None:
        async for signum in signals:
            self._news_in.send_nowait(Signalled(signum))

    async def _stop_all(self) -> None:
        """SIGTERM to every live worker; SIGKILL to one still there after STOP_TIMEOUT."""
        self._stopping = True
        alive = [w.process for w in self.workers if w.process and w.process.returncode is None]
        for process in alive:
            process.send_signal(signal.SIGTERM)
        with trio.move_on_after(STOP_TIMEOUT):
            for process in alive:
                await process.wait()
        for process in alive:
            if process.returncode is None:
                log.warning(
                    "worker pid %d did not stop in %.0f s; killed", process.pid, STOP_TIMEOUT
                )
                process.kill()
                await process.wait()
        log.info("all workers stopped")


def _status_text(status: int) -> str:
    if status < 0:
        return f"killed by {signal.Signals(-status).name}"
    return f"exit status {status}"


async def supervise(settings: Settings, arguments: list[str]) -> int:
    """Run `settings.server.worker_count` workers until SIGINT/SIGTERM; the exit status."""
    with (
        trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals,
        tempfile.TemporaryDirectory(prefix="ghostream-") as runtime,
    ):
        parent = Parent(settings.server.worker_count, arguments, Path(runtime))
        return await parent.run(signals)
