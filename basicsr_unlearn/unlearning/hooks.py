"""Training hooks (stop criteria, divergence guard) that any ``AllInOneModel`` subclass can run.

BasicSR's train loop has no hooks, so :class:`HookedTraining` (a mixin: ``class M(HookedTraining, AllInOneModel)``)
calls ``self.hooks`` at the points the loop does reach: after each ``save``, after each ``validation``, and — for a
model whose ``optimize_parameters`` calls :meth:`HookedTraining.allow_update` — before each update. A hook stops
training by returning a reason; the remaining iterations become no-ops (no update, no checkpoint, no wall time), so
any BasicSR launcher works and ``net_g_latest.pth`` (written at the stop, again at the final save) holds the weights
at the stop; a run resumed after a stop stays stopped.

Decisions that need a whole validation round (BasicSR validates one loader at a time) are taken by
:meth:`TrainingHook.decide` at the start of the next iteration, or at the final save: the weights have not changed
since the round, so the stop is recorded at the validated iteration.
"""
import json
import time
from os import path as osp

import torch
import torch.distributed as dist
from basicsr.utils import get_root_logger
from basicsr.utils.dist_util import master_only

from basicsr_unlearn.fileio import atomic_path


def all_ranks_true(flag: bool, device: torch.device) -> bool:
    """``flag`` AND-reduced over the process group, so every rank takes the same decision.

    Example:
        >>> all_ranks_true(True, torch.device('cpu'))  # one process
        True
    """
    if not (dist.is_available() and dist.is_initialized()):
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item() > 0)


def any_rank_true(flag: bool, device: torch.device) -> bool:
    """``flag`` OR-reduced over the process group.

    Example:
        >>> any_rank_true(False, torch.device('cpu'))
        False
    """
    return not all_ranks_true(not flag, device)


def sum_over_ranks(t: torch.Tensor) -> torch.Tensor:
    """``t`` summed over the process group, in place (unchanged in one process); returns ``t``."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t)
    return t


def names_over_ranks(names: list[str]) -> list[str]:
    """The sorted union of ``names`` over the process group.

    Example:
        >>> names_over_ranks(['l_retain', 'l_forget'])
        ['l_forget', 'l_retain']
    """
    if not (dist.is_available() and dist.is_initialized()):
        return sorted(set(names))
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, list(names))
    return sorted({n for rank in gathered for n in rank})


def mean_over_ranks(values: dict[str, torch.Tensor], names: list[str], device: torch.device) -> dict[str, float]:
    """``{name: mean of values[name] over the ranks that have it}`` for each of ``names`` (the same on every rank).

    Example:
        >>> mean_over_ranks({'l_a': torch.tensor(2.0)}, ['l_a', 'l_b'], torch.device('cpu'))
        {'l_a': 2.0}
    """
    local = torch.tensor([[float(values[n].detach()) if n in values else 0.0 for n in names],
                          [1.0 if n in values else 0.0 for n in names]], device=device)
    total, count = sum_over_ranks(local).tolist()
    return {n: t / c for n, t, c in zip(names, total, count, strict=True) if c}


def snapshot(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A CPU copy of ``net``'s state dict."""
    return {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}


def snapshot_nets(model) -> dict[str, dict[str, torch.Tensor]]:
    """CPU copies of the model's trained networks: ``{'net_g': ..., 'net_g_ema': ...}`` (the EMA one if present)."""
    nets = {'net_g': model.get_bare_model(model.net_g)}
    if hasattr(model, 'net_g_ema'):
        nets['net_g_ema'] = model.net_g_ema
    return {name: snapshot(net) for name, net in nets.items()}


def restore_nets(model, state: dict[str, dict[str, torch.Tensor]]) -> None:
    """Load a :func:`snapshot_nets` result back into the model's networks."""
    model.get_bare_model(model.net_g).load_state_dict(state['net_g'])
    if 'net_g_ema' in state:
        model.net_g_ema.load_state_dict(state['net_g_ema'])


