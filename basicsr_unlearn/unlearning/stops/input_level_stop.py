"""An oracle-free stop: forget until held-out forget-type outputs are no better than their degraded inputs, while
every retained type stays within ``retain_delta`` of the ORIGINAL model; rewind to the best round that kept them when
a retained type stays down too long or the budget ends first.

It uses only what a user has at deletion time: the original model (``path.pretrain_network_g``), held-out images
of the forget type (val images the user set aside from their own forget set) and of the retained types.
"""
from basicsr_unlearn.config import original_checkpoint
from basicsr_unlearn.unlearning.hooks import restore_nets, snapshot_nets
from basicsr_unlearn.unlearning.stops.criterion import STOP_REGISTRY, StopCriterion, load_frozen, mean_over


@STOP_REGISTRY.register()
class InputLevelStop(StopCriterion):
    """Stop at the first validation round where both hold:

    - **forgotten**: the mean val PSNR of the forget type(s) is ``<= PSNR(lq, gt) + margin`` — the degraded inputs'
      own PSNR on the same held-out images, i.e. the identity mapping's level (a restorer that never learned the
      degradation roughly passes it through);
    - **retained**: every other val type is ``>= original - retain_delta`` (the original's PSNR on the same val
      images, evaluated once from ``path.pretrain_network_g``, the one the run started from even on resume).

    A round where a retained type is below ``original - retain_delta`` is a dip: forgetting usually drags the
    retained types down first and the retain terms pull them back within a few rounds. After more than
    ``patience`` dips in a row, or at a dip in the last round (``train.total_iter``, the budget), stop and
    (``rewind: true``) restore the best feasible round: the validated weights with the lowest forget PSNR among the
    rounds that kept every retained type (the weights at the start of training when none did; ``net_g`` and, with
    EMA, ``net_g_ema``) — SCRUB+R's rewind with a retain constraint. When the budget ends on a feasible round that
    is not yet forgotten, the best feasible round is restored as well. Validate often and at ``total_iter``
    (``val.val_freq`` dividing it): the rule only sees validation rounds.

    Args:
        de_name: forget type(s) (default ``datasets.train.forget``).
        margin: dB above the input level still counted as forgotten (negative: demand outputs worse than inputs).
        retain_delta: tolerated drop (dB) of each retained type against the original.
        rewind: restore the best feasible round when stopping without success (False: the current weights).
        patience: dips in a row tolerated before the stop (0: stop at the first).

    Example:
        >>> stop = InputLevelStop(margin=0.0, retain_delta=0.3)
        >>> stop.label
        'oracle-free stop'
    """

    def __init__(self, de_name: str | list[str] | None = None, margin: float = 0.0, retain_delta: float = 0.3,
                 rewind: bool = True, patience: int = 0) -> None:
        super().__init__(de_name)
        if not retain_delta >= 0:
            raise ValueError(f'retain_delta: expected a number >= 0 (dB); got {retain_delta}')
        if patience < 0:
            raise ValueError(f'patience: expected an integer >= 0 (validation rounds); got {patience!r}')
        self.margin, self.retain_delta, self.rewind, self.patience = margin, retain_delta, rewind, patience
        self.dips = 0  # rounds in a row with a retained type below the bound
        self.input_level: dict[str, float] = {}
        self.original: dict[str, float] = {}
        self.net = None
        self.round_state: dict | None = None
        self.best: tuple[float, int, dict] | None = None  # (forget PSNR, iter, snapshot_nets)

    def before_train(self, model) -> None:
        super().before_train(model)
        start = snapshot_nets(model)
        self.best = (float('inf'), 0, start)
        if self.rewind:  # on resume, the weights of a round left unjudged at the saved iteration
            self.round_state = start

    def state_dict(self) -> dict:
        """The round's table, the best feasible round so far (a resumed run rewinds to it, not to its own start) and
        the input level and original PSNR the round is judged against (the round's weights are not saved: a round
        left unjudged is the saved iteration's, the weights the resumed run starts with)."""
        return {**super().state_dict(), 'best': self.best, 'input_level': self.input_level, 'original': self.original,
                'dips': self.dips}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.best, self.input_level, self.original = state['best'], state['input_level'], state['original']
        self.dips = state.get('dips', 0)  # absent in states saved before `patience` existed

    def new_round(self, model) -> None:
        if self.rewind:
            self.round_state = snapshot_nets(model)

    def after_loader(self, model, dataloader, result: dict) -> None:
        """The input level of this loader's forget types and the original's PSNR on its other types (once)."""
        forget = self.forget_names(model)
        names = list(result['per_degradation'])
        if any(n in forget for n in names):
            level = self.baseline(model, dataloader, 'input', lambda lq: lq)
            self.input_level.update({n: p for n, p in level.items() if n in forget})
        if any(n not in forget for n in names):
            if self.net is None:
                checkpoint, param_key = original_checkpoint(model.opt)
                self.net = load_frozen(model, checkpoint, model.opt['path'].get('strict_load_g', True), param_key)
            original = self.baseline(model, dataloader, 'original', lambda lq: model.restore(lq, self.net))
            self.original.update({n: p for n, p in original.items() if n not in forget})

    def judge(self, model, table: dict[str, float]) -> str | None:
        forget = [n for n in self.forget_names(model) if n in table and n in self.input_level]
        if not forget:
            return None
        psnr, level = mean_over(table, forget), mean_over(self.input_level, forget) + self.margin
        drops = {n: table[n] - self.original[n] for n in table if n in self.original}
        worst = min(drops, key=drops.get) if drops else None
        kept = worst is None or drops[worst] >= -self.retain_delta
        budget_end = self.table_iter >= model.opt['train']['total_iter']
        model.train_log['stop'].update(input_level_psnr=level, original_psnr=dict(self.original), de_names=forget)
        where = f'({", ".join(forget)}) at iter {self.table_iter}'
        if kept:
            self.dips = 0
            if self.round_state is not None and psnr < self.best[0]:
                self.best = (psnr, self.table_iter, self.round_state)
            if psnr <= level:
                return f'held-out forget PSNR {psnr:.3f} dB <= input level {level:.3f} dB {where}, retained types ' \
                       f'within {self.retain_delta} dB of the original'
            if not budget_end:
                return None
            reason = f'budget spent: held-out forget PSNR {psnr:.3f} dB > input level {level:.3f} dB {where}'
        else:
            self.dips += 1
            if self.dips <= self.patience and not budget_end:
                return None
            reason = f'{worst} fell {-drops[worst]:.3f} dB below the original (> retain_delta {self.retain_delta}) ' \
                     f'{where}' + (f', {self.dips} rounds in a row' if self.dips > 1 else '')
        if not self.rewind or (kept and self.best[1] == self.table_iter):
            return reason
        best_psnr, best_iter, state = self.best
        restore_nets(model, state)
        model.train_log['stop']['rewound_to_iter'] = best_iter
        shown = 'the starting weights' if best_iter == 0 else f'iter {best_iter} (forget PSNR {best_psnr:.3f} dB)'
        return f'{reason}; rewound to {shown}'
