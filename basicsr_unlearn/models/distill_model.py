"""DistillModel: a student (``network_g``) learns from a frozen, optionally ASVP-protected teacher (the attack setting).

The teacher is ``network_teacher`` loaded from ``path.pretrain_network_teacher``; the top-level ``asvp:`` block
protects the teacher (the released model), not the student, through :meth:`AllInOneModel.attach_defense`. The
attacker is the ``distill:`` block, a class of :data:`~basicsr_unlearn.attacks.ATTACK_REGISTRY` chosen by ``type``
(``KD`` when absent): it names the feature taps it reads, sees each teacher tap THROUGH the defence (the exposed
copy of a hooked module, the plain output of any other), may transform it, and turns outputs and taps into losses.
Ground truth is never used in training, only in validation. A batch may carry stored teacher targets
(``data['answers']``: ``{'output': (B, 3, H, W), 'taps': [(B, C, h, w), ...]}``, crops of :meth:`teacher_targets` of
whole images, as an attacker who queried the released model once per image would train); then the teacher is not run.

Option block (the attacks and their keys: ``basicsr_unlearn/attacks/``)::

    distill:
      type: KD                      # KD | InverseASVPKD | SpectrumKD | LowPassKD | SkepticalKD
      output_weight: 1.0            # L1(student(lq), teacher(lq)); 0 disables
      feature_weight: 1.0           # mean over taps of L1(adapter(student_tap), observed teacher_tap); 0 disables
      taps: [[body.3, encoder_level3]]   # [student module, teacher module] pairs (exact names)
"""
import torch
from basicsr.archs import build_network
from basicsr.utils import get_root_logger
from basicsr.utils.registry import MODEL_REGISTRY
from torch import nn

from basicsr_unlearn.attacks import build_attack
from basicsr_unlearn.inference import forward_padded
from basicsr_unlearn.models.all_in_one_model import AllInOneModel


def record_into(store: dict, name: str):
    """A forward hook writing the module's output tensor into ``store[name]``."""
    def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        store[name] = output
    return hook


def hook_modules(net: nn.Module, names: dict[str, str], store: dict, label: str) -> None:
    """Record the outputs of ``net``'s modules ``{option path: name}`` into ``store[name]`` (an error naming the
    option path if one is missing)."""
    modules = dict(net.named_modules())
    for where, name in names.items():
        if name not in modules:
            raise ValueError(f"{where}: '{name}' is not a module of {label} ({type(net).__name__}); "
                             f"e.g. {', '.join(list(modules)[1:12])}")
    for name in dict.fromkeys(names.values()):
        modules[name].register_forward_hook(record_into(store, name))


class AttackLoss(nn.Module):
    """The attack's :meth:`losses` as a forward pass, so that DDP can wrap the attack's trainable parts."""

    def __init__(self, attack: nn.Module) -> None:
        super().__init__()
        self.attack = attack

    def forward(self, *args: torch.Tensor | list[torch.Tensor]) -> dict[str, torch.Tensor]:
        return self.attack.losses(*args)


