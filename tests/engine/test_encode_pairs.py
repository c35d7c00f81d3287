"""engine.evaluation's pair encoder and eval-mode block, shared by --cache_teacher and ProtoCLIP's clustering step."""
from __future__ import annotations

import pytest
import torch

from engine.evaluation import encode_pairs, eval_mode


class TwoTowers(torch.nn.Module):
    """Image tower = linear map of the pixels' mean per channel; text tower = embedding of the first token, both
    behind dropout so eval mode matters."""

    def __init__(self) -> None:
        super().__init__()
        self.image, self.text, self.drop = torch.nn.Linear(3, 4), torch.nn.Embedding(10, 4), torch.nn.Dropout(0.5)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return self.drop(self.image(images.mean(dim=(2, 3))))

    def encode_text(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.drop(self.text(tokens["input_ids"][:, 0]))


def batches() -> list[tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(2, 3, 4, 4, generator=g), {"input_ids": torch.randint(0, 10, (2, 5), generator=g)},
             torch.tensor([2 * i, 2 * i + 1])) for i in range(3)]


def test_encode_pairs_gives_ids_and_the_requested_towers_in_eval_mode():
    model = TwoTowers().train()
    data = batches()
    with eval_mode(model):
        rows = list(encode_pairs(model, data, torch.device("cpu"), image=False))
    assert model.training
    assert [ids.tolist() for ids, _, _ in rows] == [[0, 1], [2, 3], [4, 5]]
    assert all(image is None for _, image, _ in rows)
    expected = model.text.weight[torch.cat([tokens["input_ids"][:, 0] for _, tokens, _ in data])]
    torch.testing.assert_close(torch.cat([text for _, _, text in rows]), expected)
    assert not any(text.requires_grad for _, _, text in rows)


def test_eval_mode_restores_each_module_even_after_an_error():
    a, b = TwoTowers().train(), TwoTowers().eval()
    with pytest.raises(RuntimeError), eval_mode(a, b):
        assert not a.training and not b.training
        raise RuntimeError("stop")
    assert a.training and not b.training
