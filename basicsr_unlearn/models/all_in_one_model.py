"""AllInOneModel: the restoration model every part of the plugin builds on (an ``SRModel`` for all-in-one nets).

On top of BasicSR's ``SRModel`` it adds: Adam/AdamW/SGD; L1 pixel loss when ``train.pixel_opt`` is absent; DDP on
CPU (no ``device_ids``); ``restore(lq)`` = eval-mode inference (EMA net if present) with pad-to-multiple / crop-back
and optional tiling; batches' ``de_name``/``role`` kept; validation metrics per degradation (BasicSR's
``val.metrics`` blocks through its ``METRIC_REGISTRY``, PSNR/SSIM by default), sharded over ranks;
atomic checkpoints of plain types; ``experiments/<name>/train_log.json`` (wall time, median step time, loss and
validation curves); ``train: {amp: {dtype: bf16|fp16}, channels_last: true}`` on CUDA
(:mod:`basicsr_unlearn.precision`; ignored on CPU).

Subclasses (UnlearnModel, DistillModel) override :meth:`init_training_settings` and :meth:`optimize_parameters`
(using ``self.precision`` for autocast, backward and step); they put their summed objective in
``self.log_dict['l_total']`` (else the sum of ``l_*`` entries is logged) and may read ``self.last_metrics`` after a
validation.

Option keys read here: ``val: {val_freq, save_img, suffix, pbar, pad_multiple, tile: {size, overlap},
test_y_channel, crop_border, metrics: {<name>: {type, **kwargs}}}`` (``test_y_channel``/``crop_border`` shape the
default PSNR/SSIM; with ``metrics`` each block says its own).
"""
import json
import statistics
import time
from collections import OrderedDict
from os import path as osp

import torch
from basicsr.models.sr_model import SRModel
from basicsr.utils import get_root_logger
from basicsr.utils.dist_util import master_only
from basicsr.utils.registry import MODEL_REGISTRY
from torch import nn
from torch.nn.parallel import DataParallel, DistributedDataParallel

from basicsr_unlearn.config import check_keys
from basicsr_unlearn.defenses import build_defense
from basicsr_unlearn.evaluation.metrics import check_metric_specs, evaluate, metric_space, metric_specs
from basicsr_unlearn.fileio import atomic_path, write_json
from basicsr_unlearn.inference import restore_image
from basicsr_unlearn.precision import Precision, check_precision_options

VAL_KEYS = ('val_freq', 'save_img', 'suffix', 'pbar', 'pad_multiple', 'tile', 'test_y_channel', 'crop_border',
            'metrics')
OPTIMIZERS = {'Adam': torch.optim.Adam, 'AdamW': torch.optim.AdamW, 'SGD': torch.optim.SGD}


def defense_block(opt: dict) -> dict:
    """The top-level ``asvp:`` block with its ``type`` (``ASVP`` when absent, as older YAMLs have it)."""
    return {'type': 'ASVP', **opt['asvp']}


