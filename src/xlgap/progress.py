"""Progress with an ETA, on a terminal and in logs alike.

On a terminal :func:`progress_bar` is a tqdm bar. When stderr is not a terminal (a log
file, a CI job, ``nohup``), a redrawn bar would be a mess of carriage returns, so it
prints plain lines instead: one when the step starts, one at every tenth of the work (at
most one per ``min_interval`` seconds), and one when it ends, each with the elapsed time
and the ETA. :func:`step` times a whole step (one start and one end line), and
:class:`StepPlan` numbers the steps of a longer job and estimates what is left of it.

``XLGAP_PROGRESS`` overrides the choice: ``bar`` (tqdm even in logs), ``lines`` (lines
even on a terminal), ``off``/``0`` (nothing).

Usage, a drop-in for ``tqdm(total=..., desc=..., unit=..., disable=not progress)``::

    bar = progress_bar(total=len(pairs), desc="sampling", unit="q", enabled=progress)
    for chunk in chunks:
        ...
        bar.update(len(chunk))
    bar.close()
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from typing import Any, TextIO

__all__ = ["LineProgress", "StepPlan", "format_duration", "progress_bar", "progress_mode",
           "step"]


def format_duration(seconds: float) -> str:
    """``42 s``, ``3 min 05 s``, ``1 h 02 min``: short and unambiguous in a log."""
    seconds = max(0.0, seconds)
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, sec = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {sec:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def progress_mode(stream: TextIO | None = None) -> str:
    """``bar``, ``lines`` or ``off``: the environment's choice, else bar on a terminal."""
    env = os.environ.get("XLGAP_PROGRESS", "").strip().lower()
    if env in ("0", "off", "no", "none", "false"):
        return "off"
    if env in ("bar", "tqdm"):
        return "bar"
    if env in ("lines", "log", "plain"):
        return "lines"
    stream = stream or sys.stderr
    isatty = getattr(stream, "isatty", None)
    return "bar" if isatty is not None and isatty() else "lines"


class LineProgress:
    """The subset of tqdm that xlgap uses (``update``, ``close``, iteration, context
    manager), printing whole lines with elapsed time and ETA."""

    def __init__(self, iterable: Iterable[Any] | None = None, *, total: int | None = None,
                 desc: str = "", unit: str = "it", stream: TextIO | None = None,
                 min_interval: float = 5.0, clock: Callable[[], float] = time.monotonic,
                 prefix: str = "[xlgap]", initial: int = 0) -> None:
        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.total = total
        self.desc = desc or "working"
        self.unit = unit
        self.stream = stream or sys.stderr
        self.min_interval = min_interval
        self.clock = clock
        self.prefix = prefix
        self.n = initial  # work already done before this process (a resumed step)
        self._initial = initial
        self.start = clock()
        self._last_print = self.start
        self._last_tenth = 0
        self._closed = False
        if total == 0:
            return
        self._emit(f"{self.desc}: started" + (f", {total} {unit}" if total else ""))

    # -- tqdm-like API --------------------------------------------------------------------

    def update(self, n: int = 1) -> None:
        self.n += n
        now = self.clock()
        if not self.total:
            if now - self._last_print >= max(self.min_interval, 30.0):
                self._emit(f"{self.desc}: {self.n} {self.unit} in "
                           f"{format_duration(now - self.start)}")
                self._last_print = now
            return
        tenth = min(10, int(10 * self.n / self.total))
        if tenth > self._last_tenth and self.n < self.total and \
                now - self._last_print >= self.min_interval:
            self._last_tenth = tenth
            self._last_print = now
            self._emit(self._status(now))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.total == 0:
            return
        elapsed = self.clock() - self.start
        rate = f", {self.n / elapsed:.1f} {self.unit}/s" if elapsed > 0 and self.n else ""
        self._emit(f"{self.desc}: done, {self.n} {self.unit} in {format_duration(elapsed)}"
                   f"{rate}")

    def set_postfix_str(self, *_: Any, **__: Any) -> None:
        """Accepted for tqdm compatibility; lines carry no postfix."""

    def set_description(self, desc: str | None = None, *_: Any, **__: Any) -> None:
        if desc:
            self.desc = desc

    def __iter__(self) -> Iterator[Any]:
        if self.iterable is None:
            raise TypeError("LineProgress was made without an iterable")
        try:
            for value in self.iterable:
                yield value
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals --------------------------------------------------------------------------

    def _status(self, now: float) -> str:
        elapsed = now - self.start
        assert self.total
        share = self.n / self.total
        done_here = self.n - self._initial  # the rate of this process, not of a resumed past
        eta = elapsed * (self.total - self.n) / done_here if done_here > 0 else float("nan")
        eta_text = format_duration(eta) if eta == eta else "?"
        return (f"{self.desc}: {self.n}/{self.total} {self.unit} ({share:.0%}) in "
                f"{format_duration(elapsed)}, ETA {eta_text}")

    def _emit(self, text: str) -> None:
        # a closed stream must not break the computation
        with suppress(OSError, ValueError):
            print(f"{self.prefix} {text}", file=self.stream, flush=True)


