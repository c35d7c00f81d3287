"""Memory-queue distillation: CompRess (one or two queues) and SEED (docs/losses.md §15).

Queues hold K rows of past global batches (replicated on every rank, FIFO through a pointer) and are read
before this step's rows are inserted.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import DistillLoss, check_positive, check_width, enqueue


class _QueueLoss(DistillLoss):
    """Registers `queues` (K×d buffers) with one shared pointer."""

    def __init__(self, embed_dim: int, memory_bank_size: int, teacher_temp: float, student_temp: float,
                 queues: tuple[str, ...], **kw) -> None:
        super().__init__(**kw)
        check_positive(memory_bank_size=memory_bank_size, embed_dim=embed_dim,
                       distill_teacher_temp=teacher_temp, distill_student_temp=student_temp)
        self.size, self.width = int(memory_bank_size), int(embed_dim)
        self.teacher_temp, self.student_temp = float(teacher_temp), float(student_temp)
        for name in queues:
            self.register_buffer(name, self.initial_queue())
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    def initial_queue(self) -> Tensor:
        """The K×d starting content of every queue."""
        raise NotImplementedError


class CompRessLoss(_QueueLoss):
    """KL(P^T ‖ P^S) of the softmax similarities to memory queues, averaged over the global batch.

    `two_queues` (CompRess-2q): the student is scored against its own queue of past student rows and both towers
    get gradient; otherwise (CompRess-1q) against the teacher queue, with the teacher side detached.
    Paper: Abbasi Koohpayegani et al., "CompRess: Self-Supervised Learning by Compressing Representations"
    (NeurIPS'20).
    """

    def __init__(self, two_queues: bool, embed_dim: int = 256, memory_bank_size: int = 65536,
                 distill_teacher_temp: float = 0.04, distill_student_temp: float = 0.04, **kw) -> None:
        names = ("queue_teacher", "queue_student") if two_queues else ("queue_teacher",)
        super().__init__(embed_dim, memory_bank_size, distill_teacher_temp, distill_student_temp, names, **kw)
        self.two_queues = two_queues
        self.uni_directional = not two_queues

    def initial_queue(self) -> Tensor:
        bound = math.sqrt(3.0 / self.width)
        return torch.rand(self.size, self.width) * (2 * bound) - bound

    def objective(self, t: Tensor, s: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        check_width(t, self.width)
        teacher_queue = self.queue_teacher.to(t.dtype)
        student_queue = self.queue_student.to(t.dtype) if self.two_queues else teacher_queue
        log_p_t = F.log_softmax(t @ teacher_queue.T / self.teacher_temp, dim=1)
        log_p_s = F.log_softmax(s @ student_queue.T / self.student_temp, dim=1)
        kl = F.kl_div(log_p_s, log_p_t, log_target=True, reduction="batchmean")
        return kl, {}

    def update(self, t: Tensor, s: Tensor, finite: Tensor) -> None:
        if self.two_queues:  # both queues share the pointer
            self.queue_student, _ = enqueue(self.queue_student, self.queue_ptr, s, finite)
        self.queue_teacher, self.queue_ptr = enqueue(self.queue_teacher, self.queue_ptr, t, finite)


class SEEDLoss(_QueueLoss):
    """CE between the teacher's and the student's softmax over [own teacher row, K queued teacher rows].
    Paper: Fang et al., "SEED: Self-supervised Distillation For Visual Representation" (ICLR'21)."""

    uni_directional = True

    def __init__(self, embed_dim: int = 256, memory_bank_size: int = 65536, distill_teacher_temp: float = 1e-4,
                 distill_student_temp: float = 0.07, **kw) -> None:
        super().__init__(embed_dim, memory_bank_size, distill_teacher_temp, distill_student_temp, ("queue",), **kw)

    def initial_queue(self) -> Tensor:
        return F.normalize(torch.randn(self.size, self.width), dim=1)

    def objective(self, t: Tensor, s: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        check_width(t, self.width)
        queue = self.queue.to(t.dtype)
        student = torch.cat([(s * t).sum(dim=1, keepdim=True), s @ queue.T], dim=1) / self.student_temp
        teacher = torch.cat([(t * t).sum(dim=1, keepdim=True), t @ queue.T], dim=1) / self.teacher_temp
        target = F.softmax(teacher, dim=1)
        loss = -(target * F.log_softmax(student, dim=1)).sum(dim=1).mean()
        return loss, {}

    def update(self, t: Tensor, s: Tensor, finite: Tensor) -> None:
        self.queue, self.queue_ptr = enqueue(self.queue, self.queue_ptr, t, finite)