@MODEL_REGISTRY.register()
class AllInOneModel(SRModel):
    """All-in-one restoration model (one network, several degradations) for BasicSR's train/test pipelines."""

    def __init__(self, opt: dict) -> None:
        self.check_options(opt)
        self._wall_time = 0.0
        self._mark = time.perf_counter()
        self._step_start: float | None = None  # when the current iteration began (one update_learning_rate call)
        self._step_seconds: list[float] = []  # full iterations (data, step, logging, any validation) seen so far
        self.current_iter = 0
        self.last_metrics: dict = {}
        train = opt.get('train') if opt.get('is_train') else None
        self.precision = Precision.from_options(train, torch.device('cuda' if opt['num_gpu'] != 0 else 'cpu'))
        super().__init__(opt)
        self.defense = self.attach_defense()
        self.train_log_path = osp.join(opt['path'].get('experiments_root', opt['path']['log']), 'train_log.json')
        self.train_log = {'wall_time_s': 0.0, 'iter': 0, 'loss': [], 'val': []}

    # ---------------------------------------------------------------- construction
    @classmethod
    def check_options(cls, opt: dict) -> None:
        """Raise on unknown keys in the option blocks this model reads (called by the launchers before any work).

        Subclasses extend it (``super().check_options(opt)``) for their own blocks, using ``config.check_keys``.

        Example:
            >>> AllInOneModel.check_options({'val': {'metrics': {'psnr': {'type': 'calculate_psnr'}}}})
            Traceback (most recent call last):
            ValueError: val.metrics.psnr: calculate_psnr needs crop_border (arguments: crop_border, ...)
        """
        if isinstance(opt.get('train'), dict):
            check_precision_options(opt['train'])
        val = opt.get('val') or {}
        check_keys(val, VAL_KEYS, 'val')
        if val.get('tile'):
            check_keys(val['tile'], ('size', 'overlap'), 'val.tile')
        if val.get('metrics') is not None:
            check_metric_specs(val['metrics'], 'val.metrics')
            for key in ('test_y_channel', 'crop_border'):
                if key in val:
                    raise ValueError(f'val.{key}: applies to the default PSNR/SSIM only; with val.metrics set '
                                     f'{key} in each metric block (val.metrics.<name>.{key})')
        if opt.get('asvp'):  # the defence's own checks (type, keys, values), before any folder exists
            build_defense(defense_block(opt), 'asvp')

    def attach_defense(self, net: nn.Module | None = None):
        """Protect ``net`` (default: the inference net) with the top-level ``asvp:`` block; ``None`` without one.

        The block names its class in ``type``, a ``DEFENSE_REGISTRY`` name, like every other block; ``ASVP`` when
        absent (older YAMLs). Subclasses choose the net (DistillModel: the teacher) and call this one copy.
        """
        if not self.opt.get('asvp'):
            return None
        return build_defense(defense_block(self.opt), 'asvp').attach(net or self.inference_net())

    def init_training_settings(self) -> None:
        """SRModel's settings (EMA, losses, optimizer, scheduler) with an L1 pixel loss by default."""
        self.opt['train'].setdefault('pixel_opt', {'type': 'L1Loss', 'loss_weight': 1.0, 'reduction': 'mean'})
        super().init_training_settings()

    def get_optimizer(self, optim_type: str, params, lr: float, **kwargs) -> torch.optim.Optimizer:
        """Build ``Adam``, ``AdamW`` or ``SGD`` (``train.optim_g.type``)."""
        if optim_type not in OPTIMIZERS:
            raise ValueError(f"train.optim_g.type: unknown '{optim_type}'; expected one of {', '.join(OPTIMIZERS)}")
        return OPTIMIZERS[optim_type](params, lr, **kwargs)

    def model_to_device(self, net: nn.Module) -> nn.Module:
        """Move ``net`` to the device (channels_last if set); DDP under a process group (no ``device_ids`` on CPU),
        DataParallel for >1 GPU."""
        net = self.precision.to_memory_format(net.to(self.device))
        if self.opt['dist']:
            find_unused = self.opt.get('find_unused_parameters', False)
            device_ids = [torch.cuda.current_device()] if self.device.type == 'cuda' else None
            net = DistributedDataParallel(net, device_ids=device_ids, find_unused_parameters=find_unused)
        elif self.opt['num_gpu'] > 1:
            net = DataParallel(net)
        return net

    # ---------------------------------------------------------------- data and inference
    def feed_data(self, data: dict) -> None:
        """Keep ``lq``, ``gt`` (if present), ``de_names`` and ``roles`` (``'unlabelled'``/``'retain'`` if absent)."""
        self.lq = self.precision.to_memory_format(data['lq'].to(self.device))
        if 'gt' in data:
            self.gt = data['gt'].to(self.device)
        n = self.lq.shape[0]
        self.de_names = list(data['de_name']) if 'de_name' in data else ['unlabelled'] * n
        self.roles = list(data['role']) if 'role' in data else ['retain'] * n

    def inference_net(self) -> nn.Module:
        """The bare network used at test time: the EMA copy if present, else ``net_g`` (unwrapped from DDP)."""
        return self.net_g_ema if hasattr(self, 'net_g_ema') else self.get_bare_model(self.net_g)

    def pad_multiple(self) -> int:
        """Input size multiple: ``net.pad_multiple`` if the arch defines it, else ``val.pad_multiple`` (default 8)."""
        net_multiple = getattr(self.get_bare_model(self.net_g), 'pad_multiple', None)
        return int(net_multiple or (self.opt.get('val') or {}).get('pad_multiple', 8))

    @torch.no_grad()
    def restore(self, lq: torch.Tensor, net: nn.Module | None = None) -> torch.Tensor:
        """Eval-mode inference on any image size, with this model's padding and ``val.tile``.

        Args:
            lq: degraded images ``(B, 3, H, W)`` in [0, 1] (any device).
            net: the network to run (default :meth:`inference_net`); e.g. a frozen checkpoint of the same arch.

        Returns:
            Restored ``(B, 3, H, W)`` on the model's device (see :func:`basicsr_unlearn.inference.restore_image`).
        """
        return restore_image(net or self.inference_net(), lq.to(self.device), self.pad_multiple(),
                             (self.opt.get('val') or {}).get('tile'))

    def test(self) -> None:
        """``self.output = self.restore(self.lq)``."""
        self.output = self.restore(self.lq)

    # ---------------------------------------------------------------- training
    def optimize_parameters(self, current_iter: int) -> None:
        """SRModel's step (pixel and perceptual losses, ``l_pix``/``l_percep``/``l_style`` logged, EMA update) under
        ``self.precision``: autocast for the forward pass and losses, scaled backward and step with fp16."""
        self.optimizer_g.zero_grad()
        loss_dict = OrderedDict()
        with self.precision.autocast():
            self.output = self.net_g(self.lq)
            if self.cri_pix:
                loss_dict['l_pix'] = self.cri_pix(self.output, self.gt)
            if self.cri_perceptual:
                l_percep, l_style = self.cri_perceptual(self.output, self.gt)
                loss_dict.update((k, v) for k, v in (('l_percep', l_percep), ('l_style', l_style)) if v is not None)
        self.precision.backward(sum(loss_dict.values()), self.optimizer_g)
        self.precision.step(self.optimizer_g)
        self.log_dict = self.reduce_loss_dict(loss_dict)
        if self.ema_decay > 0:
            self.model_ema(decay=self.ema_decay)

    # ---------------------------------------------------------------- training bookkeeping
    def update_learning_rate(self, current_iter: int, warmup_iter: int = -1) -> None:
        """BasicSR's LR update (called once per iteration); also tracks the iteration, the training wall time and the
        seconds between consecutive calls (one full iteration each)."""
        now = time.perf_counter()
        self._wall_time += now - self._mark
        self._mark = now
        if self._step_start is not None:
            self._step_seconds.append(now - self._step_start)
        self._step_start = now
        self.current_iter = current_iter
        super().update_learning_rate(current_iter, warmup_iter)

    def get_current_log(self) -> dict:
        """The reduced losses of the last step (logged every ``logger.print_freq``); also appended to train_log."""
        total = self.log_dict.get('l_total', sum(v for k, v in self.log_dict.items() if k.startswith('l_')))
        self.train_log['loss'].append([self.current_iter, float(total)])
        return self.log_dict

    @master_only
    def write_train_log(self) -> None:
        """Write ``train_log.json`` atomically (rank 0); ``step_time_s`` is the median iteration of this process (no
        start-up, validations and checkpoints only in the rare slow iterations), ``None`` before two iterations."""
        self.train_log['wall_time_s'] = round(self._wall_time, 3)
        self.train_log['step_time_s'] = round(statistics.median(self._step_seconds), 5) if self._step_seconds else None
        self.train_log['iter'] = self.current_iter
        write_json(self.train_log_path, self.train_log)

    def resume_training(self, resume_state: dict) -> None:
        """Reload optimizers/schedulers, the fp16 grad scaler, the training wall time and the train_log curves up to
        the resumed iter."""
        super().resume_training(resume_state)
        self.precision.load_state_dict(resume_state.get('grad_scaler', {}))
        self._wall_time = float(resume_state.get('wall_time_s', 0.0))
        self._mark = time.perf_counter()
        self._step_start = None
        self.current_iter = resume_state['iter']
        if osp.isfile(self.train_log_path):
            with open(self.train_log_path) as f:
                log = json.load(f)
            self.train_log['loss'] = [e for e in log.get('loss', []) if e[0] <= self.current_iter]
            self.train_log['val'] = [e for e in log.get('val', []) if e[0] <= self.current_iter]

    # ---------------------------------------------------------------- checkpoints
    @master_only
    def save_network(self, net, net_label: str, current_iter: int, param_key='params') -> None:
        """Save ``{param_key: state_dict}`` to ``models/<net_label>_<iter|latest>.pth`` atomically (CPU tensors)."""
        suffix = 'latest' if current_iter == -1 else current_iter
        nets = net if isinstance(net, list) else [net]
        keys = param_key if isinstance(param_key, list) else [param_key]
        save_dict = {}
        for net_, key in zip(nets, keys, strict=True):
            state = self.get_bare_model(net_).state_dict()
            save_dict[key] = {k.removeprefix('module.'): v.detach().cpu() for k, v in state.items()}
        with atomic_path(osp.join(self.opt['path']['models'], f'{net_label}_{suffix}.pth')) as tmp:
            torch.save(save_dict, tmp)

    @master_only
    def save_training_state(self, epoch: int, current_iter: int) -> None:
        """Save ``training_states/<iter>.state`` atomically: epoch, iter, optimizers, schedulers, wall time (and the
        fp16 grad scaler)."""
        if current_iter == -1:
            return
        state = {
            'epoch': int(epoch),
            'iter': int(current_iter),
            'optimizers': [o.state_dict() for o in self.optimizers],
            'schedulers': [s.state_dict() for s in self.schedulers],
            'wall_time_s': float(self._wall_time),
        }
        if self.precision.scaler is not None:
            state['grad_scaler'] = self.precision.state_dict()
        with atomic_path(osp.join(self.opt['path']['training_states'], f'{current_iter}.state')) as tmp:
            torch.save(state, tmp)

    def save(self, epoch: int, current_iter: int) -> None:
        """Networks (``net_g`` and ``params_ema`` if EMA), training state and train_log."""
        now = time.perf_counter()
        self._wall_time += now - self._mark
        self._mark = now
        super().save(epoch, current_iter)
        self.write_train_log()

    # ---------------------------------------------------------------- validation
    def validation(self, dataloader, current_iter, tb_logger=None, save_img: bool = False) -> dict:
        """Each metric per degradation over ``dataloader`` (sharded over ranks), logged as ``m_<metric>_<de_name>``.

        Returns:
            The :func:`~basicsr_unlearn.evaluation.metrics.evaluate` result (also kept in ``self.last_metrics``).
        """
        self._wall_time += time.perf_counter() - self._mark
        if self.opt['is_train']:  # the final validation of train_pipeline is labelled total_iter + 1
            current_iter = self.current_iter
        val_opt = self.opt.get('val') or {}
        dataset_name = dataloader.dataset.opt['name']
        save_dir, suffix = None, None
        if save_img:
            if self.opt['is_train']:
                save_dir, suffix = osp.join(self.opt['path']['visualization'], dataset_name), str(current_iter)
            else:
                save_dir = osp.join(self.opt['path']['visualization'], dataset_name)
                suffix = val_opt.get('suffix') or self.opt['name']
        specs = metric_specs(val_opt)
        result = evaluate(self.restore, dataloader, save_dir=save_dir, save_suffix=suffix, metrics=specs,
                          source=f"model {self.opt['name']}")
        self.last_metrics = result
        logger = get_root_logger()
        message = f'Validation {dataset_name} ({metric_space(specs)}), iter {current_iter}'
        for de_name, m in result['per_degradation'].items():
            message += '\n\t #' + ''.join(f' m_{k}_{de_name}: {m[k]:.4f}' for k in specs) + f" ({m['count']} img)"
            if tb_logger is not None:
                for k in specs:
                    tb_logger.add_scalar(f'metrics/{dataset_name}/m_{k}_{de_name}', m[k], current_iter)
        logger.info(message)
        if self.opt['is_train']:
            entry = {de: {k: m[k] for k in specs} for de, m in result['per_degradation'].items()}
            if self.train_log['val'] and self.train_log['val'][-1][0] == current_iter:
                self.train_log['val'][-1][1].update(entry)
            else:
                self.train_log['val'].append([current_iter, entry])
            self.write_train_log()
        self._mark = time.perf_counter()
        return result
