"""Micro-benchmark of the ``lifeline.readings`` codec paths, before and after schemas/codec.py.

    .venv/bin/python -m tests.bench.codec [--batches 10000] [--repeat 7]

The same run times the code as it was before issue 15 (loaded from git at ``BASELINE``:
services/ingest/validate.py and services/writer/points.py of that commit) and the code
in the tree now, on the same 10,000 batches of 10 readings, interleaved, best of
``--repeat``:

- ingest: ``Validator.validate`` of a plain gateway report (decode the MQTT JSON, check,
  convert, encode the ReadingBatch — the encode is the hot part that moved)
- processor: decode a ``lifeline.readings`` value to a ReadingBatch
- writer: ``PointBuilder.readings_raw`` (decode + line protocol)

No stack needed: pure CPU, one process.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from schemas.codec import READING_BATCH
from schemas.reading import ReadingBatch
from schemas.registry import Registry, load_registry
from tests.bench.processor import NORMAL, UNITS, scaled_registry
from tests.bench.run import machine

BASELINE = "dc796436112ece2c69c65dddf4dd1817141e64ea"  # main before issue 15's codecs
ROOT = Path(__file__).resolve().parents[2]


def old_module(path: str, name: str) -> types.ModuleType:
    """``path`` as it was at ``BASELINE``, imported as module ``name``."""
    src = subprocess.run(["git", "-C", str(ROOT), "show", f"{BASELINE}:{path}"], check=True,
                         capture_output=True, text=True).stdout
    mod = types.ModuleType(name)
    mod.__file__ = f"{BASELINE[:7]}:{path}"
    sys.modules[name] = mod
    exec(compile(src, mod.__file__, "exec"), mod.__dict__)  # noqa: S102 — our own history
    return mod


def _reports(registry: Registry, n: int, now: datetime) -> list[tuple[str, bytes]]:
    facs = [f for f in registry.facilities if all(s.metric in NORMAL for s in f.sensors)]
    out = []
    for i in range(n):
        f = facs[i % len(facs)]
        ts = (now - timedelta(seconds=i % 600)).isoformat(timespec="milliseconds")
        body = {"ts": ts.replace("+00:00", "Z"), "seq": i, "readings": [
            {"sensor": s.id, "metric": s.metric.value, "value": NORMAL[s.metric.value] + i % 7,
             "unit": UNITS[s.metric.value]} for s in f.sensors]}
        out.append((f"lifeline/{f.kind.value}/{f.id}/telemetry", json.dumps(body).encode()))
    return out


def _best(fn: Callable[[], Any], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def bench(batches: int = 10000, repeat: int = 7) -> dict[str, Any]:
    import services.ingest.validate as new_validate
    import services.writer.points as new_points

    old_validate = old_module("services/ingest/validate.py", "_bench_old_validate")
    old_points = old_module("services/writer/points.py", "_bench_old_points")
    with tempfile.TemporaryDirectory() as tmp:
        scaled_registry(Path(tmp) / "registry.json", 1000)
        registry = load_registry(Path(tmp) / "registry.json")
    now = datetime.now(UTC).replace(microsecond=0)
    reports = _reports(registry, batches, now)
    kw: dict[str, Any] = {"max_payload_bytes": 65536, "max_future_s": 300, "max_past_s": 86400}
    validators = {"before": old_validate.Validator(registry, **kw),
                  "after": new_validate.Validator(registry, **kw)}
    values = []
    for topic, raw in reports:
        out = validators["after"].validate(topic, raw, now)
        assert out.batch_json is not None and out.dead_letter is None, out.dead_letter
        old = validators["before"].validate(topic, raw, now)
        assert ReadingBatch.model_validate_json(old.batch_json) == out.batch
        values.append(out.batch_json)
    builders = {"before": old_points.PointBuilder(registry),
                "after": new_points.PointBuilder(registry)}
    assert [builders["before"].readings_raw(v) for v in values[:100]] == \
        [builders["after"].readings_raw(v) for v in values[:100]]

    def ingest(v: Any) -> Callable[[], object]:
        return lambda: [v.validate(t, r, now) for t, r in reports]

    def writer(b: Any) -> Callable[[], object]:
        return lambda: [b.readings_raw(v) for v in values]

    cases: dict[str, dict[str, Callable[[], object]]] = {
        "ingest validate+encode": {"before": ingest(validators["before"]),
                                   "after": ingest(validators["after"])},
        "processor decode": {
            "before": lambda: [ReadingBatch.model_validate_json(v) for v in values],
            "after": lambda: [READING_BATCH.decode(v) for v in values]},
        "writer decode+lines": {"before": writer(builders["before"]),
                                "after": writer(builders["after"])},
    }
    results = {}
    for name, pair in cases.items():
        pair["before"](), pair["after"]()  # warm up
        times = {"before": float("inf"), "after": float("inf")}
        for _ in range(repeat):  # interleaved: drift hits both alike
            for side in ("before", "after"):
                times[side] = min(times[side], _best(pair[side], 1))
        results[name] = {"before_ms": round(times["before"] * 1000, 1),
                         "after_ms": round(times["after"] * 1000, 1),
                         "ratio_after_before": round(times["after"] / times["before"], 3)}
    return {"benchmark": f"readings codec, {batches} batches of 10 readings, best of {repeat}",
            "baseline_commit": BASELINE, "machine": machine(), "results": results}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", type=int, default=10000)
    ap.add_argument("--repeat", type=int, default=7)
    a = ap.parse_args()
    print(json.dumps(bench(a.batches, a.repeat), indent=2))


if __name__ == "__main__":
    main()
