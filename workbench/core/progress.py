"""Progress for a person: jobs, their steps, what each is doing now; and the run's log.

The core reports through the functions below and knows nothing of terminals:

    with progress.job("bake app"):                        # a unit of work: one live line
        progress.step("bake app", "provision: base, app")  # its step (the last one ends)
        progress.activity("state pkg.installed nginx")    # what it does now (live line only)
        progress.output(line)                              # a tool's raw output: the log
        progress.detail("kept the build container as x")  # a remark worth keeping

A step whose scope is not a job of this thread (`step("promote app-2", ...)`
from deep inside a promote) is a step of its own, ended by the next such step
of the same job, or when the job ends. One `session` chosen at the start (by
the task layer) draws everything: `LiveRenderer` (rich) keeps one line per
running step updated in place, and leaves each finished step as one line with
its time; `PlainRenderer` prints one line per event, for CI and pipes. Every
event, and every line of tools' output, also goes to the run's log when the
session has one (`workbench.core.runlog`); raw output reaches stderr only with
`verbose`. Without a session (the library, the tests) lines are plain and raw
output goes to stderr, as a log would have nowhere to go.

Progress goes to stderr: stdout carries results only, so `fab x --json | jq`
works whatever the command did first.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from rich.console import RenderableType

MODES = ("auto", "tty", "plain")
MODE_ENV = "WORKBENCH_PROGRESS"
# The live line shows this much of an activity; the log keeps the whole line.
ACTIVITY_WIDTH = 120


@dataclass
class Step:
    """One step of a job, as drawn: `bake app  provision: base, app  31.5s`."""

    scope: str
    message: str
    started: float = field(default_factory=time.monotonic)
    # "step"; "heading": a step of an outline job (the demo's 1/5 ... 5/5); "nested": a
    # step of work inside an outline job, summed up in one line per job on a terminal.
    kind: str = "step"
    activity: str = ""
    ended: float | None = None
    failed: bool = False

    @property
    def seconds(self) -> float:
        return (self.ended or time.monotonic()) - self.started


@dataclass
class _Frame:
    """A job running in one thread (or the thread itself, for steps outside any job)."""

    name: str
    explicit: bool
    outline: bool = False
    started: float = field(default_factory=time.monotonic)
    thread: int = field(default_factory=threading.get_ident)
    own: Step | None = None  # the job's own current step
    other: Step | None = None  # the current step of another scope, reported from inside the job
    done: list[Step] = field(default_factory=list)

    def current(self) -> Step | None:
        """The step events without a scope belong to: the most recent one still running."""
        if self.other is not None and self.other.ended is None:
            return self.other
        return self.own


class Renderer(Protocol):
    """Draws progress events; called under the session's lock."""

    def step_started(self, step: Step) -> None: ...
    def step_ended(self, step: Step) -> None: ...
    def detail(self, step: Step | None, text: str) -> None: ...
    def output(self, step: Step | None, line: str) -> None: ...
    def job_ended(self, name: str, seconds: float, steps: list[Step], failed: bool) -> None: ...
    def start(self, session: Session) -> None: ...
    def stop(self) -> None: ...


class LogSink(Protocol):
    """Where the run's log goes (`workbench.core.runlog.RunLog`)."""

    def write(self, scope: str, text: str) -> None: ...


