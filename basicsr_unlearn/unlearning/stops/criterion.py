"""What every stop criterion shares: the forget types, one table of val PSNR per validation round, reference
numbers computed once per val loader, and the "oracle" label."""
from collections.abc import Callable

import torch
from basicsr.archs import build_network
from basicsr.utils import get_root_logger
from basicsr.utils.registry import Registry
from torch import nn

from basicsr_unlearn.data.degradation_names import check_name
from basicsr_unlearn.evaluation.metrics import evaluate, metric_specs
from basicsr_unlearn.unlearning.hooks import TrainingHook

STOP_REGISTRY = Registry('stop criterion')


class StopCriterion(TrainingHook):
    """Base of the stop criteria: collects each validation round's PSNR per degradation and judges it once.

    Subclasses set :attr:`oracle` (True when the criterion reads a retrained model or a number taken from one: the
    run is then labelled ``oracle stop`` in ``train_log.json``, the log and the stop reason) and implement
    :meth:`judge`; :meth:`baseline` evaluates another restorer once per val loader.

    Args:
        de_name: the forget type(s) to watch; default ``datasets.train.forget``.
    """

    oracle = False

    def __init__(self, de_name: str | list[str] | None = None) -> None:
        names = [de_name] if isinstance(de_name, str) else de_name
        self.de_names = [check_name(n, 'de_name') for n in names] if names else None
        self.table: dict[str, float] = {}
        self.table_iter: int | None = None
        self.judged = True
        self.baselines: dict[tuple[str, str], dict] = {}

    @property
    def label(self) -> str:
        return 'oracle stop' if self.oracle else 'oracle-free stop'

    def forget_names(self, model) -> list[str]:
        """``de_name``, else ``datasets.train.forget``."""
        return self.de_names or list(((model.opt.get('datasets') or {}).get('train') or {}).get('forget') or [])

    def before_train(self, model) -> None:
        """Label the run in ``train_log.json`` and the log (on resume, into the records of the same criterion from
        before the resume)."""
        kept = model.train_log.get('stop') or {}
        if kept.get('type') != type(self).__name__:
            kept = {}
        model.train_log['stop'] = {**kept, 'type': type(self).__name__, 'oracle': self.oracle, 'label': self.label}
        if self.oracle:
            get_root_logger().warning(f'train.stop: {type(self).__name__} is an ORACLE stop (it reads a retrained '
                                      'model or a number taken from one); this run is labelled "oracle stop" and is '
                                      'not what a user could do at deletion time')

    def after_validation(self, model, dataloader, result: dict) -> None:
        """Add one loader's PSNR to the round's table (a new iteration starts a new table)."""
        if model.current_iter != self.table_iter:
            self.table, self.table_iter = {}, model.current_iter
            self.new_round(model)
        self.table.update(psnr_of(result))
        self.judged = False
        self.after_loader(model, dataloader, result)

    def state_dict(self) -> dict:
        """The last round's table and whether it was judged (a round validated at a saved iteration is judged by
        the run resumed from it)."""
        return {'table': self.table, 'table_iter': self.table_iter, 'judged': self.judged}

    def load_state_dict(self, state: dict) -> None:
        self.table, self.table_iter, self.judged = state['table'], state['table_iter'], state['judged']

    def decide(self, model) -> str | None:
        """Judge the last complete round once."""
        if self.judged:
            return None
        self.judged = True
        reason = self.judge(model, self.table)
        return f'{self.label}: {reason}' if reason else None

    def baseline(self, model, dataloader, key: str, restore: Callable[[torch.Tensor], torch.Tensor]) -> dict:
        """``{de_name: psnr}`` of ``restore`` on ``dataloader`` with the model's metric settings, computed once per
        (``key``, loader name)."""
        cache = (key, dataloader.dataset.opt['name'])
        if cache not in self.baselines:
            result = evaluate(restore, dataloader, metrics=metric_specs(model.opt.get('val')),
                              source=f'train.stop {key}')
            self.baselines[cache] = psnr_of(result)
        return self.baselines[cache]

    def new_round(self, model) -> None:
        """Called at the first loader of a validation round."""

    def after_loader(self, model, dataloader, result: dict) -> None:
        """Called after each loader's PSNR joined the table."""

    def judge(self, model, table: dict[str, float]) -> str | None:
        """A reason to stop (without the label) from a complete round's ``{de_name: psnr}``, or None."""
        raise NotImplementedError


def psnr_of(result: dict) -> dict[str, float]:
    """``{de_name: psnr}`` of an :func:`~basicsr_unlearn.evaluation.metrics.evaluate` result.

    Example:
        >>> psnr_of({'per_degradation': {'haze': {'psnr': 15.0, 'ssim': 0.7, 'count': 3}}})
        {'haze': 15.0}
    """
    try:
        return {name: m['psnr'] for name, m in result['per_degradation'].items()}
    except KeyError as err:
        raise ValueError("train.stop: needs a metric named 'psnr' (val.metrics.psnr; the default has it)") from err


def load_frozen(model, path: str, strict: bool = True, param_key: str = 'params') -> nn.Module:
    """A network of ``model``'s arch (``network_g``) holding the checkpoint ``path``, in eval mode on its device."""
    net = build_network(model.opt['network_g']).to(model.device)
    model.load_network(net, path, strict, param_key)
    return net.eval()


def mean_over(values: dict[str, float], names: list[str]) -> float:
    """Mean of ``values`` over ``names``.

    Example:
        >>> mean_over({'haze': 15.0, 'rain': 20.0, 'noise15': 30.0}, ['haze', 'rain'])
        17.5
    """
    return sum(values[n] for n in names) / len(names)
