"""Many more facilities for load tests: copies of a registry's facilities.

Copy ``k`` of facility ``F`` is ``F-X00k`` with the same sensors (``S-X00k``), rules and
district, placed a little apart; scenarios and the simulator treat copies like their
originals (incidents and faults stay on the originals). ``lifeline registry scale``
writes the scaled registry the services must load too.
"""

from __future__ import annotations

from typing import Any

from schemas.registry import Registry


def scale_registry(registry: Registry, factor: int) -> Registry:
    if factor < 1:
        raise ValueError("the scale factor must be at least 1")
    doc: dict[str, Any] = registry.model_dump(mode="json", exclude_none=True)
    originals = doc["facilities"]
    out = list(originals)
    for k in range(1, factor):
        for f in originals:
            suffix = f"-X{k:03d}"
            sensors = [{**s, "id": s["id"] + suffix} for s in f["sensors"]]
            composites = [{**c, "all_of": [{**cond, "sensor": cond["sensor"] + suffix}
                                           for cond in c["all_of"]]}
                          for c in f.get("composites", [])]
            out.append({**f, "id": f["id"] + suffix, "sensors": sensors,
                        "composites": composites,
                        "lat": round(f["lat"] + 0.0005 * (k % 40), 5),
                        "lon": round(f["lon"] + 0.0005 * (k // 40), 5)})
    doc["facilities"] = out
    return Registry.model_validate(doc)
