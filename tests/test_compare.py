"""recipes/compare.py end to end on a tiny image tree, and the summary against numpy."""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from okdph_keras import compare
from okdph_keras.config import Config

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def image_tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("tree")
    rng = np.random.default_rng(0)
    for split, count in (("train", 12), ("test", 4)):
        for label, name in enumerate(("a", "b")):
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                image = rng.integers(0, 100, size=(8, 8, 3), dtype=np.uint8)
                image[..., label] += 120
                (root / split / name / f"{i}.png").write_bytes(tf.io.encode_png(image).numpy())
    return root


def test_compare_recipe_trains_summarises_and_reuses_runs(tmp_path, image_tree):
    command = [
        sys.executable,
        "-m",
        "recipes.compare",
        f"--dataset={image_tree}",
        "--methods=independent,okdph",
        "--seeds=2",
        f"--output_dir={tmp_path}",
        "--smoke",
        "--model=small_cnn",
        "--image_size=8",
        "--style=cifar",
        "--normalization=cifar10",
        "--views=hflip,cutout,none",
        "--flatness_radius=0.05",
    ]
    first = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "[4/4] okdph_seed43: training" in first.stdout

    summary = json.loads((tmp_path / "comparison.json").read_text())
    assert summary["seeds"] == [42, 43]
    for method in ("independent", "okdph"):
        results = [
            json.loads((tmp_path / "runs" / f"{method}_seed{s}" / "results.json").read_text())
            for s in (42, 43)
        ]
        exported = [r["final_test_accuracy"][f"student_{r['best_student']}"] for r in results]
        row = summary["methods"][method]
        assert row["exported_student"]["mean"] == pytest.approx(np.mean(exported))
        assert row["exported_student"]["std"] == pytest.approx(np.std(exported, ddof=1))
        hwm = [r["final_test_accuracy"]["hwm"] for r in results]
        assert row["hwm"]["mean"] == pytest.approx(np.mean(hwm))
        assert row["sharpness"]["mean"] > -1.0 and len(row["sharpness"]["values"]) == 2
        assert (tmp_path / "saved_models" / f"{method}_seed42" / "student.keras").exists()
    config = json.loads((tmp_path / "runs" / "independent_seed43" / "config.json").read_text())
    assert (
        config["method"] == "independent"
        and config["seed"] == 43
        and config["views"] == ["hflip", "cutout", "none"]
    )
    table = (tmp_path / "comparison.md").read_text()
    assert "| independent |" in table and "| okdph |" in table and "exported_student" in table
    assert (tmp_path / "comparison.png").read_bytes()[:4] == b"\x89PNG"

    checkpoint = tmp_path / "runs" / "okdph_seed42" / "results.json"
    before = checkpoint.stat().st_mtime_ns
    again = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count(": reused") == 4 and checkpoint.stat().st_mtime_ns == before


def test_method_configs_change_only_method_seed_and_names(tmp_path):
    base = Config(
        dataset="cifar10",
        model="small_cnn",
        views=("hflip", "cutout", "none"),
        style="cifar",
        image_size=8,
        normalization=((0.5,), (0.5,)),
        run_name="base",
        epochs=7,
    )
    config = compare.method_config(base, "okdph_no_fusion", 5, str(tmp_path))
    assert config.method == "okdph" and config.fusion_gamma == 0.0 and config.seed == 5
    assert config.run_name == "okdph_no_fusion_seed5" and config.epochs == 7
    assert compare.method_config(base, "okdph_reference", 1, str(tmp_path)).hwm_gradient is False
    with pytest.raises(ValueError, match="method='two' is not allowed; it must be one of"):
        compare.method_config(base, "two", 1, str(tmp_path))
    # OKDDip gets the authors' 3 peers and a leader; the others keep the base's students.
    okddip = compare.method_config(base, "okddip", 1, str(tmp_path))
    assert okddip.views == ("hflip", "cutout", "hflip", "cutout", "none")
    assert compare.method_config(base, "one", 1, str(tmp_path)).views == base.views
    settings = compare.method_settings(compare.method_config(base, "dml", 1, str(tmp_path)))
    assert settings == "students=2, beta=1.0, temperature=1.0, views=hflip,cutout,none"
