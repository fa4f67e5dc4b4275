"""UnlearnModel: remove one degradation type from a pretrained restoration network (any BasicSR arch).

Each iteration sees forget and retain samples together (``MixedDegradationDataset`` with ``forget:`` and
``role_group:`` yields groups ``lq``/``gt`` ``(B, n, 3, h, w)`` and ``is_forget``/``de_type`` ``(B, n)``; plain batches
with ``role`` work too) and minimises the sum of the configured terms, all computed from ONE forward of ``net_g`` on
the batch plus its adversarial copies (DDP-safe):

``train`` keys (each ``*_opt`` is a BasicSR loss block; ``target``/``attack`` are read here, the rest builds the loss):

- ``forget_opt``: on forget samples, e.g. ``{type: GradientAscentLoss, tau, target: gt}``; ``target`` is ``gt``
  (default), ``lq`` (identity target: forget inputs mapped to themselves) or ``original`` (the original model's
  output, SCRUB's max step). A plain ``L1Loss`` here with ``target: gt`` adapts to the forget data (Adapt stage 1).
- ``retain_opt``: on retain samples against ``gt`` (e.g. ``L1Loss``).
- ``adv_opt``: ``{type: AdversarialRetainLoss, eps, steps, step_size, attack: original|current}``: PGD copies of the
  retain inputs (made against the frozen original by default) restored to their clean targets.
- ``distill_opt``: retain outputs against the frozen original's outputs (SCRUB's min step).
- ``repulsion_opt``: ``ParameterRepulsionLoss`` from ``path.pretrain_network_adapted`` (distance normalised by
  ``theta_0``'s; the key contains ``pretrain_network`` so BasicSR's ``make_exp_dirs`` does not mkdir it).
- ``anchor_opt``: ``ParameterAnchorLoss`` to ``theta_0`` (Fisher from the first batch's forget samples if
  ``importance: fisher``).
- ``task_vector: {scale}``: at start, ``theta = theta_0 - scale * (theta_N - theta_0)`` with ``theta_N`` from
  ``path.pretrain_network_adapted`` (use ``total_iter: 0`` for the pure arithmetic baseline).
- ``stop_rule: {forget_psnr | reference, de_name, margin}``: after a validation whose set holds the forget type,
  stop once its PSNR <= target + margin (``reference``: a checkpoint of the retrained-without-X model evaluated on
  that set). Stopping makes the remaining iterations no-ops (no update, no checkpoint, no wall time), so any BasicSR
  launcher works; the final ``net_g_latest.pth`` holds the weights at the stop.
- ``guard: {explode_ratio}``: a non-finite loss, or retain-side loss above ``explode_ratio`` x its first value,
  restores the last saved (good) weights, logs why and stops.

``optim_g``, ``scheduler``, ``total_iter``, ``warmup_iter``, ``ema_decay`` are BasicSR's.
"""
import copy
import math
import time

import torch
import torch.distributed as dist
from basicsr.archs import build_network
from basicsr.losses import build_loss
from basicsr.utils import get_root_logger
from basicsr.utils.registry import MODEL_REGISTRY
from torch import nn

from basicsr_unlearn.config import check_keys
from basicsr_unlearn.data.degradation_names import DEGRADATIONS, check_name
from basicsr_unlearn.evaluation.metrics import evaluate
from basicsr_unlearn.losses.parameter_repulsion_loss import parameter_distance
from basicsr_unlearn.models.all_in_one_model import AllInOneModel
from basicsr_unlearn.unlearning.fisher import diagonal_fisher
from basicsr_unlearn.unlearning.task_vector import negate_task_vector

TRAIN_KEYS = ('optim_g', 'scheduler', 'total_iter', 'warmup_iter', 'ema_decay', 'forget_opt', 'retain_opt', 'adv_opt',
              'distill_opt', 'repulsion_opt', 'anchor_opt', 'task_vector', 'stop_rule', 'guard')
LOSS_KEYS = ('forget_opt', 'retain_opt', 'adv_opt', 'distill_opt', 'repulsion_opt', 'anchor_opt')
FORGET_TARGETS = ('gt', 'lq', 'original')
ADV_ATTACKS = ('original', 'current')


def _choice(value: str, allowed: tuple[str, ...], where: str) -> str:
    if value not in allowed:
        raise ValueError(f"{where}: unknown '{value}'; expected one of {', '.join(allowed)}")
    return value


def _all_ranks_true(flag: bool, device: torch.device) -> bool:
    """``flag`` AND-reduced over the process group (so every rank takes the same decision)."""
    if not (dist.is_available() and dist.is_initialized()):
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item() > 0)


