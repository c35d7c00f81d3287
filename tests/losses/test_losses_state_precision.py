"""Per-sample state in float64: precision against a float64 run, old float32 checkpoints, τ at its floor."""
from __future__ import annotations

import io
import shlex

import torch

import clip
from engine.checkpoint import load_state_strict
from engine.trainer import warn_if_tau_at_floor
from models.losses import build_loss

B, D, TAU = 64, 16, 1 / 64


def dyadic_features(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Entries k/32 and τ = 1/64: S = e·zᵀ and x = h/τ are exact in float32, so a float32 run differs from a
    float64 one only by the loss's own arithmetic (not by rounded inputs or matmul error)."""
    g = torch.Generator().manual_seed(step)
    e = torch.randint(-12, 13, (B, D), generator=g).double() / 32
    z = torch.randint(-12, 13, (B, D), generator=g).double() / 32
    return e, z


def isogclr_run(dtype: torch.dtype) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(ℓ, G) of the image anchors after each of 4 steps; η = 0 keeps τ = 1/64 and β_u = 1 stores m = clip(G)."""
    loss = build_loss("isogclr", B, tau_init=TAU, tau_min=TAU / 4, tau_max=1.0, rho=0.0, beta_u=1.0, eta_init=0.0,
                      sogclr_gamma=0.5)
    if dtype == torch.float64:
        loss = loss.double()
    out = []
    for step in range(4):
        e, z = dyadic_features(step)
        loss(e.to(dtype), z.to(dtype), torch.arange(B))
        out.append((loss.log_u_img.clone(), loss.m_img.clone()))
    assert loss.log_u_img.dtype == torch.float64
    return out


def test_float32_features_match_a_float64_run_at_large_ell():
    """With ℓ stored in float32 the errors were 2e-6..6e-6 (ℓ) and 1e-4 (G) here; float64 state gives ~2e-7, ~1e-5."""
    fp32, fp64 = isogclr_run(torch.float32), isogclr_run(torch.float64)
    assert 20.0 < float(fp64[0][0].mean()) < 45.0  # the regime of the published runs' small τ
    for (ell32, g32), (ell64, g64) in zip(fp32, fp64):
        torch.testing.assert_close(ell32, ell64, rtol=0, atol=6e-7)
        torch.testing.assert_close(g32, g64, rtol=0, atol=3e-5)


def test_float32_checkpoint_state_loads_into_float64_buffers(ref):
    e, z = ref.unit(4, 5, seed=1, dtype=torch.float32)
    old = build_loss("isogclr", 6, rho=30.0)
    old(e, z, torch.tensor([0, 2, 3, 5]))
    state = {k: v.float() if v.is_floating_point() else v for k, v in old.state_dict().items()}  # an older run
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    new = build_loss("isogclr", 6, rho=30.0)
    load_state_strict(new, torch.load(buf, weights_only=True), "loss state", "old.pth")
    floats = [k for k, v in state.items() if v.is_floating_point()]
    assert sorted(floats) == sorted(f"{n}_{s}" for n in ("log_u", "tau", "m") for s in ("img", "txt"))
    for key in floats:
        assert new.state_dict()[key].dtype == torch.float64, key
        assert torch.equal(new.state_dict()[key], state[key].double()), key
    assert torch.isfinite(new.log_u_img[[0, 2, 3, 5]]).all() and torch.isneginf(new.log_u_img[[1, 4]]).all()


def test_fraction_at_tau_min_counts_visited_samples_only(ref):
    e, z = ref.unit(6, 5, seed=3)
    ids = torch.arange(6)
    low = build_loss("isogclr", 10, rho=30.0, eta_init=0.01, sogclr_gamma=1.0).double()  # G > 0: τ falls
    high = build_loss("isogclr", 10, rho_init=-30.0, eta_init=0.5, sogclr_gamma=1.0).double()
    assert low.fraction_at_tau_min() == 0.0  # nothing visited yet
    for _ in range(3):
        low(e, z, ids), high(e, z, ids)
    assert low.fraction_at_tau_min() == 1.0  # the 4 unvisited ids keep tau_init and are not counted
    assert high.fraction_at_tau_min() == 0.0
    v2 = build_loss("fastclip_v2", 10, rho=30.0, lr_tau=1.0, tau_min=0.01)
    v2(e.float(), z.float(), ids)
    assert v2.fraction_at_tau_min() == 1.0
    for name in ("clip", "sogclr", "hybrid", "fastclip_v3", "isogclr_tempnet"):
        assert build_loss(name, 10, embed_dim=5).fraction_at_tau_min() is None, name
    assert build_loss("infosogclr", 10).fraction_at_tau_min() is None
    assert build_loss("infosogclr", 10, individual_tau=True).fraction_at_tau_min() == 0.0


def test_floor_warning_is_one_line_and_only_past_half(ref, capsys):
    e, z = ref.unit(6, 5, seed=4)
    loss = build_loss("isogclr", 6, rho=30.0, eta_init=0.01, sogclr_gamma=1.0).double()
    assert not warn_if_tau_at_floor(loss, 0) and capsys.readouterr().out == ""
    for _ in range(3):
        loss(e, z, torch.arange(6))
    assert warn_if_tau_at_floor(loss, 2)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and "100% of the per-sample temperatures sit at --tau_min" in lines[0]
    assert "after epoch 2" in lines[0] and "--eta_init" in lines[0]
    assert not warn_if_tau_at_floor(build_loss("sogclr", 6), 0)


def test_training_warns_once_when_tau_falls_to_its_floor(build_shapes, tmp_path, capsys):
    shapes = build_shapes("shapes_small", 64, 20, 1, 32)
    command = (f"--data_path {shapes}/datasets --ann_path {shapes}/clip_train --output_dir {tmp_path} "
               "--ita_type isogclr --rho 30 --eta_init 0.5 --epochs 2 --image_encoder test_vit --image_res 32 "
               "--text_encoder Transformer --text_width 32 --text_heads 2 --text_layers 1 --context_length 24 "
               "--embed_dim 32 --workers 0 --val_workers 0 --no-progress --batch_size_train 16 --lr 3e-4 "
               "--warmup_epochs 0 --zs_dataset none")
    assert clip.main(shlex.split(command)) == 0
    out = capsys.readouterr().out
    assert out.count("sit at --tau_min") == 1 and "after epoch 0" in out