def all_finite(state: dict) -> bool:
    """Whether every floating-point tensor of ``state`` (a state dict, or a dict of them) is finite.

    Example:
        >>> all_finite({'w': torch.ones(2)}), all_finite({'net': {'w': torch.tensor([1.0, float('nan')])}})
        (True, False)
    """
    return all(all_finite(v) if isinstance(v, dict) else bool(torch.isfinite(v).all())
               for v in state.values() if isinstance(v, dict) or v.is_floating_point())


class TrainingHook:
    """A piece of training control; every method is optional (returns None = carry on)."""

    def before_train(self, model) -> None:
        """Once, after the pretrained weights are loaded and before a method changes them."""

    def check_update(self, model, terms: dict[str, torch.Tensor], total: torch.Tensor) -> str | None:
        """Before an update with the step's loss ``terms`` and their sum: a reason to stop instead of updating."""

    def after_save(self, model) -> None:
        """After a periodic checkpoint was written."""

    def after_validation(self, model, dataloader, result: dict) -> None:
        """After one validation loader (``result`` as :func:`~basicsr_unlearn.evaluation.metrics.evaluate`)."""

    def decide(self, model) -> str | None:
        """At the start of the next iteration (or the final save): a reason to stop."""

    def state_dict(self) -> dict:
        """What a resumed run needs to go on as this one would (saved with each training state)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore a :meth:`state_dict` (on resume, after ``before_train`` saw the resumed weights)."""


