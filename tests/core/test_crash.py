"""Crash points (services/core/crash.py): armed only by LIFELINE_CRASH_AT, exact count,
unknown names refused, and the exit is abrupt (code 86, nothing after it runs)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from services.core import crash


def test_parse() -> None:
    assert crash.parse(None) is None and crash.parse("") is None
    assert crash.parse("writer.after_write") == ("writer.after_write", 1)
    assert crash.parse("processor.after_emit:3") == ("processor.after_emit", 3)


@pytest.mark.parametrize("value", ["nowhere", "writer.after_write:0", "writer.after_write:x",
                                   "writer.after_write:-1", "Writer.After_Write"])
def test_refused(value: str) -> None:
    with pytest.raises(crash.CrashPointError, match="LIFELINE_CRASH_AT"):
        crash.parse(value)


def test_every_point_is_placed_in_its_service() -> None:
    """A point that no code passes would make a replay test pass for the wrong reason."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "services"
    source = {p: p.read_text() for p in root.rglob("*.py")}
    for point in crash.POINTS:
        service = point.split(".")[0]
        placed = [p for p, text in source.items() if f'crash_point("{point}")' in text]
        assert placed, f"no code passes crash point {point}"
        assert all(p.is_relative_to(root / service) for p in placed), (point, placed)


def _run(env_value: str | None, passes: int) -> subprocess.CompletedProcess[str]:
    code = textwrap.dedent(f"""
        from services.core.crash import crash_point
        for i in range({passes}):
            crash_point("writer.after_write")
            print("passed", i + 1, flush=True)
        print("finished", flush=True)
    """)
    env = {"PATH": "/usr/bin:/bin"}
    if env_value is not None:
        env["LIFELINE_CRASH_AT"] = env_value
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=60, cwd=str(__import__("pathlib").Path(
                              __file__).resolve().parents[2]))


def test_unarmed_runs_through() -> None:
    out = _run(None, 3)
    assert out.returncode == 0 and out.stdout.splitlines()[-1] == "finished"


def test_other_point_armed_runs_through() -> None:
    out = _run("notifier.after_page", 3)
    assert out.returncode == 0 and "finished" in out.stdout


def test_ends_at_the_nth_pass() -> None:
    out = _run("writer.after_write:2", 5)
    assert out.returncode == crash.CRASH_EXIT
    assert out.stdout.splitlines() == ["passed 1"]  # the second pass never returned
    assert '"event": "crash_point.hit"' in out.stderr and '"pass": 2' in out.stderr


def test_unknown_point_refused_at_start() -> None:
    out = _run("writer.after_wirte", 1)
    assert out.returncode != 0 and "unknown crash point 'writer.after_wirte'" in out.stderr
