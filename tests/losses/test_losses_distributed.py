"""D4 / losses §9: two gloo ranks on CPU equal one process on the concatenated batch, for every loss."""
from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the spawned workers import dist_worker by name
import dist_worker  # noqa: E402

from models.losses import ITA_TYPES  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def rank_results(tmp_path_factory) -> list[list[dict]]:
    out = tmp_path_factory.mktemp("dist")
    mp.spawn(dist_worker.worker, args=(dist_worker.WORLD, _free_port(), str(out)), nprocs=dist_worker.WORLD, join=True)
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(dist_worker.WORLD)]


def test_every_ita_type_is_covered():
    assert {name for name, _ in dist_worker.CASES} == set(ITA_TYPES)


@pytest.mark.parametrize("case", range(len(dist_worker.CASES)),
                         ids=[f"{n}-{i}" for i, (n, _) in enumerate(dist_worker.CASES)])
def test_two_ranks_equal_single_process(rank_results, case):
    name, kw = dist_worker.CASES[case]
    single = dist_worker.run_case(name, kw, rank=0, world=1)
    for r, ranks in enumerate(rank_results):
        got = ranks[case]
        for step in range(dist_worker.STEPS):
            torch.testing.assert_close(got["grad"][step], single["grad"][step], rtol=1e-6, atol=1e-9,
                                       msg=lambda m: f"{name} rank {r} step {step} feature grad: {m}")
            for a, b in zip(got["param_grads"][step], single["param_grads"][step]):
                torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-9)
        assert got["state"].keys() == single["state"].keys()
        for key, value in single["state"].items():
            torch.testing.assert_close(got["state"][key], value, rtol=1e-6, atol=1e-9,
                                       msg=lambda m: f"{name} rank {r} state {key}: {m}")
    for key, value in rank_results[0][case]["state"].items():  # replicas are identical, bit for bit
        assert torch.equal(value, rank_results[1][case]["state"][key]), key
    assert any(g.abs().max() > 0 for g in single["grad"])
