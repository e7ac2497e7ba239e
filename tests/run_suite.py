"""`make test` and `make test-fast`: mypy and the tests without Spark run beside the Spark tests.

The tests that use the shared SparkSession keep the machine's cores busy only part of the time
(the driver plans one small query after another), and mypy and the ~320 tests that start no
session (config, bundle, CLI, architecture, cold-start checks) each want one core for a minute or
two. So they run in a second process, at the lowest CPU priority, while the Spark tests run in
this one's child, whose output streams as usual; theirs is printed when both have ended. The exit
status is the first failure's.

    python tests/run_suite.py [--fast] [pytest arguments]

``--fast`` is the fast tier (``-m "not e2e and not slow"``). Arguments go to both pytest runs
(each keeps the tests of its own kind: ``--shared-session``, see ``conftest.py``); a run left with
no test is not a failure.
"""

from __future__ import annotations

import contextlib
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
FAST = ["-m", "not e2e and not slow"]
NO_TESTS = 5  # pytest's exit status when every test was deselected (mypy never exits with it)


# The commands beside run at the lowest CPU priority: they take what the Spark tests leave idle.
# The Spark tests wait on many short hand-offs between threads (driver, scheduler, tasks), and a
# thread that wakes must get a core at once: Linux's SCHED_IDLE policy (`chrt --idle 0`) gives it
# one, where nice 19 made them ~10% slower beside a busy process (docs/benchmarks.md, session 33).
# Elsewhere, `nice` (POSIX); without either, the usual priority. A command, not Popen's
# preexec_fn: a process with Spark's threads must not run Python between fork and exec.
LOWEST_PRIORITY = (["chrt", "--idle", "0"] if sys.platform == "linux" and shutil.which("chrt")
                   else ["nice", "-n", "19"] if shutil.which("nice") else [])

# Linux schedules each session as a group of its own (an "autogroup": two sessions share the CPU
# equally, whatever their processes' priorities), and a priority counts only within its group.
# A child that must be killable with its own children gets a process group of its own, in this
# session; a new session would escape LOWEST_PRIORITY. (Python 3.10's Popen has no process_group.)
OWN_PROCESS_GROUP: dict[str, Any] = (
    {"process_group": 0} if sys.version_info >= (3, 11) else {"start_new_session": True})


def lowest_priority_sessions(parent: subprocess.Popen[Any], within_s: float = 120.0) -> None:
    """Give the lowest priority to the first new session a child of ``parent`` starts within
    ``within_s`` (Jupyter starts each kernel so: see :data:`OWN_PROCESS_GROUP`), by the nice value
    of its autogroup; on a thread. Without autogroups (not Linux, or turned off) it does nothing."""
    if not Path("/proc/self/autogroup").exists():
        return

    def watch() -> None:
        deadline = time.monotonic() + within_s
        while parent.poll() is None and time.monotonic() < deadline:
            for stat in Path("/proc").glob("[0-9]*/stat"):
                with contextlib.suppress(OSError, ValueError, IndexError):
                    state = stat.read_text().rsplit(")", 1)[1].split()  # state, ppid, pgrp, session, ...
                    pid = int(stat.parent.name)
                    if int(state[1]) == parent.pid and int(state[3]) == pid:
                        (stat.parent / "autogroup").write_text("19")
                        return
            time.sleep(0.25)

    threading.Thread(target=watch, name=f"lower-sessions-{parent.pid}", daemon=True).start()


def pytest(*args: str) -> list[str]:
    return ["-m", "pytest", "-q", *args]


def run_beside(commands: list[tuple[str, list[str]]], log: Path, statuses: dict[str, int]) -> None:
    """Run ``python <args>`` for each of ``commands``, one after the other, at the lowest
    priority, their output into ``log``; record each exit status."""
    with log.open("w") as out:
        for name, args in commands:
            started = time.monotonic()
            out.write(f"$ {shlex.join(args[1:] if args[0] == '-m' else args)}\n")
            out.flush()
            status = subprocess.run([*LOWEST_PRIORITY, sys.executable, *args], cwd=REPO, stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL).returncode
            statuses[name] = 0 if status == NO_TESTS else status
            out.write(f"({name}: exit {status}, {time.monotonic() - started:.0f} s)\n\n")
            out.flush()


def main(argv: list[str]) -> int:
    fast = "--fast" in argv
    args = [a for a in argv if a != "--fast"] + (FAST if fast else [])
    beside = [
        ("mypy", ["-m", "mypy"]),
        ("tests without Spark", pytest("-p", "no:cacheprovider", "--shared-session=none", *args)),
    ]
    statuses: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="sparkfs-tests-") as folder:
        log = Path(folder) / "beside.log"
        side = threading.Thread(target=run_beside, args=(beside, log, statuses), daemon=True)
        side.start()
        print("mypy and the tests without Spark run beside these (their output follows at the end)", flush=True)
        main_status = subprocess.run([sys.executable, *pytest("--shared-session=only", *args)], cwd=REPO).returncode
        statuses["tests with Spark"] = 0 if main_status == NO_TESTS else main_status
        side.join()
        print("\n" + "-" * 30 + " beside: mypy, tests without Spark " + "-" * 30, flush=True)
        print(log.read_text(), end="", flush=True)
    failed = [name for name, status in statuses.items() if status]
    summary = ", ".join(f"{name} {'FAILED' if statuses[name] else 'passed'}" for name in statuses)
    print(summary)
    return next((statuses[name] for name in failed), 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
