"""The notifier survives any on-call edit: saved escalation state that names a team that
no longer exists, or a step past a shortened chain, is reconciled (and recorded)."""

from __future__ import annotations

import json

from schemas.oncall import OnCallConfig, RecordType
from services.notifier.escalation import Escalator, FacilityOnCall
from tests.support.oncall_helpers import Run, config, later


def edited(**changes: object) -> OnCallConfig:
    data = json.loads(config().model_dump_json(by_alias=True))
    data.update(changes)
    return OnCallConfig.model_validate(data)


def restart_with(run: Run, cfg: OnCallConfig) -> Run:
    """What a notifier restart after an edit does: the saved table value, the new file."""
    new = Run(cfg)
    new.fs = FacilityOnCall.from_json(json.loads(json.dumps(run.fs.to_json())))
    return new


def test_a_renamed_team_is_reconciled_and_the_alarm_routed_again() -> None:
    run = Run()
    run.alarm(later(0), level="orange")
    run.deliver_all(later(1))
    data = json.loads(config().model_dump_json(by_alias=True))
    data["teams"][0]["id"] = "drainage-duty"  # "duty" renamed
    data["routes"][1]["team"] = "drainage-duty"
    new = restart_with(run, OnCallConfig.model_validate(data))
    new.tick(later(120))  # would have raised StopIteration on the unknown team
    stopped = [r for r in new.records if r.type is RecordType.STOPPED]
    assert stopped and "no longer in the on-call file" in stopped[0].detail
    [chain] = next(iter(new.fs.episodes.values())).chains
    assert chain.team == "drainage-duty"
    assert [p[0] for p in new.pages()] == ["ann"]  # the renamed team's person on duty


def test_a_shortened_chain_moves_to_its_last_step() -> None:
    run = Run()
    run.alarm(later(0), level="orange")
    for t in range(60, 400, 60):  # escalate to the boss (step 2)
        run.deliver_all(later(t))
        run.tick(later(t))
    assert next(iter(run.fs.episodes.values())).chains[0].step == 2
    data = json.loads(config().model_dump_json(by_alias=True))
    data["teams"][0]["escalation"] = data["teams"][0]["escalation"][:1]
    data["teams"][0]["start_step"] = {}
    new = restart_with(run, OnCallConfig.model_validate(data))
    new.tick(later(1000))
    assert next(iter(new.fs.episodes.values())).chains[0].step == 0
    assert new.pages()  # the last step repeats: nobody left unpaged


def test_an_unchanged_file_reconciles_nothing() -> None:
    run = Run()
    run.alarm(later(0), level="orange")
    assert Escalator(config(), {"F-1": "d"}).reconcile(run.fs, later(5)).records == []


def test_a_pending_page_to_a_removed_person_is_recorded_not_sent() -> None:
    run = Run()
    run.alarm(later(0), level="orange")  # a page to ann, pending (not yet delivered)
    assert run.fs.pending()
    data = json.loads(config().model_dump_json(by_alias=True))
    data["people"] = [p for p in data["people"] if p["id"] != "ann"]
    for team in data["teams"]:
        for layer in team["layers"]:
            layer["members"] = [m for m in layer["members"] if m != "ann"]
    new = restart_with(run, OnCallConfig.model_validate(data))
    out = new.esc.reconcile(new.fs, later(5))
    assert new.fs.pending() == []
    [failed] = [r for r in out.records if r.type is RecordType.FAILED]
    assert failed.person == "ann" and "no longer in the on-call file" in failed.detail
