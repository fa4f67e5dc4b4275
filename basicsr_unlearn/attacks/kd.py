"""KD: the plain distillation attacker, output KD plus feature KD through 1x1 tap adapters.

Losses: ``output_weight * L1(student(lq), teacher(lq))`` and ``feature_weight * mean over taps of
L1(adapter(student_tap), observed_teacher_tap)``, the teacher tap as seen THROUGH the defence (an exposed copy),
after :meth:`KD.observe` (identity here; the adaptive attackers override it). Feature KD on a layer the defence does
not hook is this class with such a tap. Ground truth is never used.

Example:
    >>> attack = KD(output_weight=1.0, feature_weight=0.5, taps=[['body.0', 'body.1']])
    >>> attack.build([8], [16])
    >>> s_out, t_out = torch.zeros(1, 3, 8, 8), torch.ones(1, 3, 8, 8)
    >>> losses = attack.losses(s_out, s_out, t_out, [torch.zeros(1, 8, 4, 4)], [torch.zeros(1, 16, 8, 8)])
    >>> sorted(losses), round(float(losses['l_kd_out']), 3)
    (['l_kd_feat', 'l_kd_out'], 1.0)
"""
import torch
import torch.nn.functional as F
from torch import nn

from basicsr_unlearn.attacks import ATTACK_REGISTRY


def adapt(conv: nn.Conv2d, feat: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``conv(feat)`` ``(B, C_s, h, w)`` -> ``(B, C_t, H, W)``, resized bilinearly when the sizes differ."""
    feat = conv(feat)
    if feat.shape[-2:] != size:
        feat = F.interpolate(feat, size=size, mode='bilinear', align_corners=False)
    return feat


@ATTACK_REGISTRY.register()
class KD(nn.Module):
    """Output and feature KD from a frozen teacher.

    Args:
        output_weight: weight of L1 between student and teacher outputs (0 disables).
        feature_weight: weight of the feature loss (0 disables; then ``taps`` are not read).
        taps: ``[[student module, teacher module], ...]`` exact module names.
        where: option path used in error messages.
    """

    def __init__(self, output_weight: float = 1.0, feature_weight: float = 0.0, taps: list | None = None,
                 where: str = 'distill') -> None:
        super().__init__()
        self.where = where
        for key, value in (('output_weight', output_weight), ('feature_weight', feature_weight)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f'{where}.{key}: expected a number >= 0, got {value!r}')
        for i, pair in enumerate(taps or []):
            if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and all(isinstance(p, str) for p in pair)):
                raise ValueError(f'{where}.taps[{i}]: expected [student_module, teacher_module], got {pair!r}')
        if feature_weight > 0 and not taps:
            raise ValueError(f'{where}.taps: feature_weight > 0 needs at least one [student, teacher] tap pair')
        self.output_weight, self.feature_weight = float(output_weight), float(feature_weight)
        self.tap_pairs = [tuple(p) for p in taps or []] if feature_weight > 0 else []
        self.adapters = nn.ModuleList()

    @property
    def student_modules(self) -> dict[str, str]:
        """``{option path: student module}`` whose outputs :meth:`losses` reads (in ``s_feats`` order)."""
        return {f'{self.where}.taps[{i}]': s for i, (s, _) in enumerate(self.tap_pairs)}

    @property
    def teacher_modules(self) -> dict[str, str]:
        """``{option path: teacher module}`` whose observed outputs :meth:`losses` reads (in ``t_feats`` order)."""
        return {f'{self.where}.taps[{i}]': t for i, (_, t) in enumerate(self.tap_pairs)}

    def build(self, s_channels: list[int], t_channels: list[int]) -> None:
        """Create the trainable parts from the channel counts of :attr:`student_modules` and
        :attr:`teacher_modules` (one 1x1 adapter per tap pair)."""
        pairs = zip(s_channels[:len(t_channels)], t_channels, strict=True)
        self.adapters = nn.ModuleList(nn.Conv2d(c_s, c_t, 1) for c_s, c_t in pairs)

    def observe(self, feat: torch.Tensor) -> torch.Tensor:
        """What the attacker makes of an observed teacher tap ``(B, C, H, W)`` before matching it (identity)."""
        return feat

    def match(self, adapted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Feature loss between an adapted student tap and an observed teacher tap (L1)."""
        return F.l1_loss(adapted, target)

    def losses(self, lq: torch.Tensor, s_out: torch.Tensor, t_out: torch.Tensor, s_feats: list[torch.Tensor],
               t_feats: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Weighted losses ``{'l_kd_out', 'l_kd_feat'}`` (the enabled ones).

        Args:
            lq: the query ``(B, 3, H, W)``.
            s_out, t_out: student and teacher outputs ``(B, 3, H, W)``.
            s_feats: student taps, one per :attr:`student_modules`.
            t_feats: observed teacher taps (after :meth:`observe`), one per tap pair.
        """
        losses = {}
        if self.output_weight > 0:
            losses['l_kd_out'] = self.output_weight * F.l1_loss(s_out, t_out)
        if self.tap_pairs:
            pairs = zip(self.adapters, s_feats[:len(self.tap_pairs)], t_feats, strict=True)
            losses['l_kd_feat'] = self.feature_weight * sum(
                self.match(adapt(conv, s, t.shape[-2:]), t) for conv, s, t in pairs) / len(t_feats)
        return losses

    def extra_repr(self) -> str:
        return f'output_weight={self.output_weight}, feature_weight={self.feature_weight}, taps={self.tap_pairs}'
