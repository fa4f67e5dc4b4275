"""UnlearnModel: remove one degradation type from a pretrained restoration network (any BasicSR arch).

The model is wiring only: batches, one forward, optimiser, logging, checkpoints. What to minimise comes from the
method named in ``train.method: {type: Name, **params}`` (one module per method in
``basicsr_unlearn/unlearning/methods/``); the model builds only what the method declares it needs (a frozen copy of
the original, the adapted network of ``path.pretrain_network_adapted``). Each iteration sees forget and retain
samples together (``MixedDegradationDataset`` with ``forget:`` and ``role_group:`` yields groups ``lq``/``gt``
``(B, n, 3, h, w)`` and ``is_forget``/``de_type`` ``(B, n)``; plain batches with ``role`` work too) and every loss
term comes from ONE forward of ``net_g`` on the batch plus the method's extra inputs (DDP-safe).

``train`` keys besides BasicSR's (``optim_g``, ``scheduler``, ``total_iter``, ``warmup_iter``, ``ema_decay``):

- ``method``: the unlearning method (required).
- ``stop``: a stop criterion of ``STOP_REGISTRY``, e.g. ``{type: InputLevelStop, retain_delta: 0.3}`` (oracle-free)
  or ``{type: OracleStop, reference: <retrained checkpoint>}`` (labelled "oracle stop").
- ``guard``: ``{explode_ratio}`` of the :class:`~basicsr_unlearn.unlearning.guard.DivergenceGuard` (always on for
  non-finite losses).
- ``amp``, ``channels_last``: mixed precision of the step (:mod:`basicsr_unlearn.precision`; CUDA only).

On resume (``--auto_resume``, ``path.resume_state``) BasicSR loads ``net_g`` from ``models/net_g_<iter>.pth``; the
frozen original and the stops' baselines still come from the checkpoint the run started from
(:func:`~basicsr_unlearn.config.original_checkpoint`), and the method gets back what it computed once (its
``state_dict``, saved in ``training_states/<iter>.hooks``) instead of running ``setup`` again.
"""
import copy

import torch
from basicsr.archs import build_network
from basicsr.utils.registry import MODEL_REGISTRY
from torch import nn

from basicsr_unlearn.config import check_keys, original_checkpoint
from basicsr_unlearn.data.degradation_names import DEGRADATIONS
from basicsr_unlearn.models.all_in_one_model import AllInOneModel
from basicsr_unlearn.precision import PRECISION_KEYS
from basicsr_unlearn.unlearning import methods  # noqa: F401  (registration)
from basicsr_unlearn.unlearning.guard import DivergenceGuard
from basicsr_unlearn.unlearning.hooks import HookedTraining, all_finite, mean_over_ranks, names_over_ranks
from basicsr_unlearn.unlearning.method import METHOD_REGISTRY, Nets, Step, check_resumable
from basicsr_unlearn.unlearning.params import build, construct
from basicsr_unlearn.unlearning.stops import STOP_REGISTRY

TRAIN_KEYS = ('optim_g', 'scheduler', 'total_iter', 'warmup_iter', 'ema_decay', 'method', 'stop', 'guard',
              *PRECISION_KEYS)


