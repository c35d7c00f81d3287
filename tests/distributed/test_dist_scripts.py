"""run.slurm / eval.slurm: launcher selection in dry-run mode, overrides, and a real tiny run."""
from __future__ import annotations

import json
import shlex
import subprocess

import pytest

from dist_helpers import REPO, TINY, clean_env, load_checkpoint

VENV = str(REPO / ".venv") if (REPO / ".venv" / "bin" / "python").exists() else None


def _bash(script: str, *flags: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess:
    variables = clean_env(**env)
    variables.pop("CUDA_VISIBLE_DEVICES")
    if VENV:
        variables.setdefault("VENV", VENV)
    variables.setdefault("CONDA_ENV", "")
    return subprocess.run(["bash", str(REPO / script), *flags], cwd="/", env=variables, capture_output=True,
                          text=True, timeout=timeout, check=False)


def _dry(script: str, *flags: str, **env: str) -> list[str]:
    done = _bash(script, *flags, DRY_RUN="1", **env)
    assert done.returncode == 0, done.stderr
    assert "interpreter:" in done.stderr
    return shlex.split(done.stdout)


@pytest.mark.parametrize("script", ["run.slurm", "eval.slurm"])
def test_sbatch_directives_come_first_and_bash_syntax_is_valid(script):
    """sbatch reads #SBATCH lines only before the first command; output goes to job_output/ (tracked)."""
    lines = (REPO / script).read_text().splitlines()
    first_command = next(i for i, line in enumerate(lines) if line.strip() and not line.startswith("#"))
    directives = [i for i, line in enumerate(lines) if line.startswith("#SBATCH")]
    assert directives and max(directives) < first_command
    assert "#SBATCH --output=job_output/%x.%j.out" in lines and "set -euo pipefail" in lines
    assert (REPO / "job_output" / ".gitkeep").exists()
    assert subprocess.run(["bash", "-n", str(REPO / script)], check=False).returncode == 0


def test_single_process_defaults_are_the_seed_command():
    cmd = _dry("run.slurm")
    assert cmd[1:4] == ["-u", "./bimodal_exps/clip.py", "--data_path"] and cmd[-1] == "--no-distributed"
    text = " ".join(cmd)
    for part in ("--data_path ./datasets", "--ann_path ./clip_train", "--train_file cc3m_train_subset.json",
                 "--train_image_root cc3m_subset_100k/", "--output_dir output/isogclr_new_cc3m_g0.8_e30",
                 "--init_model", "--use_amp", "--ita_type isogclr_new", "--sogclr_gamma 0.8", "--rho_init 6.0",
                 "--epochs 30"):
        assert part in text, part
    assert "--requeue_on_preempt" not in cmd and "--resume" not in cmd


def test_srun_when_slurm_runs_several_tasks():
    cmd = _dry("run.slurm", SLURM_NTASKS="8", NGPUS="4")
    assert cmd[:2] == ["srun", "--kill-on-bad-exit=1"] and cmd[3] == "-u"
    assert cmd[-3:] == ["--distributed", "--world_size", "8"]


def test_torchrun_when_ngpus_without_slurm():
    cmd = _dry("run.slurm", NGPUS="4")
    assert cmd[1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=4"]
    assert cmd[5] == "./bimodal_exps/clip.py" and cmd[-1] == "--distributed"


def test_environment_overrides_and_appended_flags():
    cmd = _dry("run.slurm", "--batch_size_train", "8", epochs="5", ita_type="sogclr", gamma="0.9", data_path="/d")
    text = " ".join(cmd)
    assert "--epochs 5" in text and "--ita_type sogclr" in text and "--data_path /d" in text
    assert "--output_dir output/sogclr_cc3m_g0.9_e5" in text
    assert cmd[-3:] == ["--batch_size_train", "8", "--no-distributed"]


def test_recipe_config_replaces_the_default_loss_and_data_flags():
    cmd = _dry("run.slurm", "--epochs", "1", config="configs/cc3m/sogclr.yaml")
    assert cmd[cmd.index("--config") + 1] == "configs/cc3m/sogclr.yaml"
    assert cmd[cmd.index("--output_dir") + 1] == "output/cc3m_sogclr"
    for flag in ("--ita_type", "--init_model", "--use_amp", "--data", "--train_file", "--train-data"):
        assert flag not in cmd, flag  # the recipe sets them
    assert cmd.count("--epochs") == 1
    assert cmd[-3:] == ["--epochs", "1", "--no-distributed"]
    shards = _dry("run.slurm", config="configs/cc12m/fastclip_v3.yaml", data="cc12m", data_path="/d")
    assert shards[shards.index("--train-data") + 1] == "/d/cc12m/{00000..01242}.tar"
    assert shards[shards.index("--data") + 1] == "cc12m" and "--output_dir" in shards
    missing = _bash("run.slurm", DRY_RUN="1", config="configs/nope.yaml")
    assert missing.returncode == 1 and "config=configs/nope.yaml: file not found" in missing.stderr


def test_requeue_flag_and_resume_after_a_requeue(tmp_path):
    (tmp_path / "checkpoint_last.pth").write_bytes(b"")
    cmd = _dry("run.slurm", requeue="1", output_dir=str(tmp_path), SLURM_RESTART_COUNT="1")
    assert "--requeue_on_preempt" in cmd
    assert cmd[cmd.index("--resume") + 1] == f"{tmp_path}/checkpoint_last.pth"
    assert "--resume" not in _dry("run.slurm", output_dir=str(tmp_path))  # a fresh job starts from scratch


def test_eval_command_and_missing_checkpoint():
    text = " ".join(_dry("eval.slurm", NGPUS="2"))
    assert ("--evaluate --checkpoint output/isogclr_new_cc3m_g0.8_e30/checkpoint_30.pth --zs_dataset imagenet "
            "--zs_datafolder ./datasets/imagenet/val") in text
    assert "--output_dir output/eval_isogclr_new_cc3m_g0.8_e30" in text and "torch.distributed.run" in text
    cifar = " ".join(_dry("eval.slurm", zs_dataset="cifar100", data_path="/data"))
    assert "--zs_dataset cifar100 --zs_datafolder /data " in cifar + " "
    assert "--eval_suite default" in text
    assert "--eval_suite full" in " ".join(_dry("eval.slurm", eval_suite="full"))
    done = _bash("eval.slurm", checkpoint="/nonexistent/checkpoint_30.pth")
    assert done.returncode == 1 and "checkpoint /nonexistent/checkpoint_30.pth not found" in done.stderr


def test_real_tiny_run_and_evaluation_through_the_scripts(shapes, tmp_path):
    data = {"data_path": str(shapes / "datasets"), "ann_path": str(shapes / "clip_train"), "epochs": "1",
                "ita_type": "clip"}
    out = tmp_path / "train"
    tiny = [*TINY, "--image_pretrained", "false", "--text_pretrained", "false", "--batch_size_train", "64",
            "--zs_dataset", "none"]
    trained = _bash("run.slurm", *tiny, timeout=180, output_dir=str(out), **data)
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert load_checkpoint(out / "checkpoint_1.pth")["args"]["ita_type"] == "clip"
    evaluated = _bash("eval.slurm", *TINY, timeout=180, output_dir=str(tmp_path / "eval"),
                      checkpoint=str(out / "checkpoint_1.pth"), **data)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    results = json.loads((tmp_path / "eval" / "eval_results.json").read_text())
    assert {"r_mean", "zeroshot_top1"} <= set(results["metrics"]) and results["epoch"] == 1
