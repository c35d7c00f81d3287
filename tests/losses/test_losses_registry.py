"""The public registry: names, flags, build_loss, param_groups, stats contract."""
from __future__ import annotations

import pytest
import torch

from models.losses import ITA_TYPES, LOSS_HPARAMS, build_loss, used_hparams

D1_NAMES = {"clip", "siglip", "sogclr", "isogclr", "isogclr_new", "sogclr_dro", "isogclr_tempnet", "sogclr_mine", "infosogclr",
            "sogclr_v2_mine", "hybrid", "fastclip_v0", "fastclip_v1", "fastclip_v2", "fastclip_v3"}
DISTILL_NAMES = {"simreg", "simreg_l1", "simreg_smoothl1", "vicreg", "barlowtwins", "rkd", "compress_1q", "compress_2q",
                 "seed", "dino", "protocpc", "protoclip"}
BUILD_ONLY = {"embed_dim", "lit_start_epoch"}  # accepted by build_loss, owned by the model and optimiser flags


def test_names_and_unknown_name():
    assert set(ITA_TYPES) == D1_NAMES | DISTILL_NAMES
    with pytest.raises(ValueError, match="choices: clip, sogclr"):
        build_loss("new_isogclr", 10)
    with pytest.raises(ValueError):
        used_hparams("swav")


def test_flag_registry_is_consistent():
    used = set().union(*(used_hparams(n) for n in ITA_TYPES))
    assert used - BUILD_ONLY == set(LOSS_HPARAMS)  # every flag is read by some loss, no unknown flag is read
    assert "lr_temp_net" not in LOSS_HPARAMS and "learnable_temp" in used_hparams("clip")
    assert "learnable_temp" not in used_hparams("sogclr")
    for name, spec in LOSS_HPARAMS.items():
        assert spec.help and (spec.default is None or spec.choices is None or spec.default in spec.choices), name
        assert spec.default is None or spec.type is type(spec.default), name


def test_build_ignores_unused_and_none_hparams():
    defaults = {name: spec.default for name, spec in LOSS_HPARAMS.items()}
    for name in ITA_TYPES:
        loss = build_loss(name, 16, **defaults)
        assert isinstance(loss, torch.nn.Module)
    assert build_loss("clip", 1, **{**defaults, "rho": 3.0}).temp == 0.01
    assert build_loss("fastclip_v1", 4, **defaults).temp == 0.07
    assert build_loss("sogclr_v2_mine", 4).std_coeff == 5.0 and build_loss("sogclr_mine", 4).std_coeff == 0.0
    with pytest.raises(ValueError, match="info_alpha"):
        build_loss("sogclr_mine", 4, info_alpha="dataset")


@pytest.mark.parametrize("name", sorted(D1_NAMES))
def test_forward_contract(ref, name):
    e, z = ref.unit(4, 6, seed=0, dtype=torch.float32)
    loss = build_loss(name, 8, embed_dim=6, tempnet_protos=4)
    loss.set_epoch(0, 2)
    out = loss(e, z, torch.tensor([1, 5, 2, 7]))
    assert out.loss.dim() == 0 and out.loss.requires_grad and torch.isfinite(out.loss)
    assert {"tau_img", "tau_txt", "objective"} <= set(out.stats)
    for key, value in out.stats.items():
        assert isinstance(value, torch.Tensor) and value.dim() == 0 and not value.requires_grad, key
    groups = loss.param_groups()
    owned = {id(p) for g in groups for p in g["params"]}
    assert owned == {id(p) for p in loss.parameters()}
    for g in groups:
        assert g["weight_decay"] == 0.0 and g["optimizer"] in ("main", "own")
    assert all(b.device == e.device for b in loss.buffers())
    doc = (type(loss).__doc__ or "").strip().splitlines()
    assert len(doc) >= 2 and "Paper" in doc[1], type(loss).__name__
