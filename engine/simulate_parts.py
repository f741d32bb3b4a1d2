"""A simulation split over several processes, one part of the contacts each.

:func:`engine.shards.plan_shards` splits the history into parts whose contacts never
meet. Each part runs in a process of its own, with the same runner, store and virtual
clock as a one-process simulation (:func:`engine.simulate.simulate`), from the same start.
The parts only have to agree on when the clock stops. One process stops once no wait or
quiet spell is pending anywhere; until then, cron fan-outs and decay ticks go on for every
contact. So the parts stop, the coordinator takes the latest moment any of them stopped at,
and every part runs its timers up to that moment. A cron fan-out on the way can start new
waits, which sends that part on again, until all of them are idle at one moment. That
moment is the first at which every part is idle, where one process would stop too.

Each part writes its summary to a file, in pieces as it reads them, and ends; then the
coordinator puts the pieces together in the order a one-process summary has
(:class:`engine.views.Summary`), so no part still holds its memory meanwhile.
"""

from __future__ import annotations

import os
import pickle
import socket
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Callable
from datetime import datetime
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from engine.errors import LeadflowError
from engine.runner import gc_paused
from engine.shards import plan_shards
from engine.simulate import (
    Progress,
    Simulation,
    _epoch,
    _next_timer,
    first_timestamp,
    read_event_file,
    run_clock,
    run_history,
    simulation_store,
)
from engine.validation import Validation, validate_paths
from engine.views import Summary, summary_pieces


class SimulationPartFailed(LeadflowError):
    """A part of a split simulation failed; the message carries its traceback."""


def simulate_in_parts(
    paths: list[Path],
    events_path: Path,
    until: datetime | None,
    progress: Progress | None,
    jobs: int,
    least: int,
) -> Simulation | None:
    """Simulate in up to ``jobs`` processes; None when the history does not split into
    two parts or more (of ``least`` messages each, if given)."""
    parts: list[_Part] = []
    # the parts' stores and summaries live here: whatever becomes of a part, they go
    with tempfile.TemporaryDirectory(prefix="leadflow-parts-") as name:
        folder = Path(name)
        try:
            for number in range(_early_parts(events_path, jobs, least)):
                # they import the engine and check the workflows while the plan is made
                parts.append(_Part.start(number, paths, events_path, folder))
            with events_path.open("rb") as handle:
                plan = plan_shards(handle, jobs, least)
                handle.seek(0)
                anchor = first_timestamp(handle)  # one "now" for lines without a timestamp
            if plan.parts < 2:
                return None
            for part in parts[plan.parts :]:
                part.end()
            del parts[plan.parts :]
            for number in range(len(parts), plan.parts):
                parts.append(_Part.start(number, paths, events_path, folder))
            for part in parts:
                part.send((plan.line_part, anchor))
            return _coordinate(parts, until, progress, folder)
        finally:
            for part in parts:
                part.end()


EARLY_START_BYTES = 4 << 20
"""A history this big or bigger takes longer to plan than a part takes to start (about
0.7 s), so its parts' processes start first and import the engine meanwhile."""

BYTES_PER_MESSAGE = 128
"""A guess at the size of a message in a file, for the parts worth starting early: a
track call with its ids, timestamp, messageId and a property or two takes 150 bytes or
more. A file of smaller messages starts the rest of its parts after the plan."""


def _early_parts(events_path: Path, jobs: int, least: int) -> int:
    """How many parts' processes to start before the plan is made, judged by the file's
    size (the ones the plan does not need are ended)."""
    try:
        size = events_path.stat().st_size
    except OSError:
        return 0
    if size < EARLY_START_BYTES:
        return 0
    if least == 0:
        return jobs
    likely = size // (least * BYTES_PER_MESSAGE)
    return min(jobs, likely) if likely >= 2 else 0


class _Part:
    """A part's process and the connection to it (a socket pair: the child gets its end
    by descriptor, so it imports nothing of the caller's, whatever ``__main__`` is)."""

    __slots__ = ("connection", "number", "process", "progress")

    def __init__(self, number: int, connection: Connection, process: subprocess.Popen[bytes]):
        self.number = number
        self.connection = connection
        self.process = process
        self.progress: tuple[int, int] | None = None

    @classmethod
    def start(cls, number: int, paths: list[Path], events_path: Path, folder: Path) -> _Part:
        ours, theirs = socket.socketpair()
        home = str(Path(__file__).resolve().parent.parent)  # where ``engine`` is
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [home, env.get("PYTHONPATH")]))
        try:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    "from engine.simulate_parts import part_main; part_main()",
                    str(theirs.fileno()),
                    str(number),
                    str(folder),
                    str(events_path),
                    *(str(p) for p in paths),
                ],
                pass_fds=[theirs.fileno()],
                env=env,
            )
        finally:
            theirs.close()
        return cls(number, Connection(ours.detach()), process)

    def send(self, message: Any) -> None:
        try:
            self.connection.send(message)
        except OSError:  # it ended: say how
            raise self.failure() from None

    def failed(self, trace: str) -> SimulationPartFailed:
        return SimulationPartFailed(f"part {self.number} of the simulation failed:\n{trace}")

    def failure(self) -> SimulationPartFailed:
        """Why the part ended: the error it sent before it did, if it did (a part that
        fails before it reads anything sends its traceback and ends), else its exit
        code."""
        try:
            if self.connection.poll(0):
                message = self.connection.recv()
                if message[0] == "error":
                    return self.failed(message[1])
        except (EOFError, OSError):
            pass
        try:
            code = self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            code = None
        return SimulationPartFailed(
            f"part {self.number} of the simulation ended without an answer (exit code {code})"
        )

    def stop(self) -> None:
        """Wait for a part that has said all it had to say to end."""
        self.connection.close()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.end()

    def end(self) -> None:
        """End the part now, whatever it is doing (another part failed)."""
        self.connection.close()
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


