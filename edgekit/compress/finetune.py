"""Recovery after pruning: a short fine-tune on the task's train split, or knowledge distillation from the
original (teacher) into the pruned or a narrower model (student)."""
from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn import functional as F

from edgekit.data.batches import Batches, train_batches


def logits_of(output) -> torch.Tensor:
    """By convention the first output holds the class scores."""
    return output[0] if isinstance(output, (tuple, list)) else output


def train(model: nn.Module, batches: Batches, epochs: int, lr: float, loss_fn,
          weight_decay: float = 1e-4) -> nn.Module:
    """AdamW with a one-cycle schedule; ``loss_fn(model_output, inputs, target)``."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * len(batches(0)),
                                                pct_start=0.15)
    for epoch in range(epochs):
        model.train()
        for inputs, target in batches(epoch):
            loss = loss_fn(model(*inputs), inputs, target)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return model.eval()


def cross_entropy(output, _inputs, target: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits_of(output), target, label_smoothing=0.05)


def finetune(model: nn.Module, task: str, epochs: int = 3, lr: float = 2e-3, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return train(model, train_batches(task, seed=seed + 1), epochs, lr, cross_entropy)


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor,
            temperature: float = 4.0, alpha: float = 0.7) -> torch.Tensor:
    """Hinton et al.: alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * cross-entropy."""
    soft = F.kl_div(F.log_softmax(student_logits / temperature, 1), F.softmax(teacher_logits / temperature, 1),
                    reduction="batchmean") * temperature ** 2
    return alpha * soft + (1 - alpha) * F.cross_entropy(student_logits, target)


def distill(student: nn.Module, teacher: nn.Module, task: str, epochs: int = 3, lr: float = 2e-3,
            temperature: float = 4.0, alpha: float = 0.7, seed: int = 0) -> nn.Module:
    teacher = copy.deepcopy(teacher).eval()

    def loss(output, inputs, target):
        with torch.no_grad():
            teacher_logits = logits_of(teacher(*inputs))
        return kd_loss(logits_of(output), teacher_logits, target, temperature, alpha)
    torch.manual_seed(seed)
    return train(student, train_batches(task, seed=seed + 1), epochs, lr, loss)