class _Silent:
    """What a disabled bar is: every call does nothing."""

    def __init__(self, iterable: Iterable[Any] | None = None) -> None:
        self.iterable = iterable
        self.n = 0

    def update(self, n: int = 1) -> None:
        self.n += n

    def close(self) -> None:
        pass

    def set_postfix_str(self, *_: Any, **__: Any) -> None:
        pass

    def set_description(self, *_: Any, **__: Any) -> None:
        pass

    def __iter__(self) -> Iterator[Any]:
        return iter(self.iterable or ())

    def __enter__(self) -> _Silent:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def progress_bar(iterable: Iterable[Any] | None = None, *, total: int | None = None,
                 desc: str = "", unit: str = "it", enabled: bool = True,
                 leave: bool = True, stream: TextIO | None = None,
                 min_interval: float = 5.0, initial: int = 0) -> Any:
    """A tqdm bar on a terminal, :class:`LineProgress` otherwise, or a silent stand-in
    when ``enabled`` is false or ``XLGAP_PROGRESS=off``."""
    mode = progress_mode(stream) if enabled else "off"
    if mode == "off":
        return _Silent(iterable)
    if mode == "bar":
        from tqdm.auto import tqdm

        return tqdm(iterable, total=total, desc=desc, unit=unit, leave=leave,
                    file=stream or sys.stderr, initial=initial)
    return LineProgress(iterable, total=total, desc=desc, unit=unit, stream=stream,
                        min_interval=min_interval, initial=initial)


@contextmanager
def step(name: str, *, stream: TextIO | None = None, enabled: bool = True,
         clock: Callable[[], float] = time.monotonic) -> Iterator[dict[str, Any]]:
    """Print ``[xlgap] NAME ...`` on entry and ``NAME: done in T`` (or ``failed after T``)
    on exit, on terminals and in logs alike, so a log shows where the time went. The
    yielded dict receives ``seconds`` on exit."""
    out = stream or sys.stderr
    info: dict[str, Any] = {"name": name}
    start = clock()
    if enabled:
        print(f"[xlgap] {name} ...", file=out, flush=True)
    try:
        yield info
    except BaseException:
        info["seconds"] = clock() - start
        if enabled:
            print(f"[xlgap] {name}: failed after {format_duration(info['seconds'])}",
                  file=out, flush=True)
        raise
    info["seconds"] = clock() - start
    if enabled:
        print(f"[xlgap] {name}: done in {format_duration(info['seconds'])}", file=out,
              flush=True)


class StepPlan:
    """Numbered steps of a long job with an ETA for the rest of it.

    The ETA is the mean time of the steps that did real work, times the steps left; steps
    that were skipped (done in an earlier run) do not count, or a resumed job would
    promise to end far too soon."""

    def __init__(self, total: int, *, stream: TextIO | None = None, label: str = "xlgap",
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.total = total
        self.stream = stream or sys.stderr
        self.label = label
        self.clock = clock
        self.done = 0
        self.worked: list[float] = []
        self.start = clock()

    def eta(self) -> float | None:
        left = self.total - self.done
        if not self.worked or left <= 0:
            return None if left > 0 else 0.0
        return sum(self.worked) / len(self.worked) * left

    def _print(self, text: str) -> None:
        print(f"[{self.label}] {text}", file=self.stream, flush=True)

    @contextmanager
    def step(self, name: str) -> Iterator[dict[str, Any]]:
        """Time one step; set ``info["skipped"] = True`` inside to mark it as no work."""
        number = self.done + 1
        eta = self.eta()
        tail = f" (ETA for the rest: {format_duration(eta)})" if eta else ""
        self._print(f"step {number}/{self.total}: {name}{tail}")
        info: dict[str, Any] = {"name": name, "skipped": False}
        start = self.clock()
        try:
            yield info
        finally:
            seconds = self.clock() - start
            info["seconds"] = seconds
            self.done += 1
            if not info["skipped"]:
                self.worked.append(seconds)
            state = info.get("status") or ("skipped" if info["skipped"] else "done")
            total = format_duration(self.clock() - self.start)
            self._print(f"step {number}/{self.total}: {name}: {state} in "
                        f"{format_duration(seconds)} ({total} so far)")