@MODEL_REGISTRY.register()
class UnlearnModel(HookedTraining, AllInOneModel):
    """Unlearning of one degradation type from a pretrained all-in-one (or any BasicSR) restoration network."""

    @classmethod
    def check_options(cls, opt: dict) -> None:
        """AllInOneModel's checks, then ``train`` (method, stop, guard: keys and types), the pretrained network and
        the batch design against what the method needs; every error names the option path."""
        super().check_options(opt)
        if opt.get('is_train') is False:
            return
        train = opt.get('train') or {}
        check_keys(train, TRAIN_KEYS, 'train')
        if not (opt.get('path') or {}).get('pretrain_network_g'):
            raise ValueError('path.pretrain_network_g: required (the trained model to unlearn from); unlearning a '
                             'randomly initialised network means nothing')
        method = build(METHOD_REGISTRY, train.get('method'), 'train.method')
        if train.get('stop') is not None:
            build(STOP_REGISTRY, train['stop'], 'train.stop')
        construct(DivergenceGuard, train.get('guard') or {}, 'train.guard')
        needs, name = method.needs, train['method']['type']
        if needs.adapted and not opt['path'].get('pretrain_network_adapted'):
            raise ValueError(f'path.pretrain_network_adapted: required by train.method {name} (the checkpoint '
                             'adapted to the forget data, e.g. by AdaptStage1)')
        data = (opt.get('datasets') or {}).get('train') or {}
        if data.get('type') != 'MixedDegradationDataset':
            return
        group = data.get('role_group') or {}
        if needs.forget and not data.get('forget'):
            raise ValueError(f'datasets.train.forget: train.method {name} needs forget samples; name the '
                             'degradation(s) to forget, e.g. forget: [haze]')
        for role, needed in (('forget', needs.forget), ('retain', needs.retain)):
            if needed and group and not group.get(role, 0):
                raise ValueError(f'datasets.train.role_group.{role}: 0, but train.method {name} needs {role} '
                                 f'samples in every batch; expected >= 1')

    def init_training_settings(self) -> None:
        """Build the method and what it needs, the guard and the stop hooks, then BasicSR's optimiser/scheduler; the
        method's ``setup`` runs at the first start only (a resumed run gets its state in :meth:`load_hooks_state`)."""
        train = self.opt['train']
        self.log_dict = {}
        self.forget_names: set[str] = set()
        bare = self.get_bare_model(self.net_g)
        if not all_finite(bare.state_dict()):
            raise ValueError(f"path.pretrain_network_g: {self.opt['path']['pretrain_network_g']} holds non-finite "
                             'weights; refusing to unlearn from them')
        self.method = build(METHOD_REGISTRY, train['method'], 'train.method')
        needs = self.method.needs
        self.nets = Nets(net=bare, original=self._load_original() if needs.original else None,
                         adapted=self._load_adapted() if needs.adapted else None)
        self.hooks = [construct(DivergenceGuard, train.get('guard') or {}, 'train.guard')]
        if train.get('stop') is not None:
            self.hooks.append(build(STOP_REGISTRY, train['stop'], 'train.stop'))
        if self.opt['path'].get('resume_state'):
            check_resumable(self.method, 'train.method')
        else:
            self.method.setup(self.nets)
        super().init_training_settings()  # AllInOneModel/SRModel: EMA, pixel loss (unused here), optimizer, scheduler

    @staticmethod
    def _frozen(net: nn.Module) -> nn.Module:
        net.eval()
        for p in net.parameters():
            p.requires_grad_(False)
        return net

    def _load_original(self) -> nn.Module:
        """A frozen copy of ``net_g`` holding the checkpoint the run started from (also on resume)."""
        net = copy.deepcopy(self.get_bare_model(self.net_g))
        checkpoint, param_key = original_checkpoint(self.opt)
        self.load_network(net, checkpoint, self.opt['path'].get('strict_load_g', True), param_key)
        return self._frozen(net)

    def hooks_state(self) -> dict:
        """The hooks' states and, under ``'method'``, the method's :meth:`~UnlearnMethod.state_dict`."""
        return {**super().hooks_state(), 'method': self.method.state_dict()}

    def load_hooks_state(self, current_iter: int) -> dict:
        """As HookedTraining's, then the method's saved state (raises when a method with state has none saved,
        e.g. a ``<iter>.hooks`` written before methods kept theirs)."""
        states = super().load_hooks_state(current_iter)
        if 'method' in states:
            self.method.load_state_dict(states['method'], self.nets)
        elif self.method.state_dict():
            raise ValueError(f"{self.hooks_state_path(current_iter)}: no state of train.method "
                             f"{self.opt['train']['method']['type']} (what it computed at the first start); this "
                             'run cannot be resumed as it started: start it again')
        return states

    def _load_adapted(self) -> nn.Module:
        adapted = build_network(self.opt['network_g']).to(self.device)
        self.load_network(adapted, self.opt['path']['pretrain_network_adapted'], True, 'params')
        return self._frozen(adapted)

    def feed_data(self, data: dict) -> None:
        """Grouped batches (``lq`` ``(B, n, 3, h, w)``, ``is_forget``/``de_type`` ``(B, n)``) are flattened to
        ``(B*n, 3, h, w)`` with ``de_names``/``roles`` per sample; plain batches go to AllInOneModel."""
        if data['lq'].dim() == 5:
            names = {v: k for k, v in DEGRADATIONS.items()}
            data = {'lq': data['lq'].flatten(0, 1), 'gt': data['gt'].flatten(0, 1),
                    'de_name': [names[int(t)] for t in data['de_type'].flatten()],
                    'role': ['forget' if f else 'retain' for f in data['is_forget'].flatten().tolist()]}
        super().feed_data(data)
        if self.stopped:
            return
        self.forget_mask = torch.tensor([r == 'forget' for r in self.roles], device=self.device)
        self.forget_names.update(n for n, r in zip(self.de_names, self.roles, strict=True) if r == 'forget')

    def optimize_parameters(self, current_iter: int) -> None:
        """One step: the method's extra inputs, one forward, its loss terms, the hooks' veto, backward, update.

        The forward and the losses run under ``self.precision`` (autocast; scaled backward and step with fp16, the
        gradients unscaled before the method's ``after_backward``); the extra inputs (PGD, SalUn masks, Fisher) are
        computed outside it, in full precision. Every rank reaches the same collectives: a rank whose batch gives no
        term (while another's does) backpropagates a zero loss, so DDP's gradient all-reduce still runs on all of
        them; the step is skipped only when no rank has a term (e.g. TaskVector). Each logged term is averaged over
        the ranks that have it, and the logged ``l_total`` is the sum of those averages.
        """
        if self.stopped:
            return
        extra = self.method.extra_inputs(self.lq, self.gt, self.forget_mask, self.nets)
        self.optimizer_g.zero_grad()
        n = self.lq.shape[0]
        inputs = self.lq if extra is None else self.precision.to_memory_format(torch.cat([self.lq, extra]))
        with self.precision.autocast():
            out = self.net_g(inputs)
            self.output = out[:n]
            terms = self.method.losses(Step(self.lq, self.gt, self.forget_mask, out[:n], self.nets,
                                            None if extra is None else out[n:]))
        names = names_over_ranks(list(terms))
        if not names:
            return
        l_total = sum(terms.values()) if terms else 0.0 * out.sum()
        if not self.allow_update(terms, l_total):
            return
        self.precision.backward(l_total, self.optimizer_g)
        self.method.after_backward(self.nets)
        self.precision.step(self.optimizer_g)
        self.log_dict = mean_over_ranks(terms, names, self.device)
        self.log_dict['l_total'] = sum(self.log_dict.values())
        if self.ema_decay > 0:
            self.model_ema(decay=self.ema_decay)
