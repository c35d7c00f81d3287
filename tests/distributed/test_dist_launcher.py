"""Launcher detection and process-group set-up from fake torchrun / srun / plain environments."""
from __future__ import annotations

import pytest
import torch

from engine import distributed
from engine.distributed import (DistEnv, DistributedSetupError, detect_launcher, init_distributed, local_device,
                                shard_range, slurm_master_addr, slurm_rendezvous)

SRUN_TASK = {"SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1", "SLURM_JOB_ID": "123456",
             "SLURM_JOB_NODELIST": "gpu[01-04]"}


def test_plain_process_is_single():
    assert detect_launcher({}) == DistEnv(0, 1, 0, "none")


def test_torchrun_variables():
    env = detect_launcher({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "MASTER_ADDR": "h", "MASTER_PORT": "1"})
    assert env == DistEnv(3, 4, 1, "torchrun") and env.distributed and not env.is_main


def test_torchrun_inside_a_slurm_allocation_wins():
    env = detect_launcher({**SRUN_TASK, "RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0"})
    assert env.launcher == "torchrun" and env.world_size == 2


def test_srun_task_variables():
    assert detect_launcher(SRUN_TASK) == DistEnv(5, 8, 1, "slurm")


def test_srun_step_size_beats_the_job_size():
    """`srun -n 2` inside an 8-task allocation: the step has 2 ranks."""
    env = detect_launcher({**SRUN_TASK, "SLURM_PROCID": "1", "SLURM_STEP_NUM_TASKS": "2"})
    assert env.world_size == 2 and env.rank == 1


def test_single_task_slurm_job_is_a_single_process():
    """A 1-task batch job also has SLURM_PROCID=0: no process group."""
    assert detect_launcher({"SLURM_PROCID": "0", "SLURM_NTASKS": "1", "SLURM_LOCALID": "0"}).launcher == "none"


@pytest.mark.parametrize("bad", [{"RANK": "4", "WORLD_SIZE": "4"}, {"RANK": "x", "WORLD_SIZE": "2"},
                                 {"SLURM_PROCID": "-1", "SLURM_NTASKS": "2"}])
def test_inconsistent_variables_fail_clearly(bad):
    with pytest.raises(DistributedSetupError):
        detect_launcher(bad)


def test_master_addr_is_the_first_host_of_the_step(tmp_path, monkeypatch):
    fake = tmp_path / "scontrol"
    fake.write_text('#!/bin/sh\n[ "$1 $2" = "show hostnames" ] || exit 3\n'
                    'echo "$3" | sed -e "s/gpu\\[01-04\\]/gpu01 gpu02 gpu03 gpu04/" | tr " " "\\n"\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    assert slurm_master_addr(SRUN_TASK) == "gpu01"
    assert slurm_master_addr({**SRUN_TASK, "SLURM_STEP_NODELIST": "gpu03"}) == "gpu03"


def test_bracketed_node_list_without_scontrol_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(DistributedSetupError, match="MASTER_ADDR"):
        slurm_master_addr(SRUN_TASK)


def test_rendezvous_variables_for_an_srun_task():
    env = detect_launcher({**SRUN_TASK, "SLURM_JOB_NODELIST": "node7"})
    assert slurm_rendezvous({**SRUN_TASK, "SLURM_JOB_NODELIST": "node7"}, env) == {
        "RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "MASTER_ADDR": "node7",
        "MASTER_PORT": str(distributed.DEFAULT_PORT_BASE + 123456 % 20000)}


def test_rendezvous_keeps_what_the_script_exported():
    given = {**SRUN_TASK, "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "4820"}
    assert "MASTER_ADDR" not in slurm_rendezvous(given, detect_launcher(given))
    assert "MASTER_PORT" not in slurm_rendezvous(given, detect_launcher(given))


def _fake_launch(monkeypatch, variables: dict[str, str]) -> None:
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_STEP_NUM_TASKS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)


def test_world_size_flag_must_match_the_launcher(monkeypatch):
    _fake_launch(monkeypatch, {"RANK": "0", "WORLD_SIZE": "2"})
    with pytest.raises(DistributedSetupError, match="--world_size 8 disagrees"):
        init_distributed(None, "cpu", world_size_flag=8)


def test_world_size_flag_with_a_single_process(monkeypatch):
    _fake_launch(monkeypatch, {})
    with pytest.raises(DistributedSetupError, match="1 process"):
        init_distributed(True, "cpu", world_size_flag=8)
    assert init_distributed(None, "cpu", world_size_flag=1) == DistEnv()


def test_no_distributed_with_several_processes_is_refused(monkeypatch):
    _fake_launch(monkeypatch, {"RANK": "1", "WORLD_SIZE": "2"})
    with pytest.raises(DistributedSetupError, match="--no-distributed"):
        init_distributed(False, "cpu")


def test_distributed_flag_with_one_process_runs_without_a_group(monkeypatch, capsys):
    _fake_launch(monkeypatch, {})
    assert init_distributed(True, "cpu") == DistEnv()
    assert "single process" in capsys.readouterr().out
    assert not torch.distributed.is_initialized()


def test_cpu_device_and_single_shard():
    assert local_device(DistEnv(1, 2, 1, "torchrun"), "cpu") == torch.device("cpu")
    assert shard_range(10, align=4) == range(10)


@pytest.mark.parametrize("total,align,world,expected", [
    (40, 8, 2, [range(24), range(24, 40)]),
    (10, 1, 3, [range(4), range(4, 8), range(8, 10)]),
    (5, 8, 2, [range(5), range(5, 5)]),
])
def test_shards_are_whole_batches_and_cover_everything(monkeypatch, total, align, world, expected):
    shards = []
    for rank in range(world):
        monkeypatch.setattr(distributed, "rank_and_world", lambda rank=rank: (rank, world))
        shards.append(shard_range(total, align))
    assert shards == expected
