"""Parameter-space losses to a reference model: Adapt-then-Unlearn's repulsion (IL2, NL2, EL2) and its EWC anchor."""
from collections.abc import Sequence

import torch
from basicsr.utils.registry import LOSS_REGISTRY
from torch import nn

REPULSION_FORMS = ('il2', 'nl2', 'el2')


def parameter_distance(params: Sequence[torch.Tensor], reference: Sequence[torch.Tensor],
                       importance: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
    """``d = (1/P) * sum_p mean(F_p * (theta_p - ref_p)^2)`` over the ``P`` tensors (``F_p = 1`` without importance).

    Args:
        params: current parameter tensors.
        reference: reference tensors of the same shapes (not differentiated).
        importance: optional non-negative per-element weights of the same shapes (e.g. a diagonal Fisher).

    Returns:
        Scalar distance (differentiable in ``params``).
    """
    if len(params) != len(reference) or not params:
        raise ValueError(f'parameter_distance: expected equal, non-empty parameter lists; got {len(params)} '
                         f'and {len(reference)} tensors')
    terms = []
    for i, (p, r) in enumerate(zip(params, reference, strict=True)):
        if p.shape != r.shape:
            raise ValueError(f'parameter_distance: tensor {i} has shape {tuple(p.shape)} but the reference has '
                             f'{tuple(r.shape)}')
        sq = (p - r.detach()).square()
        terms.append((sq * importance[i] if importance is not None else sq).mean())
    return torch.stack(terms).mean()


@LOSS_REGISTRY.register()
class ParameterRepulsionLoss(nn.Module):
    """Repulsion from the adapted parameters ``theta_N`` (Adapt-then-Unlearn, stage 2).

    With ``d = parameter_distance(theta, theta_N) / norm`` (``norm`` = the distance of ``theta_0``, so ``d = 1`` at
    the start of stage 2):

    - ``il2``: ``w / max(d, 1e-12)`` (inverse L2, bounded by the start value as ``theta`` moves away);
    - ``nl2``: ``-w * min(d, max_distance)`` (negative L2, unbounded without ``max_distance``);
    - ``el2``: ``w * scale * exp(-alpha * d)`` (exponential, in ``(0, w * scale]``; the paper's choice).

    Args:
        loss_weight: ``w``.
        form: ``'il2'``, ``'nl2'`` or ``'el2'``.
        alpha: EL2 decay.
        scale: EL2 factor (100 in the authors' code).
        max_distance: NL2 cap on ``d`` (None: no cap).

    Shape:
        ``params``, ``adapted``: sequences of tensors of equal shapes; output: scalar.

    Example:
        >>> loss = ParameterRepulsionLoss(form='nl2')
        >>> loss([torch.ones(3)], [torch.zeros(3)])
        tensor(-1.)
    """

    def __init__(self, loss_weight: float = 1.0, form: str = 'el2', alpha: float = 1.0, scale: float = 100.0,
                 max_distance: float | None = None) -> None:
        super().__init__()
        if form not in REPULSION_FORMS:
            raise ValueError(f"ParameterRepulsionLoss.form: unknown '{form}'; expected one of "
                             f"{', '.join(REPULSION_FORMS)}")
        self.loss_weight = float(loss_weight)
        self.form = form
        self.alpha = float(alpha)
        self.scale = float(scale)
        self.max_distance = None if max_distance is None else float(max_distance)

    def forward(self, params: Sequence[torch.Tensor], adapted: Sequence[torch.Tensor],
                norm: float = 1.0) -> torch.Tensor:
        """Repulsion of ``params`` from ``adapted``; ``norm`` divides the raw distance."""
        d = parameter_distance(params, adapted) / norm
        if self.form == 'il2':
            return self.loss_weight / d.clamp(min=1e-12)
        if self.form == 'nl2':
            return -self.loss_weight * (d if self.max_distance is None else d.clamp(max=self.max_distance))
        return self.loss_weight * self.scale * torch.exp(-self.alpha * d)


@LOSS_REGISTRY.register()
class ParameterAnchorLoss(nn.Module):
    """EWC / L2 anchor to the original parameters (Adapt-then-Unlearn, stage 1): ``w * d(theta, theta_0; F)``.

    ``F`` is a diagonal importance (the ``AdaptStage1`` method estimates a Fisher from squared gradients on the
    forget data when ``importance: fisher``, normalised to mean 1), or uniform (``importance: uniform``: plain L2).

    Args:
        loss_weight: ``w``.
        importance: ``'fisher'`` or ``'uniform'``.

    Example:
        >>> ParameterAnchorLoss(loss_weight=2.0)([torch.ones(4)], [torch.zeros(4)])
        tensor(2.)
    """

    def __init__(self, loss_weight: float = 1.0, importance: str = 'uniform') -> None:
        super().__init__()
        if importance not in ('fisher', 'uniform'):
            raise ValueError(f"ParameterAnchorLoss.importance: unknown '{importance}'; expected one of fisher, uniform")
        self.loss_weight = float(loss_weight)
        self.importance = importance

    def forward(self, params: Sequence[torch.Tensor], anchor: Sequence[torch.Tensor],
                weights: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        """Weighted squared distance of ``params`` to ``anchor``."""
        return self.loss_weight * parameter_distance(params, anchor, weights)
