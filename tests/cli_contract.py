"""Running `tvae` commands in tests and checking the CLI's contract: a command works, with only
`warning:` lines, or exits 2 with ONE line `error: PATH: reason`; never a traceback or a hang."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from tvae.cli.main import main

ROOT = Path(__file__).resolve().parent.parent
MARY = ROOT / "data" / "mary.mid"
TIMEOUT_S = 60  # a subprocess still running after this has hung: the test fails
MAX_RSS_MB = 512  # peak memory of `tvae inspect` on a 20 MB file (about 300 MB; 900 before a fix)


@dataclass
class Outcome:
    """What one command did: exit code, stdout, stderr, and the exception if it was not exit."""

    code: int
    out: str
    err: str
    crash: BaseException | None = None


def invoke(args: list[str], env: dict[str, str] | None = None) -> Outcome:
    """Run `tvae ARGS` in-process with click's runner."""
    result = CliRunner().invoke(main, [str(a) for a in args], env=env)
    crash = None if isinstance(result.exception, SystemExit | None) else result.exception
    return Outcome(result.exit_code, result.stdout, result.stderr, crash)


# Runs a command and writes its peak memory (KB) to a file: measured from this small process,
# because a child forked from the (large) test process would count the test's own memory.
MEASURE = ("import resource, subprocess, sys; code = subprocess.call(sys.argv[2:]); "
           "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN)"
           ".ru_maxrss)); sys.exit(code)")


def run_process(args: list[str], cwd: Path = ROOT) -> tuple[Outcome, float]:
    """Run `python -m tvae ARGS` in a real process, killed after TIMEOUT_S.
    Returns the outcome and the process's peak resident memory in MB."""
    with tempfile.TemporaryDirectory() as tmp:
        rss_file = Path(tmp) / "maxrss"
        command = [sys.executable, "-c", MEASURE, rss_file, sys.executable, "-m", "tvae", *args]
        proc = subprocess.Popen([str(a) for a in command], cwd=cwd, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        try:
            out, err = proc.communicate(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            pytest.fail(f"tvae {args} ran over {TIMEOUT_S} s and was killed (a hang?)")
        rss_mb = int(rss_file.read_text()) / 1024
    return Outcome(proc.returncode, out.decode(errors="replace"),
                   err.decode(errors="replace")), rss_mb


def contract_problem(got: Outcome, expected: str, *paths: Path) -> str | None:
    """Why `got` breaks the contract for an input expected to be "ok" or an "error", or None.

    "error": exit 2 and exactly one stderr line `error: ...` naming one of `paths`.
    "ok": exit 0 and only `warning: ...` lines on stderr.
    """
    if got.crash is not None:
        return f"crashed: {type(got.crash).__name__}: {got.crash}"
    if "Traceback" in got.out + got.err:
        return f"printed a traceback: {got.err[-300:]!r}"
    lines = got.err.splitlines()
    if expected == "error":
        if got.code != 2 or len(lines) != 1 or not lines[0].startswith("error: "):
            return f"expected exit 2 and one error line, got exit {got.code}: {got.err[:300]!r}"
        if not any(str(p) in lines[0] for p in paths):
            return f"the error line names none of {[str(p) for p in paths]}: {lines[0]!r}"
        return None
    if got.code != 0:
        return f"expected success, got exit {got.code}: {got.err[:300]!r}"
    if any(not line.startswith("warning: ") for line in lines):
        return f"stderr has lines other than warnings: {got.err[:300]!r}"
    return None


def songs_with_broken_files(tmp_path: Path, one_bar_song: bool = False) -> Path:
    """A folder for the folder commands: the four example songs, a file that is not MIDI named
    with the byte 0xff (not UTF-8), an empty file and, if asked, a song of one bar."""
    from tvae.melody import Melody, Note
    from tvae.midi import write_melody

    folder = tmp_path / "songs"
    folder.mkdir()
    for name in ("mary.mid", "ode.mid", "jingle.mid", "twinkle.mid"):
        shutil.copy(ROOT / "data" / name, folder / name)
    (folder / os.fsdecode(b"\xff.mid")).write_bytes(b"RIFF this is not MIDI")
    (folder / "empty.mid").write_bytes(b"")
    if one_bar_song:
        write_melody(Melody((Note(0, 60, 16),)), folder / "tiny.mid")
    return folder
