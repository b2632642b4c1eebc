"""The run report: stage figures from the store, win rates and leaderboard from the arena."""

from __future__ import annotations

from pathlib import Path

from engine.recipe.report import build_report
from store import NewStage, Store, open_workspace


def arena_run(store: Store, tmp_path: Path) -> int:
    stages = [("sft", "sft", {}), ("ppo", "ppo", {}), ("arena", "sample", {}),
              ("judge", "rank", {"from": "stage:arena", "pairwise": True})]
    run = store.create_run(
        name="demo", spec_text="", spec={"stages": {n: {"kind": k, **c} for n, k, c in stages}}, spec_path=None,
        stages=[NewStage(name=n, kind=k, position=i, parent=None, config=c) for i, (n, k, c) in enumerate(stages)],
    )
    by_name = {s.name: s for s in store.list_stages(run_id=run.id)}
    # A rank stage that ran has replaced its config with what it resolved (as engine/stages/rank/stage.py does).
    store.update_stage(by_name["judge"].id, config={"batch_id": 1, "items": 4, "judge": "demo"})
    for name in ("sft", "ppo"):
        store.update_stage(by_name[name].id, output_path=str(tmp_path / name / "final"))
    store.add_metrics([
        {"run_id": run.id, "stage_id": by_name["sft"].id, "key": "eval/judge_score", "step": step, "value": value,
         "wall_time": 0.0} for step, value in ((0, 0.01), (400, 0.7))
    ] + [{"run_id": run.id, "stage_id": by_name["ppo"].id, "key": "ppo/kl", "step": 10, "value": 1.5,
          "wall_time": 0.0}])

    # The arena: both policies answer 4 prompts; ppo wins 2, ties 1 (by the judge) and loses 1 (to a person).
    prompts = store.add_prompts([{"text": f"q{i}"} for i in range(4)])
    batch = store.create_sample_batch(name="demo/arena", settings={}, sources=[], run_id=run.id,
                                      stage_id=by_name["arena"].id)
    store.add_samples([{"prompt_id": p, "batch_id": batch.id, "response": f"{who} {p}",
                        "checkpoint": str(tmp_path / who / "final")} for p in prompts for who in ("sft", "ppo")])
    store.feedback.items_from_batch(batch_id=batch.id, pairwise=True)
    verdicts = iter([("judge:demo", "ppo"), ("judge:demo", "ppo"), ("judge:demo", None), ("ann", "sft")])
    while (item := store.feedback.next_item(batch_id=batch.id, annotator="anyone")) is not None:
        annotator, winner = next(verdicts)
        store.feedback.release(annotator="anyone")
        if winner is None:
            store.feedback.judge(item_id=item.id, annotator=annotator, outcome="tie", shown=item.shown)
        else:
            first_wins = item.responses[0].text.startswith(winner)
            store.feedback.judge(item_id=item.id, annotator=annotator, shown=item.shown,
                                 outcome="a_better" if first_wins else "b_better")
    return run.id


def test_the_report_shows_figures_win_rates_and_the_leaderboard(tmp_path: Path) -> None:
    ws = open_workspace(tmp_path / "ws")
    report = build_report(ws.store, arena_run(ws.store, tmp_path))
    ws.close()

    sft = next(s for s in report.stages if s.stage == "sft")
    assert [(f.label, f.first, f.last) for f in sft.figures] == [("judge score", 0.01, 0.7)]
    ppo = next(s for s in report.stages if s.stage == "ppo")
    assert [(f.label, f.last) for f in ppo.figures] == [("KL to SFT", 1.5)]

    rates = {(w.policy, w.annotators): w for w in report.win_rates}
    judges = rates[("ppo", "judges")]
    assert (judges.wins, judges.ties, judges.losses, judges.rate) == (2, 1, 0, 2.5 / 3)
    people = rates[("ppo", "people")]
    assert (people.wins, people.losses, people.rate) == (0, 1, 0.0)
    assert [r.player for r in report.leaderboard] == ["ppo", "sft"]  # 2.5 of 4 games
    assert report.to_json()["win_rates"][0]["baseline"] == "sft"


def test_a_run_without_an_arena_says_so(tmp_path: Path) -> None:
    ws = open_workspace(tmp_path / "ws")
    run = ws.store.create_run(name="p", spec_text="", spec={}, spec_path=None,
                              stages=[NewStage(name="pretrain", kind="pretrain", position=0, parent=None, config={})])
    report = build_report(ws.store, run.id)
    ws.close()
    assert report.win_rates == () and "no arena" in report.notes[0]
