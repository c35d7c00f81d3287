"""User-facing paths run at least once on the CPU: gradient clipping, bf16 autocast, `--compile` with inductor,
and every choice of every loss flag."""
from __future__ import annotations

import os
import shutil

import pytest
import torch

from dataset.collate import Batch
from engine.optim import LRSchedule, Optimizers
from engine.task import ContrastiveTask
from engine.train import StepConfig, train_one_epoch
from models.config import ModelConfig
from models.factory import create_model
from models.losses import ITA_TYPES, LOSS_HPARAMS, build_loss, used_hparams

TINY_MODEL = ModelConfig(image_encoder="test_vit", image_res=32, text_encoder="Transformer", text_width=32,
                         text_heads=2, text_layers=1, context_length=16, embed_dim=16)


def tiny_task(ita_type: str = "sogclr", num_samples: int = 8) -> ContrastiveTask:
    torch.manual_seed(0)
    return ContrastiveTask(create_model(TINY_MODEL), build_loss(ita_type, num_samples))


def batches(steps: int, batch: int = 4) -> list[Batch]:
    generator = torch.Generator().manual_seed(1)
    return [Batch(torch.randn(batch, 3, 32, 32, generator=generator),
                  {"input_ids": torch.randint(1, 100, (batch, 16), generator=generator)},
                  torch.arange(step * batch, (step + 1) * batch) % 8)
            for step in range(steps)]


def train(task: ContrastiveTask, config: StepConfig, steps: int = 2, lr: float = 1e-3) -> list[float]:
    """One epoch of `steps` steps; returns the total gradient norm the optimiser saw at each step."""
    optimizer = torch.optim.SGD(task.parameters(), lr=lr)
    norms: list[float] = []
    optimizer.register_step_pre_hook(lambda opt, *_: norms.append(float(torch.nn.utils.get_total_norm(
        [p.grad for group in opt.param_groups for p in group["params"] if p.grad is not None]))))
    optimizers = Optimizers(optimizer)
    schedule = LRSchedule(optimizers, "step", "constant", 1, steps, 0.0, lr)
    train_one_epoch(task, batches(steps), optimizers, schedule,
                    torch.amp.GradScaler("cpu", enabled=False), 0, config)
    return norms


def test_grad_clip_bounds_the_gradient_norm_the_optimiser_steps_with():
    cpu = torch.device("cpu")
    unclipped = train(tiny_task(), StepConfig(device=cpu, show_progress=False))
    clip_at = min(unclipped) / 4
    clipped = train(tiny_task(), StepConfig(device=cpu, show_progress=False, grad_clip=clip_at))
    assert all(norm <= clip_at * (1 + 1e-5) for norm in clipped), (clipped, clip_at)
    assert clipped[0] == pytest.approx(clip_at, rel=1e-4)  # clipped, not zeroed


@pytest.mark.skipif(not torch.cpu._is_avx512_bf16_supported() and not torch.backends.mkldnn.is_available(),
                    reason="this CPU build has no bf16 autocast")
def test_bf16_autocast_runs_the_tower_matmuls_in_bf16_and_the_loss_in_fp32():
    task = tiny_task()
    seen: dict[str, torch.dtype] = {}
    linear = next(m for m in task.model.modules() if isinstance(m, torch.nn.Linear))
    linear.register_forward_hook(lambda module, args, out: seen.update(matmul=out.dtype))
    task.loss_fn.register_forward_hook(lambda module, args, out: seen.update(loss=out.loss.dtype))
    before = [p.detach().clone() for p in task.model.parameters()]
    norms = train(task, StepConfig(device=torch.device("cpu"), amp_dtype=torch.bfloat16, show_progress=False))
    assert seen == {"matmul": torch.bfloat16, "loss": torch.float32}
    assert all(torch.isfinite(torch.tensor(norms))) and all(p.dtype == torch.float32 for p in task.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, task.model.parameters()))


def _cxx_compiler() -> str | None:
    return shutil.which(os.environ.get("CXX", "")) or shutil.which("g++") or shutil.which("c++") or \
        shutil.which("clang++")


def test_compile_with_inductor_gives_the_eager_features_and_gradients():
    """`--compile` without a backend means inductor, which needs a C++ compiler on the CPU."""
    if _cxx_compiler() is None:
        pytest.skip("no C++ compiler (CXX, g++, c++, clang++) on PATH: inductor cannot build CPU kernels")
    images, tokens, _ = batches(1)[0]
    eager, compiled = create_model(TINY_MODEL), create_model(TINY_MODEL)
    compiled.load_state_dict(eager.state_dict())
    compiled.compile_towers()  # the default backend of --compile
    torch._dynamo.reset()
    outputs = []
    for model in (eager, compiled):
        image_features, text_features = model(images, tokens)
        (image_features * text_features).sum().backward()
        outputs.append((image_features, text_features, {n: p.grad for n, p in model.named_parameters()}))
    for a, b in zip(outputs[0][:2], outputs[1][:2]):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
    for name, grad in outputs[0][2].items():
        torch.testing.assert_close(outputs[1][2][name], grad, rtol=1e-3, atol=1e-5, msg=name)
    assert compiled.state_dict().keys() == eager.state_dict().keys()


def _flag_choices() -> list[tuple[str, str, object]]:
    """(ita_type reading the flag, flag, value) for every choice of every choice or boolean loss flag."""
    cases = []
    for flag, spec in LOSS_HPARAMS.items():
        values = spec.choices or ((False, True) if spec.type is bool else ())
        for value in values:
            ita_type = next(name for name in ITA_TYPES if flag in used_hparams(name))
            cases.append((ita_type, flag, value))
    return cases


@pytest.mark.parametrize("ita_type, flag, value", _flag_choices())
def test_every_choice_of_every_loss_flag_trains(ita_type, flag, value):
    """Two epochs of two steps with the choice set: the loss and every gradient stay finite."""
    torch.manual_seed(0)
    extra = {"individual_tau": True} if flag in ("tau_init", "eta_init") else {}
    loss = build_loss(ita_type, 16, embed_dim=8, tempnet_protos=4, **extra, **{flag: value})
    features = torch.nn.Parameter(torch.randn(2, 16, 8, dtype=torch.float64))
    for epoch in range(2):
        loss.set_epoch(epoch, 2)
        for step in range(2):
            ids = torch.arange(8) + 8 * step
            img = torch.nn.functional.normalize(features[0, ids], dim=1)
            txt = torch.nn.functional.normalize(features[1, ids], dim=1)
            out = loss(img, txt, ids)
            out.loss.backward()
            assert torch.isfinite(out.loss), (epoch, step)
            assert torch.isfinite(features.grad).all() and features.grad.abs().sum() > 0
            features.grad = None


def test_hybrid_population_std_gives_a_different_temperature_than_the_unbiased_one():
    """`--hybrid_std population` divides by B instead of B − 1, so τ(σ) and the loss change."""
    features = torch.nn.functional.normalize(torch.randn(2, 8, 8, generator=torch.Generator().manual_seed(3)), dim=2)
    outs = {std: build_loss("hybrid", 8, hybrid_std=std)(features[0], features[1], torch.arange(8))
            for std in ("unbiased", "population")}
    assert outs["population"].stats["tau_img"] != pytest.approx(float(outs["unbiased"].stats["tau_img"]), rel=1e-9)
    assert torch.isfinite(outs["population"].loss)
