"""Adversarial retain regularisation (L_UL^Adv): keep restoring PGD-perturbed retain inputs to their targets."""
from collections.abc import Callable

import torch
from basicsr.utils.registry import LOSS_REGISTRY
from torch import nn

from basicsr_unlearn.losses.criteria import check_criterion, per_sample_loss


@LOSS_REGISTRY.register()
class AdversarialRetainLoss(nn.Module):
    """``w * criterion(net(x + delta), y)`` with ``delta`` from an L-inf PGD attack that maximises the loss.

    The attack runs on ``attack_net`` (``GaAdv``: the frozen original model by default, or the current one):
    ``delta`` starts uniform in ``[-eps, eps]`` (``rand_init``), then ``steps`` signed-gradient steps of ``step_size``
    maximise ``criterion(attack_net(x + delta), y)``, each projected back to ``|delta| <= eps`` and
    ``x + delta in [0, 1]``. The perturbed inputs are detached; the returned loss trains ``net`` to restore them.

    Args:
        loss_weight: ``w``.
        eps: L-inf radius in [0, 1] pixel units (e.g. ``2/255``).
        steps: PGD iterations (>= 0; 0 with ``rand_init`` gives random noise in the ball).
        step_size: PGD step (default ``eps / 4`` when omitted or null).
        rand_init: start from a uniform random point of the ball.
        criterion: ``'l1'``, ``'mse'`` or ``'charbonnier'``.

    Shape:
        ``lq``, ``target``: ``(B, C, H, W)`` in [0, 1]; output: scalar.

    Example:
        >>> loss = AdversarialRetainLoss(eps=2 / 255, steps=2)
        >>> net = nn.Conv2d(3, 3, 3, padding=1)
        >>> loss(net, torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)).shape
        torch.Size([])
    """

    def __init__(self, loss_weight: float = 1.0, eps: float = 2 / 255, steps: int = 3, step_size: float | None = None,
                 rand_init: bool = True, criterion: str = 'l1') -> None:
        super().__init__()
        if not eps > 0:
            raise ValueError(f'AdversarialRetainLoss.eps: expected a positive radius; got {eps}')
        if int(steps) < 0:
            raise ValueError(f'AdversarialRetainLoss.steps: expected >= 0; got {steps}')
        self.loss_weight = float(loss_weight)
        self.eps = float(eps)
        self.steps = int(steps)
        self.step_size = float(step_size) if step_size is not None else self.eps / 4
        self.rand_init = bool(rand_init)
        self.criterion = check_criterion(criterion, 'AdversarialRetainLoss.criterion')

    def perturb(self, attack_net: Callable[[torch.Tensor], torch.Tensor], lq: torch.Tensor,
                target: torch.Tensor) -> torch.Tensor:
        """PGD adversarial inputs ``(B, C, H, W)`` (detached) with ``|x_adv - lq| <= eps`` and values in [0, 1].

        Gradients flow to the input only: parameters' ``.grad`` are left untouched.
        """
        lq = lq.detach()
        target = target.detach()
        if self.rand_init:
            delta = torch.empty_like(lq).uniform_(-self.eps, self.eps)
        else:
            delta = torch.zeros_like(lq)
        delta = (lq + delta).clamp(0, 1) - lq
        for _ in range(self.steps):
            delta.requires_grad_(True)
            with torch.enable_grad():
                loss = per_sample_loss(attack_net(lq + delta), target, self.criterion).sum()
                (grad,) = torch.autograd.grad(loss, [delta])
            delta = (delta.detach() + self.step_size * grad.sign()).clamp(-self.eps, self.eps)
            delta = (lq + delta).clamp(0, 1) - lq
        return (lq + delta).detach()

    def restoration_loss(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``w * criterion(pred, target)`` for outputs ``pred`` of the perturbed inputs (e.g. from a shared forward)."""
        return self.loss_weight * per_sample_loss(pred, target, self.criterion).mean()

    def forward(self, net: Callable[[torch.Tensor], torch.Tensor], lq: torch.Tensor, target: torch.Tensor,
                attack_net: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
        """Loss of ``net`` on PGD inputs made against ``attack_net`` (``net`` itself when None)."""
        x_adv = self.perturb(attack_net or net, lq, target)
        return self.restoration_loss(net(x_adv), target)
