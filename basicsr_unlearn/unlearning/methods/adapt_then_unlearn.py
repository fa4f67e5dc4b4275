"""Adapt-then-Unlearn (Tiwary et al., TMLR 2025) for restoration, two registered stages.

Stage 1, :class:`AdaptStage1`: from ``theta_0``, fit the forget pairs with an EWC anchor -> ``theta_N`` (saved as a
checkpoint). Stage 2, :class:`AdaptThenUnlearn`: from ``theta_0`` again, fit the retained data while being repelled
from ``theta_N`` (``path.pretrain_network_adapted``).
"""
from typing import Literal

import torch
from basicsr.losses.basic_loss import L1Loss

from basicsr_unlearn.losses.parameter_repulsion_loss import (
    ParameterAnchorLoss,
    ParameterRepulsionLoss,
    parameter_distance,
)
from basicsr_unlearn.unlearning.fisher import diagonal_fisher
from basicsr_unlearn.unlearning.hooks import any_rank_true
from basicsr_unlearn.unlearning.method import METHOD_REGISTRY, Needs, Nets, Step, UnlearnMethod, present
from basicsr_unlearn.unlearning.methods.finetune import Finetune


@METHOD_REGISTRY.register()
class AdaptStage1(UnlearnMethod):
    """Negative adaptation: ``l_forget = w_f * L1(out_f, gt_f)`` + ``l_anchor = w_a * d(theta, theta_0; F)``.

    ``F`` is a diagonal Fisher from the first batch's forget samples at ``theta_0`` (``importance: fisher``), or
    uniform (plain L2).

    Args:
        forget_weight, anchor_weight: term weights.
        importance: ``'fisher'`` or ``'uniform'``.

    Example:
        >>> AdaptStage1().needs
        Needs(original=True, adapted=False, forget=True, retain=False)
    """

    needs = Needs(original=True, forget=True)

    def __init__(self, forget_weight: float = 1.0, anchor_weight: float = 1.0,
                 importance: Literal['fisher', 'uniform'] = 'fisher') -> None:
        self.forget_loss = L1Loss(forget_weight)
        self.anchor = ParameterAnchorLoss(anchor_weight, importance)
        self.fisher: list[torch.Tensor] | None = None

    def extra_inputs(self, lq: torch.Tensor, gt: torch.Tensor, forget: torch.Tensor,
                     nets: Nets) -> torch.Tensor | None:
        """No extra inputs; estimates the Fisher at the first step where any rank has forget samples (from those
        of every rank; the anchor is uniform until then)."""
        if self.anchor.importance == 'fisher' and self.fisher is None and any_rank_true(bool(forget.any()),
                                                                                        lq.device):
            self.fisher = diagonal_fisher(nets.original, lq[forget], gt[forget])
        return None

    def state_dict(self) -> dict:
        """The Fisher (None before it is estimated, or uniform)."""
        return {'fisher': self.fisher}

    def load_state_dict(self, state: dict, nets: Nets) -> None:
        fisher = state['fisher']
        self.fisher = None if fisher is None else [f.to(p.device) for f, p in zip(fisher, nets.net.parameters(),
                                                                                  strict=True)]

    def losses(self, step: Step) -> dict[str, torch.Tensor]:
        """``l_forget`` and ``l_anchor``."""
        anchor = self.anchor(list(step.nets.net.parameters()), list(step.nets.original.parameters()), self.fisher)
        return present(forget=step.on_forget(lambda out, gt, lq: self.forget_loss(out, gt)), anchor=anchor)


@METHOD_REGISTRY.register()
class AdaptThenUnlearn(UnlearnMethod):
    """Repulsion: :class:`Finetune`'s ``l_retain`` + ``l_repulsion`` (:class:`ParameterRepulsionLoss` from
    ``theta_N``, the distance normalised by ``theta_0``'s so ``d = 1`` at the start).

    Args:
        retain_weight, repulsion_weight: term weights.
        form: ``'il2'``, ``'nl2'`` or ``'el2'``; alpha, scale: EL2's ``scale * exp(-alpha * d)``;
        max_distance: NL2 cap.

    Example:
        >>> AdaptThenUnlearn().needs
        Needs(original=False, adapted=True, forget=False, retain=True)
    """

    needs = Needs(adapted=True, retain=True)

    def __init__(self, retain_weight: float = 1.0, repulsion_weight: float = 0.01,
                 form: Literal['il2', 'nl2', 'el2'] = 'el2', alpha: float = 1.0, scale: float = 100.0,
                 max_distance: float | None = None) -> None:
        self.retain = Finetune(retain_weight)
        self.repulsion = ParameterRepulsionLoss(repulsion_weight, form, alpha, scale, max_distance)
        self.norm = 1.0

    def setup(self, nets: Nets) -> None:
        """The normaliser ``d(theta_0, theta_N)``; fails when the adapted network equals the original."""
        self.norm = parameter_distance(list(nets.net.parameters()), list(nets.adapted.parameters())).item()
        if not self.norm > 0:
            raise ValueError('path.pretrain_network_adapted: the adapted network equals the original; nothing to '
                             'repel')

    def state_dict(self) -> dict:
        """The normaliser (from ``theta_0``: a resumed run keeps it)."""
        return {'norm': self.norm}

    def load_state_dict(self, state: dict, nets: Nets) -> None:
        self.norm = state['norm']

    def losses(self, step: Step) -> dict[str, torch.Tensor]:
        """``l_retain`` and ``l_repulsion``."""
        repulsion = self.repulsion(list(step.nets.net.parameters()), list(step.nets.adapted.parameters()), self.norm)
        return {**self.retain.losses(step), 'l_repulsion': repulsion}
