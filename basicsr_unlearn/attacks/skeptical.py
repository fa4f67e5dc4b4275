"""Skeptical student (after Kundu et al., NeurIPS 2021): distil the teacher into an early sub-network only.

An auxiliary head (a 3x3 conv) on the early student module ``aux`` restores the image from that depth,
``lq + head(student_aux)`` (resized to the input). The teacher supervises only this shallow sub-network: its output
(``aux_weight``) and its observed taps (feature KD through ``taps``, whose student side should be at or before
``aux``). The rest of the student learns from the auxiliary restoration (self-distillation, ``self_weight``, no
gradient into the head), and from the teacher's outputs only with ``output_weight`` (0 by default), so whatever
the defence puts into the features reaches the deep layers only through what the shallow part could learn.

Example:
    >>> attack = SkepticalKD(aux='body.0', taps=[['body.0', 'body.1']])
    >>> attack.student_modules
    {'distill.taps[0]': 'body.0', 'distill.aux': 'body.0'}
"""
import torch
import torch.nn.functional as F
from torch import nn

from basicsr_unlearn.attacks import ATTACK_REGISTRY
from basicsr_unlearn.attacks.kd import KD


@ATTACK_REGISTRY.register()
class SkepticalKD(KD):
    """KD into an early sub-network with an auxiliary restoration head, plus self-distillation of the full student.

    Args:
        aux: the early student module the auxiliary head reads (exact name).
        aux_weight: weight of L1(aux restoration, teacher output).
        self_weight: weight of L1(student output, aux restoration (detached)).
        output_weight, feature_weight, taps, where: as in :class:`~basicsr_unlearn.attacks.kd.KD`.
    """

    def __init__(self, aux: str, aux_weight: float = 1.0, self_weight: float = 1.0, output_weight: float = 0.0,
                 feature_weight: float = 1.0, taps: list | None = None, where: str = 'distill') -> None:
        super().__init__(output_weight, feature_weight, taps, where)
        if not isinstance(aux, str) or not aux:
            raise ValueError(f'{where}.aux: expected the name of an early student module, got {aux!r}')
        for key, value in (('aux_weight', aux_weight), ('self_weight', self_weight)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f'{where}.{key}: expected a number >= 0, got {value!r}')
        self.aux, self.aux_weight, self.self_weight = aux, float(aux_weight), float(self_weight)
        self.head = nn.Identity()

    @property
    def student_modules(self) -> dict[str, str]:
        """The tap pairs' student modules, then ``aux``."""
        return {**super().student_modules, f'{self.where}.aux': self.aux}

    def build(self, s_channels: list[int], t_channels: list[int]) -> None:
        """Tap adapters, and the auxiliary head ``aux channels -> 3``."""
        super().build(s_channels, t_channels)
        self.head = nn.Conv2d(s_channels[-1], 3, 3, padding=1)

    def losses(self, lq: torch.Tensor, s_out: torch.Tensor, t_out: torch.Tensor, s_feats: list[torch.Tensor],
               t_feats: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """KD's losses plus ``l_skeptic_aux`` and ``l_skeptic_self`` (see the module docstring)."""
        losses = super().losses(lq, s_out, t_out, s_feats, t_feats)
        residual = self.head(s_feats[-1])
        if residual.shape[-2:] != lq.shape[-2:]:
            residual = F.interpolate(residual, size=lq.shape[-2:], mode='bilinear', align_corners=False)
        aux_out = lq + residual
        losses['l_skeptic_aux'] = self.aux_weight * F.l1_loss(aux_out, t_out)
        losses['l_skeptic_self'] = self.self_weight * F.l1_loss(s_out, aux_out.detach())
        return losses
