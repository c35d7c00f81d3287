"""Each benchmark command runs once on tiny data and towers and writes well-formed JSON and markdown.

No timing is asserted: the machines running tests are shared and their timings mean nothing.
"""
import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch


REPO = Path(__file__).resolve().parents[1]
TOWERS = ["--image_encoder", "test_vit", "--image_res", "32", "--text_encoder", "Transformer", "--text_width", "32",
          "--text_heads", "2", "--text_layers", "1", "--context_length", "24", "--embed_dim", "32"]


@pytest.fixture(scope="module")
def shapes(build_shapes) -> Path:
    return build_shapes("bench_shapes", 128, 20, 1, 32)


def run_benchmark(script: str, *args: str) -> str:
    """Run `benchmarks/<script>`; its stdout."""
    command = [sys.executable, str(REPO / "benchmarks" / script), *args]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{' '.join(command)}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def markdown_table(text: str) -> list[str]:
    """The lines of the first markdown table in `text` (header, separator, rows); asserts it is well-formed."""
    all_lines = text.splitlines()
    start = next(i for i, line in enumerate(all_lines) if line.startswith("|"))
    lines = []
    for line in all_lines[start:]:
        if not line.startswith("|"):
            break
        lines.append(line)
    assert len(lines) >= 3 and set(lines[1]) <= set("|-: "), text
    assert len({line.count("|") for line in lines}) == 1, text
    return lines


def test_loss_cost_reports_the_matmul_floor(tmp_path):
    out = tmp_path / "new" / "loss_cost.json"  # the folder is created
    run_benchmark("loss_cost.py", "--batch-sizes", "16", "--dim", "16", "--repeats", "1", "--threads", "1",
                  "--out", str(out))
    rows = json.loads(out.read_text())["rows"]
    floor = [r for r in rows if r["loss"].startswith("matmul floor")]
    assert len(floor) == 1 and floor[0]["time_x_floor"] == 1.0
    assert {"clip", "sogclr", "fastclip_v3"} <= {r["loss"] for r in rows}
    assert all(r["ms"] > 0 and r["time_x_floor"] > 0 for r in rows)
    assert len(markdown_table(out.with_suffix(".md").read_text())) == 2 + len(rows)


def test_loss_memory_reports_tiled_and_untiled_rows(tmp_path):
    out = tmp_path / "new" / "loss_memory.json"  # the folder is created
    run_benchmark("loss_memory.py", "--batch-sizes", "16", "32", "--dim", "8", "--tile", "8", "--repeats", "1",
                  "--threads", "1", "--losses", "clip", "siglip", "--untiled-max", "16", "--out", str(out))
    rows = json.loads(out.read_text())["rows"]
    # above --untiled-max only the tiled rows run
    assert [(r["loss"], r["batch"], r["tile"]) for r in rows] == [
        ("clip", 16, 0), ("clip", 16, 8), ("siglip", 16, 0), ("siglip", 16, 8), ("clip", 32, 8), ("siglip", 32, 8)]
    assert all(r["ms"] > 0 and r["peak_mib"] > 0 for r in rows)
    assert len(markdown_table(out.with_suffix(".md").read_text())) == 2 + 4


def test_throughput_vs_openclip_runs_both_trainers(tmp_path, shapes):
    run_benchmark("throughput_vs_openclip.py", "--work-dir", str(tmp_path), "--demo-dir", str(shapes),
                  "--image-encoder", "test_vit", "--image-res", "32", "--text-width", "32", "--text-heads", "2",
                  "--text-layers", "1", "--context-length", "24", "--embed-dim", "32", "--batch-size", "16",
                  "--num-samples", "32", "--epochs", "1", "--repeats", "1", "--steps", "1", "--workers", "0",
                  "--threads", "1")
    results = json.loads((tmp_path / "throughput_vs_openclip.json").read_text())
    for key in ("trainers", "synthetic"):
        assert results[key]["ours_samples_per_s"] > 0 and results[key]["openclip_samples_per_s"] > 0
        assert results[key]["ratio"] == pytest.approx(
            results[key]["ours_samples_per_s"] / results[key]["openclip_samples_per_s"])
    config = json.loads((tmp_path / "openclip_model" / "open_clip_config.json").read_text())["model_cfg"]
    assert config["vision_cfg"]["timm_model_name"] == "test_vit" and config["text_cfg"]["width"] == 32
    assert len(markdown_table((tmp_path / "throughput_vs_openclip.md").read_text())) == 4


