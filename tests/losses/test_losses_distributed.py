"""The distributed recipe (docs/losses.md §11): two gloo ranks on CPU equal one process on the concatenated batch, for every loss, in
both `dist_mode`s (autograd gather; FastCLIP's no-grad gather plus candidate part)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the spawned workers import dist_worker by name
import dist_worker  # noqa: E402
from rendezvous import file_rendezvous  # noqa: E402

from models.losses import ITA_TYPES, build_loss  # noqa: E402

CASE_IDS = [f"{n}-{i}" for i, (n, _) in enumerate(dist_worker.CASES)]
TOL = {"rtol": 1e-6, "atol": 1e-9}


@pytest.fixture(scope="module")
def rank_results(tmp_path_factory) -> list[dict[str, list[dict]]]:
    """Per rank: {dist_mode: [result of every case]}."""
    out = tmp_path_factory.mktemp("dist")
    mp.spawn(dist_worker.worker, args=(dist_worker.WORLD, file_rendezvous(out), str(out)), nprocs=dist_worker.WORLD, join=True)
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(dist_worker.WORLD)]


def _assert_same_run(got: dict, want: dict, label: str) -> None:
    """Feature and loss-parameter gradients of every step and the final state agree to 1e-6."""
    for step in range(dist_worker.STEPS):
        torch.testing.assert_close(got["grad"][step], want["grad"][step], **TOL,
                                   msg=lambda m: f"{label} step {step} feature grad: {m}")
        for a, b in zip(got["param_grads"][step], want["param_grads"][step], strict=True):
            torch.testing.assert_close(a, b, **TOL, msg=lambda m: f"{label} step {step} parameter grad: {m}")
    assert got["state"].keys() == want["state"].keys()
    for key, value in want["state"].items():
        torch.testing.assert_close(got["state"][key], value, **TOL, msg=lambda m: f"{label} state {key}: {m}")


def test_every_ita_type_is_covered():
    assert {name for name, _ in dist_worker.CASES} == set(ITA_TYPES)


def test_unknown_dist_mode_is_rejected():
    with pytest.raises(ValueError, match="dist_mode must be one of"):
        build_loss("sogclr", 4, dist_mode="reduce_scatter")


@pytest.mark.parametrize("mode", dist_worker.DIST_MODES)
@pytest.mark.parametrize("case", range(len(dist_worker.CASES)), ids=CASE_IDS)
def test_two_ranks_equal_single_process(rank_results, case, mode):
    name, kw = dist_worker.CASES[case]
    single = dist_worker.run_case(name, kw, rank=0, world=1)
    for r, ranks in enumerate(rank_results):
        _assert_same_run(ranks[mode][case], single, f"{name} {mode} rank {r}")
    for key, value in rank_results[0][mode][case]["state"].items():  # replicas are identical, bit for bit
        assert torch.equal(value, rank_results[1][mode][case]["state"][key]), key
    assert any(g.abs().max() > 0 for g in single["grad"])


TILED = [i for i, (name, _) in enumerate(dist_worker.CASES) if dist_worker.tileable(name)]


@pytest.mark.parametrize("mode", dist_worker.DIST_MODES)
@pytest.mark.parametrize("case", TILED, ids=[CASE_IDS[i] for i in TILED])
def test_tiled_two_ranks_equal_untiled_single_process(rank_results, case, mode):
    """`loss_tile` (blocks of 3, ragged) gives the untiled single-process gradients, state and τ on 2 ranks."""
    name, kw = dist_worker.CASES[case]
    single = dist_worker.run_case(name, kw, rank=0, world=1)
    for r, ranks in enumerate(rank_results):
        _assert_same_run(ranks[f"{mode}-tiled"][case], single, f"{name} {mode} tiled rank {r}")


@pytest.mark.parametrize("case", range(len(dist_worker.CASES)), ids=CASE_IDS)
def test_tiled_single_process_equals_untiled(case):
    name, kw = dist_worker.CASES[case]
    if not dist_worker.tileable(name):
        with pytest.raises(ValueError, match="--loss_tile is not supported by --ita_type"):
            build_loss(name, 4, loss_tile=2, **kw)
        return
    _assert_same_run(dist_worker.run_case(name, kw, rank=0, world=1, loss_tile=1),
                     dist_worker.run_case(name, kw, rank=0, world=1), f"{name} tiled")


@pytest.mark.parametrize("case", range(len(dist_worker.CASES)), ids=CASE_IDS)
def test_fastclip_mode_equals_autograd_mode(rank_results, case):
    name, _ = dist_worker.CASES[case]
    for r, ranks in enumerate(rank_results):
        _assert_same_run(ranks["fastclip"][case], ranks["autograd"][case], f"{name} rank {r} fastclip vs autograd")


@pytest.mark.parametrize("case", range(len(dist_worker.CASES)), ids=CASE_IDS)
def test_fastclip_backward_has_no_collective(rank_results, case):
    for ranks in rank_results:
        assert ranks["fastclip"][case]["backward_collectives"] == []
        assert ranks["autograd"][case]["backward_collectives"]  # the counter sees the autograd gather's reduction


@pytest.mark.parametrize("case", range(len(dist_worker.CASES)), ids=CASE_IDS)
def test_modes_are_identical_in_one_process(case):
    name, kw = dist_worker.CASES[case]
    auto = dist_worker.run_case(name, kw, rank=0, world=1, dist_mode="autograd")
    fast = dist_worker.run_case(name, kw, rank=0, world=1, dist_mode="fastclip")
    for a, b in zip(auto["grad"], fast["grad"], strict=True):
        assert torch.equal(a, b), name
    for key, value in auto["state"].items():
        assert torch.equal(value, fast["state"][key]), key
