"""The distributed recipe (docs/losses.md §11) for the unimodal losses: two gloo ranks equal one process on the concatenated batch."""
from __future__ import annotations

import pytest
import torch
import torch.multiprocessing as mp

import unimodal_dist_worker as worker
from rendezvous import file_rendezvous


@pytest.fixture(scope="module")
def rank_results(tmp_path_factory) -> list[list[dict]]:
    out = tmp_path_factory.mktemp("unimodal_dist")
    mp.spawn(worker.worker, args=(worker.WORLD, file_rendezvous(out), str(out)), nprocs=worker.WORLD, join=True)
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(worker.WORLD)]


@pytest.mark.parametrize("case", range(len(worker.CASES)), ids=[f"{n}-{i}" for i, (n, _) in enumerate(worker.CASES)])
def test_two_ranks_equal_single_process(rank_results, case):
    name, kw = worker.CASES[case]
    single = worker.run_case(name, kw, rank=0, world=1)
    assert all(g.abs().max() > 1e-3 for g in single["grad"])
    for r, ranks in enumerate(rank_results):
        got = ranks[case]
        for step in range(worker.STEPS):
            torch.testing.assert_close(got["grad"][step], single["grad"][step], rtol=1e-6, atol=1e-9,
                                       msg=lambda m: f"{name} rank {r} step {step}: {m}")
        assert got["state"].keys() == single["state"].keys()
        for key, value in single["state"].items():
            torch.testing.assert_close(got["state"][key], value, rtol=1e-6, atol=1e-9,
                                       msg=lambda m: f"{name} rank {r} state {key}: {m}")
    for key, value in rank_results[0][case]["state"].items():  # the replicas are identical, bit for bit
        assert torch.equal(value, rank_results[1][case]["state"][key]), key


def test_state_was_written_by_the_dcl_cases(rank_results):
    """The state comparison above is not vacuous: every id of the three steps holds a finite estimate."""
    state = rank_results[0][0]["state"]["log_u"]
    seen = torch.unique(torch.cat(worker.IDS))
    assert torch.isfinite(state[seen]).all() and seen.numel() == worker.NUM_SAMPLES