class PlainRenderer:
    """One line per event: `==> [bake app] provision: ...`, `    [bake app] detail`."""

    def __init__(self, stream: IO[str] | None = None, verbose: bool = True) -> None:
        self._stream = stream
        self.verbose = verbose
        self.session: Session | None = None

    @property
    def stream(self) -> IO[str]:
        return self._stream or sys.stderr

    def start(self, session: Session) -> None:
        self.session = session

    def stop(self) -> None:
        pass

    def _say(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()

    def _lead(self, step: Step | None) -> str:
        # Under `--all` several jobs run at once: say whose line it is.
        several = self.session is not None and self.session.concurrent() > 1
        return f"[{step.scope}] " if step is not None and several else ""

    def step_started(self, step: Step) -> None:
        self._say(f"==> [{step.scope}] {step.message}")

    def step_ended(self, step: Step) -> None:
        pass

    def detail(self, step: Step | None, text: str) -> None:
        self._say(f"    {self._lead(step)}{text}")

    def output(self, step: Step | None, line: str) -> None:
        if self.verbose:
            self._say(f"    {self._lead(step)}{line}")

    def job_ended(self, name: str, seconds: float, steps: list[Step], failed: bool) -> None:
        split = ", ".join(f"{_step_name(s)} {s.seconds:.1f}s" for s in steps if s.scope == name and _step_name(s))
        how = "failed after" if failed else "done in"
        self._say(f"==> [{name}] {how} {seconds:.1f}s" + (f" ({split})" if split else ""))


class LiveRenderer:
    """A live display (rich) on a terminal: one line per running step, with its time and
    what it does now, redrawn in place; a finished step stays above it as one line."""

    def __init__(self, stream: IO[str] | None = None, verbose: bool = False, force: bool = False) -> None:
        from rich.console import Console

        stream = stream or sys.stderr
        self.verbose = verbose
        # rich reads NO_COLOR itself; `force` draws even where stderr is no terminal (--progress tty).
        self.console = Console(file=stream, force_terminal=True if force else None, highlight=False,
                               markup=False, emoji=False)
        self.session: Session | None = None
        self._live: object | None = None
        self._width = 12
        self._pending: dict[int, list[str]] = {}
        self._nested: dict[str, list[Step]] = {}

    def start(self, session: Session) -> None:
        from rich.live import Live

        self.session = session
        # Results printed while the display runs must not land in it, nor on stderr
        # when stdout is a pipe: only a terminal's stdout is routed through the display.
        live = Live(console=self.console, get_renderable=self._running, refresh_per_second=8, transient=True,
                    redirect_stdout=_isatty(sys.stdout), redirect_stderr=True)
        live.start()
        self._live = live

    def stop(self) -> None:
        self.flush()
        live, self._live = self._live, None
        if live is not None:
            live.stop()  # type: ignore[attr-defined]

    def _name(self, scope: str) -> str:
        self._width = max(self._width, min(len(scope), 28))
        return scope

    def _running(self) -> RenderableType:
        from rich.spinner import Spinner
        from rich.table import Table
        from rich.text import Text

        grid = Table.grid(padding=(0, 1), expand=True)
        grid.add_column(width=1, no_wrap=True)
        grid.add_column(width=self._width, no_wrap=True, overflow="ellipsis")
        grid.add_column(ratio=3, no_wrap=True, overflow="ellipsis")
        grid.add_column(width=6, justify="right", no_wrap=True)
        grid.add_column(ratio=2, no_wrap=True, overflow="ellipsis", style="dim")
        session = self.session
        for step in session.running() if session else []:
            spinner = Spinner("dots", style="cyan")
            grid.add_row(spinner, Text(self._name(step.scope), style="bold"), step.message,
                         _clock(step.seconds), step.activity[:ACTIVITY_WIDTH])
        return grid

    def _line(self, mark: RenderableType, scope: str, message: str, seconds: str, style: str = "") -> None:
        from rich.table import Table
        from rich.text import Text

        grid = Table.grid(padding=(0, 1), expand=True)
        grid.add_column(width=1, no_wrap=True)
        grid.add_column(width=self._width, no_wrap=True, overflow="ellipsis")
        grid.add_column(ratio=1, no_wrap=True, overflow="ellipsis", style=style)
        grid.add_column(justify="right", no_wrap=True)
        grid.add_row(mark, Text(self._name(scope), style=style or "bold"), message, seconds)
        self.console.print(grid)

    def step_started(self, step: Step) -> None:
        if step.kind == "heading":
            from rich.text import Text

            self.flush()
            self.console.print(Text(f"{step.scope} {step.message}", style="bold"), no_wrap=True, overflow="ellipsis")
            return
        self._name(step.scope)

    def step_ended(self, step: Step) -> None:
        if step.kind == "heading":
            return
        if step.kind == "nested":
            # One line per job inside an outline, when it is done (`job_ended`, the next heading).
            self._nested.setdefault(step.scope, []).append(step)
            return
        self._line(_mark(step.failed), step.scope, step.message, f"{step.seconds:.1f}s")
        for text in self._pending.pop(id(step), []):
            self._line("", "", text, "", style="dim")

    def flush(self, scope: str | None = None) -> None:
        """Sum up the work done inside an outline job: one line per job, in the order they
        began, up to `scope` (or every one). Their remarks are in the log."""
        order = sorted(self._nested, key=lambda name: self._nested[name][0].started)
        if scope is not None:
            if scope not in self._nested:
                return
            order = order[: order.index(scope) + 1]
        for name in order:
            steps = self._nested.pop(name, [])
            if not steps:
                continue
            last = steps[-1]
            split = ", ".join(f"{_step_name(s)} {s.seconds:.1f}s" for s in steps if s.seconds >= 1.0 and _step_name(s))
            message = f"{last.message}  ({split})" if len(steps) > 1 and split else last.message
            seconds = sum(s.seconds for s in steps)
            self._line(_mark(any(s.failed for s in steps)), name, message, f"{seconds:.1f}s")
            for step in steps:
                self._pending.pop(id(step), None)

    def detail(self, step: Step | None, text: str) -> None:
        if step is None or step.ended is not None or step.kind == "heading":
            self._line("", step.scope if step and step.kind != "heading" else "", text, "", style="dim")
            return
        # Shown under its step's line once the step is done; on the live line until then.
        self._pending.setdefault(id(step), []).append(text)
        step.activity = text

    def output(self, step: Step | None, line: str) -> None:
        if self.verbose:
            from rich.text import Text

            self.console.print(Text(f"  {line}", style="dim"), soft_wrap=True)

    def job_ended(self, name: str, seconds: float, steps: list[Step], failed: bool) -> None:
        # An outline's own steps are headings: what it did inside is summed up by now.
        self.flush(None if any(s.kind == "heading" for s in steps) else name)


def _mark(failed: bool) -> RenderableType:
    from rich.text import Text

    return Text("✘", style="bold red") if failed else Text("✔", style="green")


def _step_name(step: Step) -> str:
    """`provision: base, app with ...` -> `provision`; "" for a step not named so."""
    head, colon, _ = step.message.partition(":")
    return head if colon and head.isidentifier() else ""


def _clock(seconds: float) -> str:
    whole = int(seconds)
    return f"{whole // 60}:{whole % 60:02d}" if whole >= 60 else f"{seconds:.1f}s"


def _isatty(stream: object) -> bool:
    try:
        return bool(stream.isatty())  # type: ignore[attr-defined]
    except (AttributeError, ValueError):
        return False


def choose_mode(mode: str | None, stream: IO[str] | None = None) -> str:
    """`tty` or `plain` for `--progress` (or $WORKBENCH_PROGRESS): auto draws live only
    on a terminal that can take it, as docker buildx does."""
    wanted = (mode or os.environ.get(MODE_ENV) or "auto").strip().lower()
    if wanted not in MODES:
        from workbench.core.errors import ConfigError

        raise ConfigError(f"--progress {wanted!r} (or ${MODE_ENV}): must be one of {', '.join(MODES)}")
    if wanted != "auto":
        return wanted
    terminal = _isatty(stream or sys.stderr) and os.environ.get("TERM", "") not in ("", "dumb")
    return "tty" if terminal else "plain"


class Session:
    """The renderer and the log of one run; every thread reports into it."""

    def __init__(self, renderer: Renderer, log: LogSink | None = None) -> None:
        self.renderer = renderer
        self.log = log
        self.lock = threading.RLock()
        self.frames: list[_Frame] = []  # every frame with a step, in order of start
        self._local = threading.local()
        self._started = False

    # --- frames -------------------------------------------------------------

    def _stack(self) -> list[_Frame]:
        stack: list[_Frame] | None = getattr(self._local, "stack", None)
        if stack is None:
            stack = self._local.stack = [_Frame("", explicit=False)]
        return stack

    def _ensure_started(self) -> None:
        if not self._started:
            self._started = True
            self.renderer.start(self)

    def running(self) -> list[Step]:
        # No lock: the live display asks from its own thread, possibly while a thread
        # holding the lock waits for the display to print (a copy of a list is atomic).
        steps = [s for f in list(self.frames) for s in (f.own, f.other) if s is not None and s.ended is None]
        return sorted(steps, key=lambda s: s.started)

    def concurrent(self) -> int:
        """Threads running jobs now (more than one under `image.bake --all`)."""
        return len({f.thread for f in list(self.frames) if f.explicit})

    def current(self) -> Step | None:
        return self._stack()[-1].current()

    # --- events -------------------------------------------------------------

    def begin_job(self, name: str, outline: bool = False) -> _Frame:
        frame = _Frame(name, explicit=True, outline=outline)
        with self.lock:
            stack = self._stack()
            # What the thread reported before this job is over: its time is not the job's.
            outer = stack[-1].other
            if outer is not None and outer.ended is None:
                self._end(outer, False, stack[-1])
            stack.append(frame)
            self.frames.append(frame)
        return frame

    def end_job(self, frame: _Frame, failed: bool) -> None:
        with self.lock:
            for step in (frame.other, frame.own):
                if step is not None and step.ended is None:
                    self._end(step, failed, frame)
            stack = self._stack()
            if frame in stack:
                stack.remove(frame)
            if frame in self.frames:
                self.frames.remove(frame)
            seconds = time.monotonic() - frame.started
            if self.log is not None:
                self.log.write(frame.name, f"<== {'failed after' if failed else 'done in'} {seconds:.1f}s")
            self.renderer.job_ended(frame.name, seconds, frame.done, failed)

    def step(self, scope: str, message: str) -> None:
        with self.lock:
            self._ensure_started()
            stack = self._stack()
            frame = next((f for f in reversed(stack) if f.explicit and f.name == scope), stack[-1])
            step = Step(scope, message, kind=self._kind(frame, scope))
            if frame.explicit and frame.name == scope:
                # The job's own next step ends its last one, and whatever ran inside it.
                for old in (frame.other, frame.own):
                    if old is not None and old.ended is None:
                        self._end(old, False, frame)
                frame.own, frame.other = step, None
            else:
                if frame.other is not None and frame.other.ended is None:
                    self._end(frame.other, False, frame)
                frame.other = step
            if frame not in self.frames:
                self.frames.append(frame)
            if self.log is not None:
                self.log.write(scope, f"==> {message}")
            self.renderer.step_started(step)

    def _kind(self, frame: _Frame, scope: str) -> str:
        if frame.outline and frame.name == scope:
            return "heading"
        outlines = {f.name for f in list(self.frames) if f.outline}
        return "nested" if outlines and scope not in outlines else "step"

    def _end(self, step: Step, failed: bool, frame: _Frame) -> None:
        step.ended = time.monotonic()
        step.failed = failed
        frame.done.append(step)
        if self.log is not None:
            self.log.write(step.scope, f"<== {step.message} ({'failed after' if failed else 'took'} "
                                       f"{step.seconds:.1f}s)")
        self.renderer.step_ended(step)

    def detail(self, text: str) -> None:
        with self.lock:
            self._ensure_started()
            step = self.current()
            if self.log is not None:
                self.log.write(step.scope if step else "", f"    {text}")
            self.renderer.detail(step, text)

    def activity(self, text: str) -> None:
        step = self.current()
        if step is not None:
            step.activity = " ".join(text.split())

    def output(self, line: str) -> None:
        with self.lock:
            step = self.current()
            if self.log is not None:
                self.log.write(step.scope if step else "", f"| {line}")
            self.renderer.output(step, line)

    def hand_over(self) -> None:
        """Take the display down while a child owns the terminal (an SSH session); the
        next event draws it again."""
        with self.lock:
            if self._started:
                self.renderer.stop()
                self._started = False

    def close(self, failed: bool = False) -> None:
        """End what still runs (a failure marks it failed) and take the display down."""
        with self.lock:
            for frame in list(self.frames):
                for step in (frame.other, frame.own):
                    if step is not None and step.ended is None:
                        self._end(step, failed, frame)
            self.frames.clear()
            if self._started:
                self.renderer.stop()


_default = Session(PlainRenderer(verbose=True))
_session: Session = _default


def current_session() -> Session:
    return _session


@contextlib.contextmanager
def session(
    mode: str = "plain", *, log: LogSink | None = None, verbose: bool = False, stream: IO[str] | None = None
) -> Iterator[Session]:
    """Draw this run's progress with the renderer `mode` (`tty` or `plain`, see `choose_mode`)."""
    global _session
    renderer: Renderer = (LiveRenderer(stream, verbose=verbose, force=True) if mode == "tty"
                          else PlainRenderer(stream, verbose=verbose))
    previous, _session = _session, Session(renderer, log)
    failed = True
    try:
        yield _session
        failed = False
    finally:
        try:
            _session.close(failed=failed)
        finally:
            _session = previous


@contextlib.contextmanager
def job(name: str, *, outline: bool = False) -> Iterator[None]:
    """A unit of work with its own live line (a bake of one role, a sandbox, a netboot test).

    An `outline` job (the demo) is made of others: on a terminal its steps are
    headings, and each job done inside one is summed up in a line of its own.
    """
    current = _session
    frame = current.begin_job(name, outline)
    failed = True
    try:
        yield
        failed = False
    finally:
        current.end_job(frame, failed)


def hand_over_terminal() -> None:
    """Before a child takes the terminal over (`run.interactive`): no live display under it."""
    _session.hand_over()


def step(scope: str, message: str) -> None:
    """`==> [bake app] provision: applying base, app`: a job's next step."""
    _session.step(scope, message)


def detail(message: str) -> None:
    """A remark on the current step, kept (a warning, where something was left)."""
    _session.detail(message)


def activity(text: str) -> None:
    """What the current step is doing now (the Salt state, the test, bytes pushed): the live line."""
    _session.activity(text)


def output(line: str) -> None:
    """One line of a tool's output: into the run's log; on stderr only when verbose."""
    _session.output(line)


def tool_line(line: str) -> None:
    """`output`, and the line as the current activity: what `run.stream` does by default."""
    _session.output(line)
    if line.strip():
        _session.activity(line)


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")
