"""Worker for the 2-process gloo test (not a test module): runs every loss on its rank's slice.

`run_case` is shared by the ranks and the single-process reference. The "model" is one parameter
P ([B, 2d], identical on every rank); rank r feeds normalise(P[r·b:(r+1)·b]) to the loss, so averaging
P's gradient over ranks is exactly what DDP does with parameter gradients. Every case runs in both
`dist_mode`s, untiled and (the losses that can) with `loss_tile` = TILE, and the collectives called
during the backward are counted.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
import torch.distributed as dist
import torch.nn.functional as F

from models.losses import build_loss, used_hparams

DIST_MODES = ("autograd", "fastclip")
COLLECTIVES = ("all_gather", "all_gather_into_tensor", "all_reduce", "reduce_scatter", "reduce_scatter_tensor",
               "broadcast", "all_to_all", "send", "recv")
WORLD, LOCAL_B, DIM, NUM_SAMPLES, STEPS = 2, 4, 6, 12, 3
SMALL = {"embed_dim": DIM, "tempnet_protos": 4, "tempnet_dropout": 0.0}
QUEUE = {"embed_dim": DIM, "memory_bank_size": 10}  # wraps within the 8-row global batch
TILE = 3  # ragged against the 4 local rows and the 8 global columns
CASES = [
    ("clip", {"learnable_temp": True, "temp": 0.07}),
    ("siglip", {}),
    ("sogclr", {"temp": 0.1}),
    ("sogclr", {"temp": 0.1, "gcl_normalizer": "positive_included", "state_init": "zero"}),
    ("isogclr", {"tau_init": 0.05, "rho": 1.0, "eta_init": 0.01, "tau_max": 1.0}),
    ("isogclr_new", {"eta_sched": "exp"}),
    ("sogclr_dro", {"state_init": "epoch0", "gcl_normalizer": "positive_included"}),
    ("isogclr_tempnet", {**SMALL, "rho": 1.0}),
    ("isogclr_tempnet", {**SMALL, "tempnet_design": "dtn", "rho": 2.0}),
    ("sogclr_mine", {"temp": 0.1, "info_alpha": "batch"}),
    ("infosogclr", {"temp": 0.1, "info_alpha": "0.2"}),
    ("infosogclr", {"info_alpha": "0.2", "individual_tau": True, "tau_init": 0.05, "rho": 1.0, "tau_max": 1.0}),
    ("sogclr_v2_mine", {"temp": 0.1}),
    ("hybrid", {"tau_init": 0.05, "cov_coeff": 0.5, "std_coeff": 1.0}),
    ("hybrid", {"tau_init": 0.05, "hybrid_parity": True}),
    ("fastclip_v0", {"temp": 0.1}),
    ("fastclip_v1", {"temp": 0.1}),
    ("fastclip_v2", {"tau_init": 0.05, "rho": 1.0}),
    ("fastclip_v3", {"temp": 0.1, "rho": 1.0}),
    ("simreg", {}),
    ("simreg_l1", {"teacher": "image"}),
    ("simreg_smoothl1", {}),
    ("vicreg", {}),
    ("barlowtwins", {"bt_norm": "itra"}),
    ("rkd", {}),
    ("compress_1q", {**QUEUE, "teacher": "image"}),
    ("compress_2q", QUEUE),
    ("seed", {**QUEUE, "distill_teacher_temp": 0.05}),
    ("dino", {"embed_dim": DIM, "num_prototypes": 5}),
    ("protocpc", {"embed_dim": DIM, "num_prototypes": 5, "teacher": "image"}),
    ("protoclip", {"embed_dim": DIM, "proto_k": 3, "proto_dim": 4, "proto_hidden_dim": 5, "pbt": True,
                   "external_teacher": "teacher.npy", "proto_target_temp": 0.5}),
]
# duplicates within a rank (3 on rank 0) and across ranks (9, 5)
IDS = [torch.arange(8), torch.tensor([3, 9, 3, 10, 11, 0, 9, 5]), torch.tensor([5, 1, 7, 2, 5, 8, 6, 1])]


def install_clusters(loss: torch.nn.Module) -> None:
    """ProtoCLIP: seeded cluster tables for every pair id, a few labels −1 (what the engine's clustering step loads)."""
    g = torch.Generator().manual_seed(7)
    k, width = loss.centroids_img.shape
    tables = {name: torch.randn(k, width, generator=g, dtype=torch.float64)
              for name in ("centroids_img", "centroids_txt", "pbt_img", "pbt_txt", "ext_img", "ext_txt")}
    for name in ("labels_img", "labels_txt", "labels_ext"):
        tables[name] = torch.randint(-1, k, (NUM_SAMPLES,), generator=g)
    loss.load_clusters(torch.arange(NUM_SAMPLES), tables)


def step_data(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(100 + step)
    return torch.randn(WORLD * LOCAL_B, 2 * DIM, generator=g, dtype=torch.float64), IDS[step]


def _mean_over_ranks(tensors: list[torch.Tensor], world: int) -> list[torch.Tensor]:
    if world == 1:
        return tensors
    out = []
    for t in tensors:
        t = t.clone()
        dist.all_reduce(t)
        out.append(t / world)
    return out


@contextlib.contextmanager
def counting_collectives() -> Iterator[list[str]]:
    """Record the names of the torch.distributed collectives called inside the block."""
    calls: list[str] = []
    originals = {name: getattr(dist, name) for name in COLLECTIVES}

    def counted(name: str, original: Callable) -> Callable:
        def call(*args, **kwargs):
            calls.append(name)
            return original(*args, **kwargs)
        return call

    for name, original in originals.items():
        setattr(dist, name, counted(name, original))
    try:
        yield calls
    finally:
        for name, original in originals.items():
            setattr(dist, name, original)


def tileable(name: str) -> bool:
    """Whether `name` accepts `loss_tile` (clip, siglip and the GCL losses)."""
    return "loss_tile" in used_hparams(name)


def run_case(name: str, kw: dict, rank: int, world: int, dist_mode: str = "autograd", loss_tile: int = 0) -> dict:
    """Three steps (epochs 0, 1, 2) of `name`; returns DDP-averaged gradients, the final state and the
    collectives called by the backward passes."""
    torch.manual_seed(0)  # identical loss-parameter init on every rank (as DDP's broadcast would ensure)
    loss = build_loss(name, NUM_SAMPLES, dist_mode=dist_mode, loss_tile=loss_tile, **kw).double()
    if name == "protoclip":
        install_clusters(loss)
    params = [p for g in loss.param_groups() for p in g["params"]]
    b = WORLD * LOCAL_B // world
    rows = slice(rank * b, (rank + 1) * b)
    result = {"grad": [], "param_grads": [], "backward_collectives": []}
    for step in range(STEPS):
        loss.set_epoch(step, STEPS)
        p_full, ids = step_data(step)
        p_full.requires_grad_()
        local = p_full[rows]
        out = loss(F.normalize(local[:, :DIM], dim=1), F.normalize(local[:, DIM:], dim=1), ids[rows])
        with counting_collectives() as calls:
            grads = list(torch.autograd.grad(out.loss, [p_full, *params]))
        result["backward_collectives"] += calls
        grads = _mean_over_ranks(grads, world)
        result["grad"].append(grads[0])
        result["param_grads"].append(grads[1:])
        with torch.no_grad():
            for p, g in zip(params, grads[1:]):
                p -= 0.05 * g
    result["state"] = {k: v.clone() for k, v in loss.state_dict().items()}
    return result


def worker(rank: int, world: int, init_method: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init_method, rank=rank, world_size=world)
    try:
        results = {mode: [run_case(name, kw, rank, world, mode) for name, kw in CASES] for mode in DIST_MODES}
        results.update({f"{mode}-tiled": [run_case(name, kw, rank, world, mode, TILE) if tileable(name) else None
                                          for name, kw in CASES] for mode in DIST_MODES})
        torch.save(results, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()
