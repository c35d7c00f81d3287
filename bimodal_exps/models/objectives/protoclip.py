"""ProtoCLIP: InfoNCE plus prototype-level targets from per-epoch clusters of the other modality (docs/losses.md §15).
Paper: Chen et al., "Prototypical Contrastive Language Image Pretraining" (2022); megvii-research/protoclip.

The loss owns two projection heads, the learnable prototype scale κ = log(1/τ_proto) and the cluster state
(labels per pair id, centroid tables) that the engine's clustering step loads through `load_clusters`.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.gcl import collectives
from models.gcl.base import Batch, ContrastiveLoss, LossOutput
from models.gcl.clip_loss import CLIPLoss
from models.heads import build_head

from .base import check_positive, global_rows

CLIP_TEMP_RANGE = (0.01, 1.0)       # τ of the InfoNCE term
PROTO_SCALE_RANGE = (0.0, math.log(100.0))  # κ = log(1/τ_proto)
PROTO_TEMP_INIT = 0.07


def proto_head(embed_dim: int, proto_dim: int, hidden_dim: int, layers: int) -> nn.Module:
    """Linear(embed, p) for 0 layers, else `layers` × [Linear → BatchNorm → ReLU] of width `hidden_dim`, then
    Linear(hidden, p)."""
    return build_head(embed_dim, proto_dim, layers + 1, hidden_dim, batch_norm=True, activation=nn.ReLU)


def prototype_loss(z: Tensor, student: Tensor, teacher: Tensor, labels: Tensor, scale: Tensor,
                   target_temp: float) -> tuple[Tensor, Tensor]:
    """(mean over rows with label ≥ 0 of CE(target, softmax(scale · z studentᵀ)), top-1 accuracy of those rows, %).

    target = one-hot(label) if `target_temp` ≤ 0, else softmax(teacher[label] teacherᵀ / target_temp). Rows
    labelled −1 contribute nothing; with no such row both values are 0.
    """
    labels = labels.long()
    valid = labels >= 0
    safe = labels.clamp_min(0)
    scores = scale * (z @ student.to(z.dtype).T)
    log_p = F.log_softmax(scores, dim=1)
    if target_temp > 0:
        centroids = teacher.to(z.dtype)
        target = F.softmax(centroids[safe] @ centroids.T / target_temp, dim=1)
        rows = -(target * log_p).sum(dim=1)
    else:
        rows = -log_p.gather(1, safe.unsqueeze(1)).squeeze(1)
    count = valid.sum().clamp_min(1)
    loss = torch.where(valid, rows, torch.zeros_like(rows)).sum() / count
    hits = (scores.detach().argmax(dim=1) == labels) & valid
    return loss, 100.0 * hits.sum().to(z.dtype) / count


class ProtoCLIPLoss(ContrastiveLoss):
    """w_clip · L_CLIP + w_proto · ½(L_i2t + L_t2i) + w_proto_external · L_ext on the global batch.

    L_CLIP is InfoNCE with a learnable τ clamped to [0.01, 1]. The prototype terms score the head outputs z
    against centroid tables with scale e^κ (κ clamped to [0, log 100] before every forward, i.e. after the
    previous optimiser step). Before the first clustering every label is −1, so only L_CLIP counts; so it is
    during the first `infonce_warmup_epochs` epochs and, with `lit_start_epoch` E > 0, from epoch E − 1 on (the
    LiT phase, when the optimiser no longer trains the image side: docs/losses.md §15.10).
    """

    def __init__(self, num_samples: int, embed_dim: int = 256, temp: float = 0.07, w_clip: float = 1.0,
                 w_proto: float = 1.0, w_proto_external: float = 1.0, external_teacher: str | None = None,
                 pbt: bool = False, proto_k: int = 20000, kmeans_iters: int = 20, kmeans_nredo: int = 1,
                 clustering_freq: int = 1, proto_target_temp: float = -1.0, proto_dim: int = 128,
                 proto_hidden_dim: int = 2048, proto_layers: int = 1, infonce_warmup_epochs: int = 0,
                 lit_start_epoch: int = 0, dist_mode: str = "autograd") -> None:
        super().__init__(dist_mode)
        check_positive(num_samples=num_samples, embed_dim=embed_dim, proto_k=proto_k, proto_dim=proto_dim,
                       proto_hidden_dim=proto_hidden_dim, kmeans_iters=kmeans_iters, kmeans_nredo=kmeans_nredo)
        for name, value in (("w_clip", w_clip), ("w_proto", w_proto), ("w_proto_external", w_proto_external),
                            ("clustering_freq", clustering_freq), ("proto_layers", proto_layers),
                            ("infonce_warmup_epochs", infonce_warmup_epochs), ("lit_start_epoch", lit_start_epoch)):
            if value < 0:
                raise ValueError(f"--{name} must be >= 0, got {value}")
        # more clusters than pairs can never be filled: the extra zero rows would only cost memory and act as
        # phantom classes of score 0 in every softmax
        self.num_samples, self.proto_k = int(num_samples), min(int(proto_k), int(num_samples))
        self.w_clip, self.w_proto, self.w_proto_external = float(w_clip), float(w_proto), float(w_proto_external)
        self.pbt = bool(pbt)
        self.external = bool(external_teacher) and self.pbt  # the file itself is the engine's business
        self.kmeans_iters, self.kmeans_nredo, self.clustering_freq = int(kmeans_iters), int(kmeans_nredo), int(clustering_freq)
        self.target_temp = float(proto_target_temp)
        self.infonce_warmup_epochs = int(infonce_warmup_epochs)
        self.lit_start_epoch = int(lit_start_epoch)
        self.clip = CLIPLoss(temp=temp, learnable_temp=True, dist_mode=dist_mode, temp_range=CLIP_TEMP_RANGE)
        self.head_img = proto_head(embed_dim, proto_dim, proto_hidden_dim, proto_layers)
        self.head_txt = proto_head(embed_dim, proto_dim, proto_hidden_dim, proto_layers)
        self.head_txt.load_state_dict(self.head_img.state_dict())
        self.proto_scale = nn.Parameter(torch.tensor(math.log(1.0 / PROTO_TEMP_INIT)))
        tables = ["centroids_img", "centroids_txt", *(("pbt_img", "pbt_txt") if self.pbt else ()),
                  *(("ext_img", "ext_txt") if self.external else ())]
        for name in ("labels_img", "labels_txt", *(("labels_ext",) if self.external else ())):
            self.register_buffer(name, torch.full((self.num_samples,), -1, dtype=torch.int32))  # k < 2**31
        for name in tables:
            self.register_buffer(name, torch.zeros(self.proto_k, int(proto_dim)))

    def param_groups(self) -> list[dict]:
        """Heads with the model's weight decay on their matrices; biases, BatchNorm, τ and κ without."""
        heads = [p for head in (self.head_img, self.head_txt) for p in head.parameters()]
        return [{"params": [p for p in heads if p.dim() > 1], "optimizer": "main"},
                {"params": [p for p in heads if p.dim() <= 1] + [self.proto_scale, self.clip.log_temp],
                 "weight_decay": 0.0, "optimizer": "main"}]

    def clustering_due(self, epoch: int) -> bool:
        """Whether the engine clusters the epoch's pairs before training epoch `epoch` (0-based): every
        `clustering_freq` epochs, except when every epoch up to the next clustering trains L_CLIP alone (the
        clusters would go unused: a pass over the data and k-means saved per warm-up or LiT epoch)."""
        freq = self.clustering_freq
        if freq == 0 or epoch % freq:
            return False
        return not all(self.clip_only(e) for e in range(epoch, epoch + freq))

    def clip_only(self, epoch: int | None = None) -> bool:
        """Whether 0-based `epoch` (default: the current one) trains L_CLIP alone: the InfoNCE warm-up epochs and
        the LiT phase (epochs from `lit_start_epoch` − 1 on)."""
        epoch = self.epoch if epoch is None else epoch
        lit_phase = self.lit_start_epoch > 0 and epoch >= self.lit_start_epoch - 1
        return epoch < self.infonce_warmup_epochs or lit_phase

    def project(self, image_features: Tensor, text_features: Tensor) -> tuple[Tensor, Tensor]:
        """(z^I, z^T): the heads' l2-normalised outputs for l2-normalised CLIP embeddings, in the features' dtype
        (the heads compute in their own)."""
        dtype = self.proto_scale.dtype
        return tuple(F.normalize(head(x.to(dtype)).to(x.dtype), dim=1)
                     for head, x in ((self.head_img, image_features), (self.head_txt, text_features)))

    @torch.no_grad()
    def load_clusters(self, ids: Tensor, tables: dict[str, Tensor]) -> None:
        """Install a clustering step's tables (`clustering.cluster_tables`) for the pairs `ids`; labels of every
        other pair become −1 (they were computed against the previous centroids)."""
        for name, value in tables.items():
            buffer = getattr(self, name)
            if name.startswith("labels_"):
                buffer.fill_(-1)
                buffer[ids.to(buffer.device)] = value.to(buffer.device, buffer.dtype)
            else:
                buffer.copy_(value)

    def _compute(self, batch: Batch) -> LossOutput:
        clip = self.clip._compute(batch)
        with torch.no_grad():
            self.proto_scale.clamp_(*PROTO_SCALE_RANGE)
        scale = self.proto_scale.to(batch.img.dtype).exp()
        z_img, z_txt = self.project(*global_rows(batch))
        ids = collectives.all_gather_no_grad(batch.ids)
        i2t_student = self.pbt_img if self.pbt else self.centroids_txt
        t2i_student = self.pbt_txt if self.pbt else self.centroids_img
        l_i2t, acc_i2t = prototype_loss(z_img, i2t_student, self.centroids_txt, self.labels_txt[ids], scale,
                                        self.target_temp)
        l_t2i, acc_t2i = prototype_loss(z_txt, t2i_student, self.centroids_img, self.labels_img[ids], scale,
                                        self.target_temp)
        proto = 0.5 * (l_i2t + l_t2i)
        external = torch.zeros_like(proto)
        if self.external:
            labels = self.labels_ext[ids]
            external = 0.5 * (prototype_loss(z_img, self.ext_img, self.ext_img, labels, scale, 0.0)[0]
                              + prototype_loss(z_txt, self.ext_txt, self.ext_txt, labels, scale, 0.0)[0])
        # the proto terms stay in the graph at weight 0 when inactive, so DDP sees every parameter used
        w_proto, w_external = (0.0, 0.0) if self.clip_only() else (self.w_proto, self.w_proto_external)
        loss = self.w_clip * clip.loss + w_proto * proto + w_external * external
        stats = {**clip.stats, "objective": loss.detach(), "clip": clip.stats["objective"],
                 "proto": proto.detach(), "proto_external": external.detach(), "proto_acc_i2t": acc_i2t,
                 "proto_acc_t2i": acc_t2i, "tau_proto": (-self.proto_scale.detach()).exp()}
        return LossOutput(loss, stats)
