"""LiT-style training with a locked tower under DDP: 2 gloo ranks end where one process with the global batch
ends, and the locked tower is bit-identical to its start weights in both (it has no DDP or optimiser
parameters, so DDP must not wait for its gradients). Same set-up as test_dist_torchrun_e2e.py."""
from __future__ import annotations

import torch

from dist_helpers import TINY, data_flags, load_checkpoint, run_single, run_torchrun
from models.config import tiny_model_config
from models.factory import create_model

PER_RANK_BATCH, WORLD = 16, 2


def _args(shapes, out, batch: int, init: str) -> list[str]:
    return [*data_flags(shapes), *TINY, "--epochs", "1", "--batch_size_train", str(batch), "--lock_image",
            "--image_head_layers", "2", "--head_hidden_dim", "16", "--train_transform", "deterministic",
            "--opt", "sgd", "--lr", "0.05", "--warmup_epochs", "0", "--zs_dataset", "none", "--checkpoint", init,
            "--output_dir", str(out)]


def test_two_ranks_with_a_locked_image_tower_match_one_process(shapes, tmp_path):
    torch.manual_seed(0)
    init_state = create_model(tiny_model_config(image_res=32, image_head_layers=2, head_hidden_dim=16)).state_dict()
    init = tmp_path / "init.pth"
    torch.save({"model": init_state}, init)
    distributed = run_torchrun(_args(shapes, tmp_path / "w2", PER_RANK_BATCH, str(init)), nproc=WORLD, timeout=180)
    assert distributed.codes == [0], distributed.output[-3000:]
    single = run_single(_args(shapes, tmp_path / "w1", WORLD * PER_RANK_BATCH, str(init)), timeout=180)
    assert single.codes == [0], single.output[-3000:]
    a, b = load_checkpoint(tmp_path / "w1" / "checkpoint_1.pth"), load_checkpoint(tmp_path / "w2" / "checkpoint_1.pth")
    for run in (a, b):
        tower = [key for key in init_state if key.startswith("visual_encoder.")]
        assert tower and all(torch.equal(run["model"][key], init_state[key]) for key in tower)
        moved = [key for key in init_state if not key.startswith("visual_encoder.")
                 and not torch.equal(run["model"][key], init_state[key])]
        assert any(key.startswith("vision_proj.") for key in moved) and any(k.startswith("text_") for k in moved)
    for name, value in a["model"].items():
        torch.testing.assert_close(b["model"][name], value, rtol=1e-5, atol=1e-5, msg=lambda m, n=name: f"{n}: {m}")