@MODEL_REGISTRY.register()
class UnlearnModel(AllInOneModel):
    """Unlearning of one degradation type from a pretrained all-in-one (or any BasicSR) restoration network."""

    def init_training_settings(self) -> None:
        """Validate ``train``, build the losses, frozen original / adapted copies, optimizer and scheduler."""
        train = self.opt['train']
        check_keys(train, TRAIN_KEYS, 'train')
        self.stopped = False
        self.log_dict = {}
        self.stop_reason = ''
        self.forget_names: set[str] = set()
        self.stop_target: float | None = None
        self._retain_ref: float | None = None
        self._fisher: list[torch.Tensor] | None = None
        self.forget_target = _choice((train.get('forget_opt') or {}).get('target', 'gt'), FORGET_TARGETS,
                                     'train.forget_opt.target')
        self.adv_attack = _choice((train.get('adv_opt') or {}).get('attack', 'original'), ADV_ATTACKS,
                                  'train.adv_opt.attack')
        self.losses = {key: self._build_loss(key) for key in LOSS_KEYS if train.get(key)}
        if not any(k in self.losses for k in ('forget_opt', 'retain_opt', 'adv_opt', 'distill_opt')):
            if 'task_vector' not in train:
                raise ValueError('train: no loss configured; expected at least one of forget_opt, retain_opt, '
                                 'adv_opt, distill_opt (or task_vector with total_iter: 0)')
        self.stop_rule = train.get('stop_rule') or {}
        check_keys(self.stop_rule, ('forget_psnr', 'reference', 'de_name', 'margin'), 'train.stop_rule')
        if self.stop_rule and ('forget_psnr' in self.stop_rule) == ('reference' in self.stop_rule):
            raise ValueError('train.stop_rule: expected exactly one of forget_psnr (dB) or reference (checkpoint)')
        if 'de_name' in self.stop_rule:
            check_name(self.stop_rule['de_name'], 'train.stop_rule.de_name')
        if 'forget_psnr' in self.stop_rule:
            self.stop_target = float(self.stop_rule['forget_psnr'])
        self.guard = train.get('guard') or {}
        check_keys(self.guard, ('explode_ratio',), 'train.guard')

        bare = self.get_bare_model(self.net_g)
        adv_on_original = 'adv_opt' in self.losses and self.adv_attack == 'original'
        needs_original = (self.forget_target == 'original' or 'distill_opt' in self.losses
                          or 'anchor_opt' in self.losses or adv_on_original)
        self.net_orig = self._frozen_copy(bare) if needs_original else None
        adapted = self._load_adapted(bare) if ('repulsion_opt' in self.losses or 'task_vector' in train) else None
        if 'task_vector' in train:
            check_keys(train['task_vector'], ('scale',), 'train.task_vector')
            negate_task_vector(bare, adapted.state_dict(), float(train['task_vector']['scale']))
            get_root_logger().info(f"Task vector: theta_0 - {train['task_vector']['scale']} * (theta_N - theta_0)")
        if 'repulsion_opt' in self.losses:
            self.adapted_params = [p for p in adapted.parameters()]
            self.repulsion_norm = parameter_distance(list(bare.parameters()), self.adapted_params).item()
            if not self.repulsion_norm > 0:
                raise ValueError('path.pretrain_network_adapted: the adapted network equals the original; '
                                 'nothing to repel')
        self._good_state = self._snapshot()
        super().init_training_settings()  # AllInOneModel/SRModel: EMA, pixel loss (unused here), optimizer, scheduler

    # ---------------------------------------------------------------- construction helpers
    def _build_loss(self, key: str) -> nn.Module:
        block = dict(self.opt['train'][key])
        block.pop('target' if key == 'forget_opt' else 'attack' if key == 'adv_opt' else None, None)
        if 'type' not in block:
            raise ValueError(f'train.{key}: missing "type" (a registered loss, e.g. L1Loss)')
        try:
            return build_loss(block).to(self.device)
        except TypeError as err:
            raise ValueError(f'train.{key}: {err}') from err

    def _frozen_copy(self, net: nn.Module) -> nn.Module:
        frozen = copy.deepcopy(net).eval()
        for p in frozen.parameters():
            p.requires_grad_(False)
        return frozen

    def _load_adapted(self, bare: nn.Module) -> nn.Module:
        path = self.opt['path'].get('pretrain_network_adapted')
        if not path:
            raise ValueError('path.pretrain_network_adapted: required by train.repulsion_opt / train.task_vector '
                             '(the checkpoint adapted to the forget data, stage 1)')
        adapted = build_network(self.opt['network_g']).to(self.device)
        try:
            self.load_network(adapted, path, True, 'params')
        except FileNotFoundError as err:
            raise FileNotFoundError(f'path.pretrain_network_adapted: file not found: {path}') from err
        return self._frozen_copy(adapted)

    def _snapshot(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu().clone() for k, v in self.get_bare_model(self.net_g).state_dict().items()}

    # ---------------------------------------------------------------- data
    def feed_data(self, data: dict) -> None:
        """Grouped batches (``lq`` ``(B, n, 3, h, w)``, ``is_forget``/``de_type`` ``(B, n)``) are flattened to
        ``(B*n, 3, h, w)`` with ``de_names``/``roles`` per sample; plain batches go to AllInOneModel."""
        if self.stopped:
            return
        if data['lq'].dim() == 5:
            names = {v: k for k, v in DEGRADATIONS.items()}
            data = {'lq': data['lq'].flatten(0, 1), 'gt': data['gt'].flatten(0, 1),
                    'de_name': [names[int(t)] for t in data['de_type'].flatten()],
                    'role': ['forget' if f else 'retain' for f in data['is_forget'].flatten().tolist()]}
        super().feed_data(data)
        self.forget_mask = torch.tensor([r == 'forget' for r in self.roles], device=self.device)
        self.forget_names.update(n for n, r in zip(self.de_names, self.roles, strict=True) if r == 'forget')

    # ---------------------------------------------------------------- one step
    def optimize_parameters(self, current_iter: int) -> None:
        """One unlearning step: all configured terms from one forward; divergence guard before the update."""
        if self.stopped or not self.losses:
            return
        f, r = self.forget_mask, ~self.forget_mask
        bare = self.get_bare_model(self.net_g)
        terms: dict[str, torch.Tensor] = {}
        x_adv = None
        if 'adv_opt' in self.losses and r.any():
            attack_net = self.net_orig if self.adv_attack == 'original' else bare
            x_adv = self.losses['adv_opt'].perturb(attack_net, self.lq[r], self.gt[r])
        if 'anchor_opt' in self.losses and self._fisher is None:
            self._fisher = self._anchor_importance(f)
        self.optimizer_g.zero_grad()
        inputs = self.lq if x_adv is None else torch.cat([self.lq, x_adv])
        out = self.net_g(inputs)
        output, out_adv = out[:self.lq.shape[0]], out[self.lq.shape[0]:]
        self.output = output
        if 'forget_opt' in self.losses and f.any():
            terms['l_forget'] = self.losses['forget_opt'](output[f], self._forget_target(f))
        if 'retain_opt' in self.losses and r.any():
            terms['l_retain'] = self.losses['retain_opt'](output[r], self.gt[r])
        if 'distill_opt' in self.losses and r.any():
            with torch.no_grad():
                original = self.net_orig(self.lq[r])
            terms['l_distill'] = self.losses['distill_opt'](output[r], original)
        if x_adv is not None:
            terms['l_adv'] = self.losses['adv_opt'].restoration_loss(out_adv, self.gt[r])
        params = [p for p in bare.parameters()]
        if 'repulsion_opt' in self.losses:
            terms['l_repulsion'] = self.losses['repulsion_opt'](params, self.adapted_params, self.repulsion_norm)
        if 'anchor_opt' in self.losses:
            terms['l_anchor'] = self.losses['anchor_opt'](params, list(self.net_orig.parameters()), self._fisher)
        l_total = sum(terms.values())
        if not self._guard_ok(l_total, terms, current_iter):
            return
        l_total.backward()
        self.optimizer_g.step()
        terms['l_total'] = l_total
        self.log_dict = self.reduce_loss_dict({k: v.detach() for k, v in terms.items()})
        if self.ema_decay > 0:
            self.model_ema(decay=self.ema_decay)

    def _forget_target(self, f: torch.Tensor) -> torch.Tensor:
        if self.forget_target == 'lq':
            return self.lq[f]
        if self.forget_target == 'original':
            with torch.no_grad():
                return self.net_orig(self.lq[f])
        return self.gt[f]

    def _anchor_importance(self, f: torch.Tensor) -> list[torch.Tensor] | None:
        if self.losses['anchor_opt'].importance != 'fisher':
            return None
        if not f.any():
            raise ValueError('train.anchor_opt.importance: fisher needs forget samples in the first batch')
        return diagonal_fisher(self.net_orig, self.lq[f], self.gt[f])

    def _guard_ok(self, l_total: torch.Tensor, terms: dict[str, torch.Tensor], current_iter: int) -> bool:
        """Divergence guard: False (weights restored to the last saved good ones, training stopped) on NaN/inf
        or on retain-side loss explosion."""
        retain_side = float(sum(terms[k].detach() for k in ('l_retain', 'l_adv', 'l_distill') if k in terms) or 0.0)
        finite = _all_ranks_true(bool(torch.isfinite(l_total.detach()).item()), self.device)
        ratio = self.guard.get('explode_ratio')
        exploded = False
        if ratio is not None and finite:
            if self._retain_ref is None:
                self._retain_ref = retain_side
            exploded = not _all_ranks_true(retain_side <= float(ratio) * max(self._retain_ref, 1e-12), self.device)
        if finite and not exploded:
            return True
        why = 'non-finite loss' if not finite else (f'retain-side loss {retain_side:.4g} > {ratio} x its first value '
                                                    f'{self._retain_ref:.4g}')
        self.get_bare_model(self.net_g).load_state_dict(self._good_state)
        self._stop(current_iter, f'divergence guard: {why} at iter {current_iter}; weights restored to the last '
                                 'saved good checkpoint')
        return False

    # ---------------------------------------------------------------- stop rule and bookkeeping
    def _stop(self, current_iter: int, reason: str) -> None:
        self.stopped = True
        self.stop_reason = reason
        self.train_log['stopped'] = {'iter': int(current_iter), 'reason': reason}
        get_root_logger().warning(f'Unlearning stopped: {reason}. Remaining iterations are no-ops.')
        self.write_train_log()

    def update_learning_rate(self, current_iter: int, warmup_iter: int = -1) -> None:
        """As AllInOneModel; after a stop only the iteration counter moves (no wall time is charged)."""
        if self.stopped:
            self._mark = time.perf_counter()
            self.current_iter = current_iter
            return
        super().update_learning_rate(current_iter, warmup_iter)

    def save(self, epoch: int, current_iter: int) -> None:
        """AllInOneModel's save; keeps the saved weights as the guard's last good state; none after a stop except
        the final ``latest``."""
        if self.stopped and current_iter != -1:
            return
        super().save(epoch, current_iter)
        if not self.stopped:
            self._good_state = self._snapshot()

    def validation(self, dataloader, current_iter, tb_logger=None, save_img: bool = False) -> dict:
        """AllInOneModel's validation, then the stop rule on the forget type (skipped once stopped)."""
        if self.stopped and self.opt['is_train']:
            return self.last_metrics
        result = super().validation(dataloader, current_iter, tb_logger, save_img)
        if self.stop_rule and self.opt['is_train']:
            self._check_stop(dataloader, result)
        return result

    def _check_stop(self, dataloader, result: dict) -> None:
        names = [self.stop_rule['de_name']] if 'de_name' in self.stop_rule else sorted(self.forget_names)
        names = [n for n in names if n in result['per_degradation']]
        if not names:
            return
        if self.stop_target is None:
            self.stop_target = self._reference_psnr(dataloader, names)
        psnr = sum(result['per_degradation'][n]['psnr'] for n in names) / len(names)
        target = self.stop_target + float(self.stop_rule.get('margin', 0.0))
        get_root_logger().info(f'Stop rule: forget PSNR {psnr:.3f} dB vs target {target:.3f} dB ({", ".join(names)})')
        self.train_log['stop_rule'] = {'target_psnr': target, 'de_names': names}
        if psnr <= target:
            self._stop(self.current_iter, f'stop rule: forget PSNR {psnr:.3f} dB <= {target:.3f} dB '
                                          f'({", ".join(names)}) at iter {self.current_iter}')

    def _reference_psnr(self, dataloader, names: list[str]) -> float:
        """Mean PSNR over ``names`` of the ``stop_rule.reference`` checkpoint on ``dataloader``."""
        net = build_network(self.opt['network_g']).to(self.device)
        path = self.stop_rule['reference']
        try:
            self.load_network(net, path, True, 'params')
        except FileNotFoundError as err:
            raise FileNotFoundError(f'train.stop_rule.reference: file not found: {path}') from err
        val = self.opt.get('val') or {}
        ref = evaluate(lambda lq: self.restore(lq, net), dataloader, y_channel=val.get('test_y_channel', False),
                       crop_border=val.get('crop_border', 0))['per_degradation']
        psnr = sum(ref[n]['psnr'] for n in names) / len(names)
        if not math.isfinite(psnr):
            raise ValueError(f'train.stop_rule.reference: non-finite PSNR of {path} on {", ".join(names)}')
        get_root_logger().info(f'Stop rule: reference {path} scores {psnr:.3f} dB on {", ".join(names)}')
        return psnr
