"""scripts/defaults_panel.py and defaults_cv.py: judging, tables, folds, and a smoke run."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


panel = _load_script("defaults_panel")
cv = _load_script("defaults_cv")

SETTINGS = {
    "patch_size": 5, "scaling": "standardised per channel", "ensemble_size": 5,
    "hidden_size": 32, "train_sequences": 40, "validation_sequences": 10,
    "steps_run": [800, 620, 1000, 800, 700], "max_steps": 1000,
    "best_epoch": [300, 250, 410, 290, 100], "epochs": 500,
}  # fmt: skip


def row(name: str, scores: list[float], reference: dict[str, float]) -> dict:
    fits = [{"seed": i, "score": s, "seconds": 3.0, "settings": SETTINGS}
            for i, s in enumerate(scores)]  # fmt: skip
    return {"name": name, "fits": fits, "reference": reference, "measured_here": False,
            "before": 0.5}  # fmt: skip


def test_judging_uses_the_mean_over_seeds_and_the_direction_of_the_metric():
    gun = panel.SETS["GunPoint"]
    assert panel.judge(gun, row("GunPoint", [0.9, 0.92], gun.published)) == (True, False)
    assert panel.judge(gun, row("GunPoint", [0.99, 0.97], gun.published)) == (True, True)
    assert panel.judge(gun, row("GunPoint", [0.95, 0.85], gun.published))[0] is False
    covid = panel.SETS["Covid3Month"]
    assert panel.judge(covid, row("Covid3Month", [0.040], covid.published)) == (True, False)
    assert panel.judge(covid, row("Covid3Month", [0.045], covid.published)) == (False, False)
    arrow = panel.SETS["ArrowHead"]
    assert panel.judge(arrow, row("ArrowHead", [0.7], {"1-NN DTW": 0.8})) == (False, None)


def test_the_table_shows_means_ranges_targets_and_settings():
    gun, covid = panel.SETS["GunPoint"], panel.SETS["Covid3Month"]
    rows = [row("GunPoint", [0.9, 0.92], gun.published),
            row("Covid3Month", [0.04, 0.05], covid.published)]  # fmt: skip
    text = panel.markdown(rows, [0, 1], seconds=120.0)
    assert "| GunPoint | 0.910 | 0.900-0.920 | 0.500 | 1-NN DTW 0.907 | yes | no (ResNet" in text
    assert "| Covid3Month | 0.0450 | 0.0400-0.0500 |" in text
    assert "training mean 0.0447 | **no** |" in text
    assert (
        "patch 5; standardised per channel; 5 x hidden 32; 40+10 train+val; steps 620-1000 of "
        "1000, best epochs 100-410 of 500 |" in text
    )
    assert "Targets met, panel: 1 of 2." in text
    assert "Mean distance to ResNet over the 1 sets with its figure: 0.081" in text


def test_smoke_run_writes_the_docs(tmp_path, capsys):
    pytest.importorskip("aeon", reason="the panel's data sets ship with aeon")
    assert panel.main(["--smoke", "--docs-dir", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "defaults.json").read_text())["rows"]
    assert [r["name"] for r in rows] == ["ItalyPowerDemand"]
    assert 0 <= rows[0]["fits"][0]["score"] <= 1
    assert rows[0]["fits"][0]["settings"]["max_steps"] == 20
    written = (tmp_path / "defaults.md").read_text()
    assert "| ItalyPowerDemand |" in written
    (tmp_path / "defaults.md").unlink()
    assert panel.main(["--rewrite", "--docs-dir", str(tmp_path)]) == 0
    assert (tmp_path / "defaults.md").read_text() == written


def test_cross_validation_folds_are_seeded_even_and_stratified():
    labels = ["a"] * 12 + ["b"] * 7
    fold = cv.folds(labels, classification=True)
    assert fold.tolist() == cv.folds(labels, classification=True).tolist()  # seeded
    for label, count in (("a", 12), ("b", 7)):
        per_fold = [sum(1 for i, f in enumerate(fold) if labels[i] == label and f == k)
                    for k in range(cv.FOLDS)]  # fmt: skip
        assert sum(per_fold) == count and max(per_fold) - min(per_fold) <= 1
    plain = cv.folds([0.5] * 10, classification=False)
    assert sorted(plain.tolist()) == [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert set(cv.CANDIDATES["single"]) == {"ensemble_size"}  # every candidate is an argument