class HookedTraining:
    """Mixin for an ``AllInOneModel`` subclass: runs ``self.hooks`` and makes iterations after a stop no-ops.

    The subclass sets ``self.hooks`` (a list of :class:`TrainingHook`) in ``init_training_settings`` and calls
    :meth:`allow_update` in ``optimize_parameters`` before ``backward``. The hooks' ``before_train`` runs at the
    first call of the loop (the model is fully built then, ``train_log`` included).
    """

    hooks: list[TrainingHook] | tuple = ()
    stopped = False
    stop_reason = ''
    last_val_iter = 0
    hooks_saved_iter: int | None = None  # the iteration of the last ``<iter>.hooks`` written (rank 0)
    _started = False

    def _start(self) -> None:
        if not self._started:
            self._started = True
            for hook in self.hooks:
                hook.before_train(self)

    def stop(self, reason: str, at_iter: int | None = None) -> None:
        """Stop training (``train_log['stopped']``, a warning in the log); later iterations are no-ops.

        The weights at the stop are written at once to ``net_g_latest.pth`` (with ``train_log.json``), so a resumed
        run (:meth:`resume_training`) finds them even when this process dies before its final save.
        """
        self.stopped = True
        self.stop_reason = reason
        self.train_log['stopped'] = {'iter': int(self.current_iter if at_iter is None else at_iter), 'reason': reason}
        get_root_logger().warning(f'Training stopped: {reason}. Remaining iterations are no-ops.')
        super().save(-1, -1)

    def resume_training(self, resume_state: dict) -> None:
        """As the model's, with the ``stop`` record of ``train_log.json``; a run whose ``train_log.json`` says it
        stopped stays stopped, with the weights at the stop (``net_g_latest.pth``, EMA included) and its ``stopped``
        record, and says so in the log; any other run gets its hooks' saved state back (:meth:`load_hooks_state`)."""
        super().resume_training(resume_state)
        log = {}
        if osp.isfile(self.train_log_path):
            with open(self.train_log_path) as f:
                log = json.load(f)
        self.train_log.update({k: log[k] for k in ('stop', 'stopped') if k in log})
        if 'stopped' not in log:
            self.load_hooks_state(resume_state['iter'])
            return
        self.stopped, self.stop_reason, self._started = True, log['stopped']['reason'], True
        latest = osp.join(self.opt['path']['models'], 'net_g_latest.pth')
        self.load_network(self.net_g, latest, True, 'params')
        if hasattr(self, 'net_g_ema'):
            self.load_network(self.net_g_ema, latest, True, 'params_ema')
        get_root_logger().warning(f"Resumed a run that had stopped at iter {log['stopped']['iter']}: "
                                  f"{self.stop_reason}. Remaining iterations are no-ops.")

    def hooks_state_path(self, current_iter: int) -> str:
        """``training_states/<iter>.hooks``: the hooks' state beside ``<iter>.state``."""
        return osp.join(self.opt['path']['training_states'], f'{current_iter}.hooks')

    def hooks_state(self) -> dict:
        """What ``<iter>.hooks`` holds: each hook's :meth:`~TrainingHook.state_dict` under its class name and the
        last validated iteration under ``'last_val_iter'`` (subclasses may add entries under lower-case names)."""
        return {**{type(hook).__name__: hook.state_dict() for hook in self.hooks}, 'last_val_iter': self.last_val_iter}

    @master_only
    def write_hooks_state(self, current_iter: int) -> None:
        """:meth:`hooks_state` to ``training_states/<iter>.hooks``, atomically."""
        with atomic_path(self.hooks_state_path(current_iter)) as tmp:
            torch.save(self.hooks_state(), tmp)
        self.hooks_saved_iter = current_iter

    @master_only
    def save_training_state(self, epoch: int, current_iter: int) -> None:
        """``training_states/<iter>.hooks`` (written first: a whole ``<iter>.state`` implies its hooks' file), then
        the model's training state."""
        if current_iter != -1:
            self.write_hooks_state(current_iter)
        super().save_training_state(epoch, current_iter)

    def load_hooks_state(self, current_iter: int) -> dict:
        """Run ``before_train`` on the resumed weights, then give each hook its saved state (if saved); returns
        the whole saved :meth:`hooks_state` (tensors on the CPU; ``{}`` without a file)."""
        self._start()
        path = self.hooks_state_path(current_iter)
        if not osp.isfile(path):
            return {}
        states = torch.load(path, map_location='cpu', weights_only=True)
        for hook in self.hooks:
            if type(hook).__name__ in states:
                hook.load_state_dict(states[type(hook).__name__])
        self.last_val_iter = states.get('last_val_iter', 0)
        return states

    def allow_update(self, terms: dict[str, torch.Tensor], total: torch.Tensor) -> bool:
        """False (and training stopped) when a hook vetoes this update."""
        self._start()
        for hook in self.hooks:
            reason = hook.check_update(self, terms, total)
            if reason:
                self.stop(reason)
                return False
        return True

    def _decide(self) -> None:
        self._start()
        for hook in self.hooks:
            if self.stopped:
                return
            reason = hook.decide(self)
            if reason:
                self.stop(reason, at_iter=self.last_val_iter)

    def update_learning_rate(self, current_iter: int, warmup_iter: int = -1) -> None:
        """As the model's; after a stop only the iteration counter moves (no wall time is charged)."""
        self._decide()
        if self.stopped:
            self._mark = time.perf_counter()
            self.current_iter = current_iter
            return
        super().update_learning_rate(current_iter, warmup_iter)

    def feed_data(self, data: dict) -> None:
        """As the model's; nothing after a stop."""
        self._decide()
        if not self.stopped:
            super().feed_data(data)

    def save(self, epoch: int, current_iter: int) -> None:
        """As the model's; after a stop only the final ``latest`` save (``current_iter == -1``) happens."""
        self._start()
        if current_iter == -1:
            self._decide()
        if self.stopped and current_iter != -1:
            return
        super().save(epoch, current_iter)
        if not self.stopped:
            for hook in self.hooks:
                hook.after_save(self)

    def validation(self, dataloader, current_iter, tb_logger=None, save_img: bool = False) -> dict:
        """As the model's, then the hooks (skipped once stopped, when the last metrics are returned); at the
        iteration of the last ``<iter>.hooks`` (saved just before) that file is rewritten with the round in it, so a
        run resumed from ``<iter>.state`` still decides the round."""
        if self.stopped and self.opt['is_train']:
            return self.last_metrics
        if self.opt['is_train']:
            self._start()
        result = super().validation(dataloader, current_iter, tb_logger, save_img)
        if self.opt['is_train']:
            self.last_val_iter = self.current_iter
            for hook in self.hooks:
                hook.after_validation(self, dataloader, result)
            if self.current_iter == self.hooks_saved_iter:  # BasicSR saves before it validates the same iteration
                self.write_hooks_state(self.current_iter)
        return result