def test_loss_comparison_writes_report_and_plots(tmp_path, shapes):
    readme = tmp_path / "README.md"
    readme.write_text("# x\n<!-- loss-comparison:begin (written by benchmarks/loss_comparison.py --readme) -->\n"
                      "old\n<!-- loss-comparison:end -->\ntail\n")
    args = ["--ita-types", "clip", "--batch-sizes", "16", "--seeds", "0", "--epochs", "1", "--train-frac", "0.25",
            "--out-dir", str(tmp_path / "runs"), "--demo-dir", str(shapes), "--results-md",
            str(tmp_path / "results.md"), "--plots-dir", str(tmp_path / "plots"), "--readme", str(readme),
            "--", *TOWERS, "--workers", "0", "--val_workers", "0"]
    run_benchmark("loss_comparison.py", *args)
    report = json.loads((tmp_path / "runs" / "loss_comparison.json").read_text())
    assert [(r["ita_type"], r["batch"], r["seeds"]) for r in report["summary"]] == [("clip", 16, [0])]
    assert len(report["runs"][0]["curve"]) == 1
    assert not list((tmp_path / "runs").glob("**/*.pth"))
    assert len(markdown_table((tmp_path / "results.md").read_text())) == 3
    for plot in ("metric_vs_epoch.png", "metric_vs_batch.png"):
        assert (tmp_path / "plots" / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = readme.read_text()
    assert "old" not in text and text.endswith("<!-- loss-comparison:end -->\ntail\n") and "| clip | 16 |" in text
    again = run_benchmark("loss_comparison.py", *args)  # incremental: the finished run is skipped
    assert "training clip" not in again and "1/1 runs finished" in again


def test_loader_throughput_times_both_loaders(tmp_path):
    out = tmp_path / "loader.json"
    printed = run_benchmark("loader_throughput.py", "--demo_dir", str(tmp_path / "demo"), "--num_train", "64",
                            "--image_size", "32", "--image_res", "16", "--shard_size", "16", "--batch_size", "8",
                            "--context_length", "16", "--workers", "0", "--repeats", "1", "--out", str(out))
    rows = json.loads(out.read_text())["results"]
    assert [(r["loader"], r["workers"]) for r in rows] == [("json + folder", 0), ("webdataset", 0)]
    assert all(r["steady_samples_per_s"] > 0 and r["first_batch_s"] >= 0 for r in rows)
    assert len(markdown_table(printed)) == 4


def test_host_sync_cost_times_both_variants_and_the_checks_change_nothing(tmp_path):
    out = tmp_path / "sync.json"
    run_benchmark("host_sync_cost.py", "--steps-per-epoch", "1", "--epochs", "2", "--rounds", "1", "--threads", "1",
                  "--work-dir", str(tmp_path), "--out", str(out),
                  "--clip-flags", " ".join([*TOWERS, "--workers", "0", "--val_workers", "0"]))
    results = json.loads(out.read_text())
    assert {variant: len(values) for variant, values in results["ms_per_step"].items()} == {"with": 1, "without": 1}
    assert all(value > 0 for value in results["us_per_call"].values())
    assert len(markdown_table(out.with_suffix(".md").read_text())) == 4
    # nothing is non-finite or out of range here, so dropping both checks trains the same weights
    weights = [torch.load(tmp_path / f"run_{variant}_0" / "checkpoint_2.pth", weights_only=True)["model"]
               for variant in ("with", "without")]
    assert all(torch.equal(weights[0][key], weights[1][key]) for key in weights[0])


TINY_PAIR = ["--image-encoder", "test_vit", "--image-res", "32", "--text-encoder", "Transformer", "--clip-flags",
             "--text_width 32 --text_heads 2 --text_layers 1 --context_length 24 --embed_dim 32", "--threads", "1"]


def test_largest_batch_search_doubles_then_bisects_to_an_eighth():
    sys.path.insert(0, str(REPO / "benchmarks"))
    from batch_memory import largest
    found, result, probes = largest(lambda n: {"n": n} if n <= 37 else None, 4, 1000)
    assert 37 - 37 // 8 <= found <= 37 and result == {"n": found} and probes <= 8
    assert largest(lambda n: {"n": n}, 4, 20)[:2] == (20, {"n": 20})  # capped
    assert largest(lambda n: None, 4, 20)[:2] == (0, None)  # nothing fits


def test_batch_memory_reports_the_largest_batch_per_feature(tmp_path):
    out = tmp_path / "batch_memory.json"
    printed = run_benchmark("batch_memory.py", *TINY_PAIR, "--budget-mib", "1e9", "--start", "4", "--max-batch",
                            "8", "--features", "plain", "accum_freq", "--work-dir", str(tmp_path), "--out", str(out))
    rows = json.loads(out.read_text())["rows"]
    assert [(r["feature"], r["micro_batch"], r["accum_freq"], r["effective_batch"], r["at_cap"]) for r in rows] == [
        ("plain", 8, 1, 8, True), ("accum_freq", 8, 2, 16, True)]
    assert all(0 < r["peak_mib"] < 1e9 for r in rows)
    assert len(markdown_table(printed)) == 2 + 2 and "| plain | ≥ 8 | 8 × 1 |" in printed


def test_feature_cost_times_every_feature_against_plain(tmp_path):
    out, png = tmp_path / "feature_cost.json", tmp_path / "feature_cost.png"
    run_benchmark("feature_cost.py", *TINY_PAIR, "--batch", "4", "--steps", "1", "--tile", "2",
                  "--work-dir", str(tmp_path), "--out", str(out), "--plot", str(png))
    rows = json.loads(out.read_text())["rows"]
    assert [r["feature"] for r in rows] == ["plain", "accum_freq 2", "accum_freq 4", "grad_checkpointing",
                                           "loss_tile 2", "bf16 autocast"]
    assert [(r["batch"], r["accum_freq"]) for r in rows[:3]] == [(4, 1), (2, 2), (1, 4)]
    assert rows[0]["time_x_plain"] == 1.0
    assert all(r["samples_per_s"] > 0 and r["peak"] > 0 and torch.isfinite(torch.tensor(r["loss"])) for r in rows)
    assert len(markdown_table(out.with_suffix(".md").read_text())) == 2 + len(rows)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_distillation_writes_a_row_per_objective_and_the_untrained_reference(tmp_path, build_shapes):
    # two zero-shot images per class, so that the probe's split of the zero-shot set has a test half
    demo = build_shapes("bench_distill", 64, 20, 2, 32)
    out = tmp_path / "runs"
    args = ["--ita-types", "clip", "seed", "--seeds", "3", "--epochs", "1", "--train-size", "32", "--batch-size", "16",
            "--queue-size", "32", "--prototypes", "16", "--jobs", "2", "--out-dir", str(out), "--demo-dir", str(demo),
            "--", "--image_encoder", "test_vit", "--workers", "0", "--val_workers", "0"]
    printed = run_benchmark("distillation.py", *args)
    with open(out / "distillation.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["objective"] for row in rows] == ["untrained student", "clip", "seed"]
    assert [row["direction"] for row in rows] == ["–", "bi", "uni"]
    for row in rows:
        assert row["seeds"] == "3"
        for key in ("zeroshot_top1", "val_txt_r1", "val_img_r1", "knn_demo_top1", "linear_demo_top1"):
            assert 0 <= float(row[key]) <= 100, (row, key)
            assert math.isnan(float(row[f"{key}_se"]))  # one seed: no standard error
    assert len(markdown_table(printed)) == 2 + 3
    assert (out / "distillation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.glob("**/*.pth"))
    assert "training" not in run_benchmark("distillation.py", *args)  # finished runs are skipped


def test_distillation_standard_error_is_the_seed_spread_over_root_n():
    sys.path.insert(0, str(REPO / "benchmarks"))
    from distillation import mean_se
    assert mean_se([1.0, 2.0, 6.0]) == pytest.approx((3.0, math.sqrt(7.0) / math.sqrt(3.0)))
