"""The oracle stop (MUSE's rule): stop once the forget type's val PSNR reaches the retrained-without-X model's.

A user at deletion time has no retrained model: use this only to judge methods in benchmarks. Every run that uses
it is labelled ``oracle stop`` (``train_log.json``, the log, the stop reason).
"""
from os import path as osp

from basicsr_unlearn.unlearning.stops.criterion import STOP_REGISTRY, StopCriterion, load_frozen, mean_over


@STOP_REGISTRY.register()
class OracleStop(StopCriterion):
    """Stop once the mean val PSNR of the forget type(s) is ``<= target + margin``.

    ``target`` is ``forget_psnr`` (dB) or the PSNR of the ``reference`` checkpoint (the retrained-without-X model,
    same arch) on the same val images, evaluated once per loader.

    Args:
        reference: checkpoint of the retrained model (exactly one of ``reference`` / ``forget_psnr``).
        forget_psnr: the target in dB.
        de_name: forget type(s) to watch (default ``datasets.train.forget``).
        margin: dB added to the target.

    Example:
        >>> OracleStop(forget_psnr=16.0, margin=0.3).label
        'oracle stop'
    """

    oracle = True

    def __init__(self, reference: str | None = None, forget_psnr: float | None = None,
                 de_name: str | list[str] | None = None, margin: float = 0.0) -> None:
        super().__init__(de_name)
        if (reference is None) == (forget_psnr is None):
            raise ValueError('reference: expected exactly one of reference (a checkpoint) or forget_psnr (dB)')
        if reference is not None and not osp.isfile(osp.expanduser(reference)):
            raise FileNotFoundError(f'reference: file not found: {reference}')
        self.reference, self.forget_psnr, self.margin = reference, forget_psnr, margin
        self.targets: dict[str, float] = {}
        self.net = None

    def after_loader(self, model, dataloader, result: dict) -> None:
        """The reference's PSNR on this loader's forget types (once)."""
        names = [n for n in self.forget_names(model) if n in result['per_degradation']]
        if not names:
            return
        if self.forget_psnr is not None:
            self.targets.update(dict.fromkeys(names, float(self.forget_psnr)))
            return
        if self.net is None:
            self.net = load_frozen(model, self.reference)
        self.targets.update(self.baseline(model, dataloader, 'reference', lambda lq: model.restore(lq, self.net)))

    def state_dict(self) -> dict:
        """The round's table and the targets it is judged against."""
        return {**super().state_dict(), 'targets': self.targets}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.targets = state['targets']

    def judge(self, model, table: dict[str, float]) -> str | None:
        names = [n for n in self.forget_names(model) if n in table and n in self.targets]
        if not names:
            return None
        psnr, target = mean_over(table, names), mean_over(self.targets, names) + self.margin
        model.train_log['stop'].update(target_psnr=target, de_names=names)
        if psnr > target:
            return None
        return f'forget PSNR {psnr:.3f} dB <= target {target:.3f} dB ({", ".join(names)}) at iter {self.table_iter}'
