"""DistillModel: a student (``network_g``) learns from a frozen, optionally ASVP-protected teacher (the attack setting).

The teacher is ``network_teacher`` loaded from ``path.pretrain_network_teacher``; the top-level ``asvp:`` block
protects the teacher (the released model), not the student. Losses (weights in ``distill:``): output KD, L1 between
student and teacher outputs; feature KD, L1 between ``adapter(student_tap)`` (a 1x1 conv, resized bilinearly to the
teacher tap's size) and the teacher tap as observed THROUGH the defence (``defense.exposed_features``), optionally
after the ``inverse_asvp`` attacker. Ground truth is never used in training, only in validation.

Option block::

    distill:
      output_weight: 1.0            # L1(student(lq), teacher(lq)); 0 disables
      feature_weight: 1.0           # sum over taps of L1(adapter(student_tap), teacher_tap); 0 disables
      taps: [[body.3, encoder_level3]]   # [student module, teacher module] pairs (exact names)
      attack: null                  # or inverse_asvp
      attack_opt: {layout: channel_space, k_max: 16, pool: false}
"""
from collections import OrderedDict

import torch
import torch.nn.functional as F
from basicsr.archs import build_network
from basicsr.utils import get_root_logger
from basicsr.utils.registry import MODEL_REGISTRY
from torch import nn

from basicsr_unlearn.config import check_keys
from basicsr_unlearn.defenses import build_defense
from basicsr_unlearn.defenses.inverse_asvp import inverse_asvp
from basicsr_unlearn.inference import forward_padded
from basicsr_unlearn.models.all_in_one_model import AllInOneModel

DISTILL_KEYS = ('output_weight', 'feature_weight', 'taps', 'attack', 'attack_opt')
ATTACKS = ('inverse_asvp',)


class TapAdapters(nn.Module):
    """1x1 convolutions mapping student tap channels to teacher tap channels (one per tap pair)."""

    def __init__(self, channels: list[tuple[int, int]]) -> None:
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(c_s, c_t, 1) for c_s, c_t in channels)

    def forward(self, feats: list[torch.Tensor], sizes: list[tuple[int, int]]) -> list[torch.Tensor]:
        """Adapt student taps ``(B, C_s, h, w)`` to ``(B, C_t, H, W)`` (bilinear resize when sizes differ)."""
        out = []
        for conv, feat, size in zip(self.convs, feats, sizes, strict=True):
            feat = conv(feat)
            if feat.shape[-2:] != size:
                feat = F.interpolate(feat, size=size, mode='bilinear', align_corners=False)
            out.append(feat)
        return out


def record_into(store: dict, name: str):
    """A forward hook writing the module's output tensor into ``store[name]``."""
    def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        store[name] = output
    return hook