def _coordinate(
    parts: list[_Part], until: datetime | None, progress: Progress | None, folder: Path
) -> Simulation:
    def report(part: _Part, message: tuple[Any, ...]) -> None:
        part.progress = (message[1], message[2])
        known = [p.progress for p in parts if p.progress is not None]
        if progress is not None and len(known) == len(parts):
            progress(sum(d for d, _ in known), sum(t for _, t in known))

    loaded = _gather(parts, "loaded", report)
    firsts = [first for first, _ in loaded if first is not None]
    count = sum(number for _, number in loaded)
    start = min(firsts) if firsts else None
    _send(parts, ("start", start or _epoch(), until))
    ended = _gather(parts, "ended", report)
    while until is None:
        # the parts stopped where their own waits ran out; one process would have gone on
        # to the latest of those moments, firing timers for everyone on the way
        latest = max(moment for moment, _ in ended)
        _send(parts, ("advance", latest))
        ended = _gather(parts, "ended", report)
        if not any(pending for _, pending in ended):
            break
    last = max(moment for moment, _ in ended)
    # each part writes its summary to a file and ends; they are read once all have
    # ended, so no part's memory is still held while the whole summary is put together
    files = [folder / f"part-{part.number}.pickle" for part in parts]
    for part, file in zip(parts, files, strict=True):
        part.send(("summary", str(file)))
    _gather(parts, "summary", report)
    for part in parts:
        part.stop()
    with gc_paused():
        return _merge(files, count, start, last, len(parts))


def _merge(
    files: list[Path], count: int, start: datetime | None, last: datetime, parts: int
) -> Simulation:
    result = Summary(merged=True)
    for file in files:
        with file.open("rb") as pieces:
            while True:
                try:
                    kind, piece = pickle.load(pieces)
                except EOFError:
                    break
                result.add(kind, piece)
    done = result.done()
    return Simulation(done, count, start, last if count else None, parts, result.failed)


def _send(parts: list[_Part], message: tuple[Any, ...]) -> None:
    for part in parts:
        part.send(message)


def _gather(
    parts: list[_Part], kind: str, report: Callable[[_Part, tuple[Any, ...]], None]
) -> list[Any]:
    """One answer of ``kind`` from every part, in part order; progress reports that
    come on the way go to ``report``."""
    answers: dict[int, Any] = {}
    by_connection = {part.connection: part for part in parts}
    while len(answers) < len(parts):
        for ready in wait([p.connection for p in parts if p.number not in answers]):
            assert isinstance(ready, Connection)
            part = by_connection[ready]
            try:
                message = ready.recv()
            except (EOFError, OSError):
                raise part.failure() from None
            if message[0] == "progress":
                report(part, message)
            elif message[0] == "error":
                raise part.failed(message[1])
            elif message[0] == kind:
                answers[part.number] = message[1] if len(message) == 2 else message[1:]
            else:  # pragma: no cover - a protocol slip is a bug, said plainly
                raise SimulationPartFailed(f"part {part.number} sent {message[0]!r}, not {kind!r}")
    return [answers[number] for number in range(len(parts))]


def part_main() -> None:
    """A part's process (``sys.argv``: the connection's descriptor, the part's number,
    the coordinator's folder, the event file, the workflow paths): answers the
    coordinator until it has sent its summary, or the error that stopped it."""
    descriptor, number, folder, events_path, *paths = sys.argv[1:]
    connection = Connection(int(descriptor))
    try:
        workflows = [Path(p) for p in paths]
        validation = validate_paths(workflows)  # valid: the coordinator checked already
        line_part, anchor = connection.recv()
        _serve(
            connection,
            validation,
            workflows,
            Path(events_path),
            (line_part, int(number)),
            anchor,
            Path(folder),
        )
    except BaseException:
        connection.send(("error", traceback.format_exc()))
    finally:
        connection.close()


def _serve(
    connection: Connection,
    validation: Validation,
    paths: list[Path],
    events_path: Path,
    part: tuple[bytes, int],
    anchor: datetime,
    folder: Path,
) -> None:
    messages, rejections = read_event_file(events_path, part, anchor)
    count = len(messages)
    connection.send(("loaded", messages[0].timestamp if messages else None, count))
    _, start, until = connection.recv()
    with simulation_store(validation, paths, start, None, folder) as (runner, clock):
        run_history(
            runner,
            clock,
            messages,
            rejections,
            until,
            lambda done, total: connection.send(("progress", done, total)),
            str(events_path),
            complete=False,
        )
        connection.send(("ended", clock.now(), False))
        while True:
            command = connection.recv()
            if command[0] == "advance":
                run_clock(runner, clock, [], command[1])
                pending = _next_timer(runner, finite_only=True) is not None
                if pending:  # a cron fan-out on the way started waits: on to their end
                    run_clock(runner, clock, [], None)
                connection.send(("ended", clock.now(), pending))
            else:  # ("summary", file): written there, read once this process is gone
                # the summary's rows and dicts hold no cycles: the collector would only
                # walk them again and again as they grow
                with gc_paused(), runner.engine.connect() as reading, open(command[1], "wb") as out:
                    for piece in summary_pieces(reading):
                        pickle.dump(piece, out, pickle.HIGHEST_PROTOCOL)
                connection.send(("summary", None))
                return
