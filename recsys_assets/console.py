"""What `recsys pipeline` shows while it runs: one line per stage and per finished step (with epochs and
row counts where they are long), the full Dagster logs in a file, and errors in full. Plain Python."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

# A Dagster CLI log line: "<date> <time> <tz> - dagster - LEVEL - <job> - <run id> - <pid> - <step> - <message>"
_STEP_EVENT = re.compile(r" - (\w+) - (STEP_START|STEP_SUCCESS|STEP_FAILURE) - ")
_STEP_DURATION = re.compile(r'Finished execution of step "[^"]+" in ([\dhms.]+)\.')  # 533ms, 5.6s, 4m52s, 1h4m
_DURATION_PART = re.compile(r"([\d.]+)(ms|h|m|s)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
_EPOCH = re.compile(r" - (\w+) - epoch (\d+)/(\d+)")
_ROWS = re.compile(r".* - (\w+) - (.*\brows?\b.*)$")  # greedy: the last " - <step> - " before the message


def elapsed(seconds: float) -> str:
    return f"{int(seconds // 60)}m{int(seconds % 60):02d}s" if seconds >= 60 else f"{seconds:.0f}s"


class StageReporter:
    """Runs commands as numbered stages; their output goes to `log_path`, a summary line per step to the
    console, and the whole failure (from the first failed step on) to the console when a stage fails."""

    def __init__(self, total: int, log_path: Path, out=sys.stdout, pass_fds: tuple[int, ...] = ()):
        self.total, self.done, self.log_path, self.out = total, 0, log_path, out
        self.pass_fds = pass_fds  # open files the commands inherit (a lock they hold while they live)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.started = time.monotonic()

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def run(self, title: str, command: list[str]) -> None:
        self.done += 1
        self.say(f"[{self.done}/{self.total}] {title}")
        started = time.monotonic()
        notes: dict[str, str] = {}
        failure: list[str] = []
        with open(self.log_path, "a") as log:
            log.write(f"\n=== [{self.done}/{self.total}] {title}: {' '.join(command)}\n")
            proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                    bufsize=1, pass_fds=self.pass_fds)
            for line in proc.stdout:
                log.write(line)
                if failure or "STEP_FAILURE" in line:
                    failure.append(line.rstrip("\n"))
                self._note(line, notes)
            proc.wait()
        if proc.returncode != 0:
            self.say(f"      FAILED after {elapsed(time.monotonic() - started)}; the failure in full "
                     f"(whole log: {self.log_path}):")
            self.say("\n".join(failure) if failure else self._tail(80))
            raise SystemExit(proc.returncode)
        self.say(f"      done in {elapsed(time.monotonic() - started)}")

    def _note(self, line: str, notes: dict[str, str]) -> None:
        if (epoch := _EPOCH.search(line)) is not None:
            notes[epoch.group(1)] = f"{epoch.group(3)} epochs"
        elif (rows := _ROWS.search(line)) is not None and "STEP_" not in line:
            notes[rows.group(1)] = rows.group(2)[:70]
        event = _STEP_EVENT.search(line)
        if event is None or event.group(2) == "STEP_START":
            return
        step = event.group(1)
        if event.group(2) == "STEP_FAILURE":
            self.say(f"      x {step} failed")
            return
        duration = _STEP_DURATION.search(line)
        took = ""
        if duration is not None:
            took = elapsed(sum(float(value) * _UNIT_SECONDS[unit]
                               for value, unit in _DURATION_PART.findall(duration.group(1))))
        note = f"  ({notes[step]})" if step in notes else ""
        self.say(f"      {step:<44} {took:>6}{note}")

    def _tail(self, lines: int) -> str:
        return "".join(self.log_path.read_text().splitlines(keepends=True)[-lines:])

    def total_elapsed(self) -> str:
        return elapsed(time.monotonic() - self.started)