@MODEL_REGISTRY.register()
class DistillModel(AllInOneModel):
    """Knowledge distillation from a frozen teacher, by output KD, feature KD or both (see module docstring)."""

    @classmethod
    def check_options(cls, opt: dict) -> None:
        """Check the ``distill`` block (and AllInOneModel's blocks)."""
        super().check_options(opt)
        distill = opt.get('distill') or {}
        check_keys(distill, DISTILL_KEYS, 'distill')
        if distill.get('attack') not in (None, *ATTACKS):
            raise ValueError(f"distill.attack: unknown '{distill['attack']}'; expected null or one of "
                             f"{', '.join(ATTACKS)}")
        check_keys(distill.get('attack_opt') or {}, ('layout', 'k_max', 'pool'), 'distill.attack_opt')
        for i, pair in enumerate(distill.get('taps') or []):
            if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and all(isinstance(p, str) for p in pair)):
                raise ValueError(f'distill.taps[{i}]: expected [student_module, teacher_module], got {pair!r}')
        if float(distill.get('feature_weight', 0)) > 0 and not distill.get('taps'):
            raise ValueError('distill.taps: feature_weight > 0 needs at least one [student, teacher] tap pair')

    # ---------------------------------------------------------------- construction
    def init_training_settings(self) -> None:
        """Build the frozen teacher, the tap hooks and adapters, then SRModel's settings (optimizer over both)."""
        distill = self.opt.get('distill') or {}
        self.output_weight = float(distill.get('output_weight', 1.0))
        self.feature_weight = float(distill.get('feature_weight', 0.0))
        self.attack = distill.get('attack')
        self.attack_opt = dict(distill.get('attack_opt') or {})
        self.tap_pairs = [tuple(p) for p in distill.get('taps') or []] if self.feature_weight > 0 else []

        if 'network_teacher' not in self.opt:
            raise ValueError('network_teacher: DistillModel needs the teacher arch block (and '
                             'path.pretrain_network_teacher)')
        self.net_teacher = build_network(self.opt['network_teacher']).to(self.device)
        load_path = self.opt['path'].get('pretrain_network_teacher')
        if load_path is None:
            raise ValueError('path.pretrain_network_teacher: DistillModel needs the teacher checkpoint')
        self.load_network(self.net_teacher, load_path, self.opt['path'].get('strict_load_teacher', True),
                          self.opt['path'].get('param_key_teacher', 'params'))
        self.net_teacher.eval().requires_grad_(False)

        self.student_taps: dict[str, torch.Tensor] = {}
        self.teacher_taps: dict[str, torch.Tensor] = {}
        student, teacher = self.get_bare_model(self.net_g), self.net_teacher
        s_modules, t_modules = dict(student.named_modules()), dict(teacher.named_modules())
        for i, (s_name, t_name) in enumerate(self.tap_pairs):
            for name, modules, net in ((s_name, s_modules, 'network_g'), (t_name, t_modules, 'network_teacher')):
                if name not in modules:
                    raise ValueError(f"distill.taps[{i}]: '{name}' is not a module of {net} "
                                     f"({type(modules['']).__name__}); e.g. {', '.join(list(modules)[1:12])}")
            s_modules[s_name].register_forward_hook(record_into(self.student_taps, s_name))
            t_modules[t_name].register_forward_hook(record_into(self.teacher_taps, t_name))
        self.adapters = self.model_to_device(TapAdapters(self._tap_channels()))
        super().init_training_settings()
        get_root_logger().info(f'DistillModel: output KD x{self.output_weight}, feature KD x{self.feature_weight} '
                               f'over {self.tap_pairs}, attack {self.attack}')

    def _tap_channels(self) -> list[tuple[int, int]]:
        """(student, teacher) channel counts of the tap pairs, from one probe forward pass."""
        if not self.tap_pairs:
            return []
        probe = torch.zeros(1, self.opt['network_teacher'].get('inp_channels', 3), 32, 32, device=self.device)
        with torch.no_grad():
            self.get_bare_model(self.net_g)(probe)
            self.net_teacher(probe)
        return [(self.student_taps.pop(s).shape[1], self.teacher_taps.pop(t).shape[1]) for s, t in self.tap_pairs]

    def attach_defense(self):
        """The ``asvp:`` block protects the teacher (training); there is nothing to protect at test time."""
        if not self.opt.get('asvp') or not hasattr(self, 'net_teacher'):
            return None
        return build_defense({'type': 'ASVP', **self.opt['asvp']}).attach(self.net_teacher)

    def setup_optimizers(self) -> None:
        """One optimizer (``train.optim_g``) over the student and the adapters."""
        train_opt = self.opt['train']
        params = [p for p in self.net_g.parameters() if p.requires_grad] + list(self.adapters.parameters())
        optim_type = train_opt['optim_g'].pop('type')
        self.optimizer_g = self.get_optimizer(optim_type, params, **train_opt['optim_g'])
        self.optimizers.append(self.optimizer_g)

    # ---------------------------------------------------------------- training
    @torch.no_grad()
    def teacher_targets(self, lq: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Teacher output ``(B, 3, H, W)`` and the observed teacher taps (through the defence, then the attack)."""
        self.teacher_taps.clear()
        output = forward_padded(self.net_teacher, lq, self.pad_multiple())
        exposed = self.defense.exposed_features if self.defense is not None else {}
        feats = []
        for _, t_name in self.tap_pairs:
            feat = exposed.get(t_name, self.teacher_taps[t_name])
            if self.attack == 'inverse_asvp':
                feat = inverse_asvp(feat, **self.attack_opt)
            feats.append(feat)
        return output, feats

    def optimize_parameters(self, current_iter: int) -> None:
        """One step of output KD and/or feature KD from the teacher on ``self.lq`` (``self.gt`` is not used)."""
        t_out, t_feats = self.teacher_targets(self.lq)
        self.optimizer_g.zero_grad()
        self.student_taps.clear()
        self.output = self.net_g(self.lq)
        loss_dict = OrderedDict()
        l_total = self.output.new_zeros(())
        if self.output_weight > 0:
            loss_dict['l_kd_out'] = self.output_weight * F.l1_loss(self.output, t_out)
            l_total = l_total + loss_dict['l_kd_out']
        if self.tap_pairs:
            s_feats = [self.student_taps[s] for s, _ in self.tap_pairs]
            adapted = self.adapters(s_feats, [f.shape[-2:] for f in t_feats])
            loss_dict['l_kd_feat'] = self.feature_weight * sum(
                F.l1_loss(a, t) for a, t in zip(adapted, t_feats, strict=True)) / len(t_feats)
            l_total = l_total + loss_dict['l_kd_feat']
        loss_dict['l_total'] = l_total
        l_total.backward()
        self.optimizer_g.step()
        self.log_dict = self.reduce_loss_dict(loss_dict)
        if self.ema_decay > 0:
            self.model_ema(decay=self.ema_decay)

    def save(self, epoch: int, current_iter: int) -> None:
        """Student (and EMA), adapters (``net_adapters``), training state and train_log."""
        super().save(epoch, current_iter)
        if self.tap_pairs:
            self.save_network(self.adapters, 'net_adapters', current_iter)
