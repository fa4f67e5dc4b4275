"""Divergence guard: a non-finite or exploding loss stops training and restores weights known to be good."""
import torch

from basicsr_unlearn.unlearning.hooks import (
    TrainingHook,
    all_finite,
    all_ranks_true,
    restore_nets,
    snapshot_nets,
    sum_over_ranks,
)
from basicsr_unlearn.unlearning.method import RETAIN_SIDE


class DivergenceGuard(TrainingHook):
    """Stop before an update whose loss is NaN/inf, or whose retain side (``l_retain + l_adv + l_distill``) exceeds
    ``explode_ratio`` x its first value, and restore the last GOOD weights.

    Good means: finite weights that then gave a finite, non-exploding loss. The pretrained weights and each periodic
    checkpoint are candidates (a non-finite one is dropped at once); a candidate becomes the good state only when the
    next step computed with exactly those weights passes the check. So a checkpoint of weights that diverged in the
    step before it was saved is never restored, and neither is anything non-finite. With no confirmed state yet (the
    first step fails) the weights are the pretrained ones, untouched. Weights are ``net_g`` and, with EMA, also
    ``net_g_ema``. The retain side is averaged over the ranks whose batch has retain-side terms; a step where none
    has (forget-only batches) is not compared, and its first value comes from the first step where one has.

    Args:
        explode_ratio: the retain-side bound (None: only non-finite losses stop).

    Example:
        >>> guard = DivergenceGuard(explode_ratio=10.0)
        >>> guard.explode_ratio
        10.0
    """

    def __init__(self, explode_ratio: float | None = None) -> None:
        if explode_ratio is not None and not explode_ratio > 0:
            raise ValueError(f'explode_ratio: expected a positive number; got {explode_ratio}')
        self.explode_ratio = explode_ratio
        self.first_retain: float | None = None
        self.candidate: dict[str, dict[str, torch.Tensor]] | None = None  # snapshot_nets of net_g (and its EMA)
        self.good: dict[str, dict[str, torch.Tensor]] | None = None

    def propose(self, model) -> None:
        """Offer the current weights as a candidate (dropped if any tensor is non-finite)."""
        state = snapshot_nets(model)
        self.candidate = state if all_finite(state) else None

    def before_train(self, model) -> None:
        self.propose(model)

    def after_save(self, model) -> None:
        self.propose(model)

    def state_dict(self) -> dict:
        """The first retain-side value and the last good weights."""
        return {'first_retain': self.first_retain, 'good': self.good}

    def load_state_dict(self, state: dict) -> None:
        self.first_retain, self.good = state['first_retain'], state['good']

    def check_update(self, model, terms: dict[str, torch.Tensor], total: torch.Tensor) -> str | None:
        finite = all_ranks_true(bool(torch.isfinite(total.detach()).item()), model.device)
        exploded, retain = False, None
        if finite and self.explode_ratio is not None:
            retain = self.retain_side(model, terms)
            if retain is not None:
                if self.first_retain is None:
                    self.first_retain = retain
                exploded = not retain <= self.explode_ratio * max(self.first_retain, 1e-12)
        if finite and not exploded:
            if self.candidate is not None:  # these weights just gave a good loss
                self.good, self.candidate = self.candidate, None
            return None
        why = 'non-finite loss' if not finite else (f'retain-side loss {retain:.4g} > {self.explode_ratio} x its '
                                                    f'first value {self.first_retain:.4g}')
        if self.good is None:
            return f'divergence guard: {why} at iter {model.current_iter} with the pretrained weights (kept)'
        restore_nets(model, self.good)
        return (f'divergence guard: {why} at iter {model.current_iter}; weights restored to the last good state '
                '(finite weights that passed a finite-loss step)')

    @staticmethod
    def retain_side(model, terms: dict[str, torch.Tensor]) -> float | None:
        """The step's retain-side loss, averaged over the ranks whose batch gave retain-side terms (None: no rank's
        did). Every rank takes part (one all-reduce), so all of them take the same decision."""
        present = [float(terms[k].detach()) for k in RETAIN_SIDE if k in terms]
        local = torch.tensor([sum(present), 1.0] if present else [0.0, 0.0], device=model.device)
        total, ranks = sum_over_ranks(local).tolist()
        return total / ranks if ranks else None