@MODEL_REGISTRY.register()
class DistillModel(AllInOneModel):
    """Knowledge distillation from a frozen teacher by a registered attack (see module docstring)."""

    @classmethod
    def check_options(cls, opt: dict) -> None:
        """Check the ``distill`` block by building its attack (and AllInOneModel's blocks)."""
        super().check_options(opt)
        build_attack(opt.get('distill') or {})

    # ---------------------------------------------------------------- construction
    def init_training_settings(self) -> None:
        """Build the frozen teacher, the attack and its tap hooks, then SRModel's settings (optimizer over both)."""
        self.attack = build_attack(self.opt.get('distill') or {})
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
        hook_modules(self.get_bare_model(self.net_g), self.attack.student_modules, self.student_taps, 'network_g')
        hook_modules(self.net_teacher, self.attack.teacher_modules, self.teacher_taps, 'network_teacher')
        self.attack.build(*self._tap_channels())
        self.attack = self.attack.to(self.device)
        self.attack_loss = AttackLoss(self.attack)
        if self.opt['dist'] and any(p.requires_grad for p in self.attack.parameters()):
            # DDP, as for net_g: every rank starts from rank 0's adapters (seeds differ per rank) and steps with the
            # gradients averaged over ranks, so the adapters stay identical
            self.attack_loss = self.model_to_device(self.attack_loss)
        super().init_training_settings()
        get_root_logger().info(f'DistillModel: attack {type(self.attack).__name__}({self.attack.extra_repr()})')

    def _tap_channels(self) -> tuple[list[int], list[int]]:
        """Channel counts of the attack's student and teacher taps, from one probe forward pass."""
        if not self.attack.student_modules and not self.attack.teacher_modules:
            return [], []
        probe = torch.zeros(1, self.opt['network_teacher'].get('inp_channels', 3), 32, 32, device=self.device)
        with torch.no_grad():
            self.get_bare_model(self.net_g)(probe)
            self.net_teacher(probe)
        channels = ([self.student_taps[s].shape[1] for s in self.attack.student_modules.values()],
                    [self.teacher_taps[t].shape[1] for t in self.attack.teacher_modules.values()])
        self.student_taps.clear()
        self.teacher_taps.clear()
        return channels

    def attach_defense(self, net: nn.Module | None = None):
        """The ``asvp:`` block protects the teacher in training; there is nothing to protect at test time."""
        return super().attach_defense(self.net_teacher) if hasattr(self, 'net_teacher') else None

    def setup_optimizers(self) -> None:
        """One optimizer (``train.optim_g``) over the student and the attack's trainable parts."""
        train_opt = self.opt['train']
        params = [p for p in self.net_g.parameters() if p.requires_grad] + list(self.attack.parameters())
        optim_type = train_opt['optim_g'].pop('type')
        self.optimizer_g = self.get_optimizer(optim_type, params, **train_opt['optim_g'])
        self.optimizers.append(self.optimizer_g)

    def teacher_multiple(self) -> int:
        """Input size multiple of the teacher: its arch's ``pad_multiple``, else ``val.pad_multiple`` (default 8)."""
        default = (self.opt.get('val') or {}).get('pad_multiple', 8)
        return int(getattr(self.net_teacher, 'pad_multiple', None) or default)

    # ---------------------------------------------------------------- training
    @torch.no_grad()
    def teacher_targets(self, lq: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Teacher output ``(B, 3, H, W)`` and the observed teacher taps (through the defence, then the attack's
        :meth:`observe`)."""
        self.teacher_taps.clear()
        output = forward_padded(self.net_teacher, lq, self.teacher_multiple())
        exposed = self.defense.exposed_features if self.defense is not None else {}
        return output, [self.attack.observe(exposed[t] if t in exposed else self.teacher_taps[t])
                        for t in self.attack.teacher_modules.values()]

    def feed_data(self, data: dict) -> None:
        """AllInOneModel's inputs, and the stored teacher targets ``data['answers']`` when the batch carries them."""
        super().feed_data(data)
        answers = data.get('answers')
        self.answers = answers and (answers['output'].to(self.device), [t.to(self.device) for t in answers['taps']])

    def optimize_parameters(self, current_iter: int) -> None:
        """One step of the attack's losses on ``self.lq`` (``self.gt`` is not used): the student's forward and the
        losses under ``self.precision`` (autocast; scaled backward and step with fp16), the teacher's targets (through
        the defence, or the stored ones) in full precision."""
        t_out, t_feats = self.answers or self.teacher_targets(self.lq)
        self.optimizer_g.zero_grad()
        self.student_taps.clear()
        with self.precision.autocast():
            self.output = self.net_g(self.lq)
            s_feats = [self.student_taps[s] for s in self.attack.student_modules.values()]
            loss_dict = self.attack_loss(self.lq, self.output, t_out, s_feats, t_feats)
            l_total = sum(loss_dict.values(), self.output.new_zeros(()))
        loss_dict['l_total'] = l_total
        self.precision.backward(l_total, self.optimizer_g)
        self.precision.step(self.optimizer_g)
        self.log_dict = self.reduce_loss_dict(loss_dict)
        if self.ema_decay > 0:
            self.model_ema(decay=self.ema_decay)

    def save(self, epoch: int, current_iter: int) -> None:
        """Student (and EMA), the attack's trainable parts (``net_attack``), training state and train_log."""
        super().save(epoch, current_iter)
        if any(True for _ in self.attack.parameters()):
            self.save_network(self.attack, 'net_attack', current_iter)
