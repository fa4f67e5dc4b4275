"""The contract between ``UnlearnModel`` and an unlearning method, and the registry methods register in.

A method is a class in :data:`METHOD_REGISTRY` (chosen in YAML as ``train.method: {type: Name, **params}``; its
``__init__`` parameters, with type hints, are the schema). It declares in :attr:`UnlearnMethod.needs` what the model
must build for it, and computes its loss terms from ONE shared forward of ``net_g`` per step (DDP-safe):

1. :meth:`~UnlearnMethod.setup` once at the first start, after the model built what was declared (e.g. apply a
   task vector), never on resume; what the method computes at ``setup`` or at a step (SalUn masks, a Fisher, a
   normaliser) must be its :meth:`~UnlearnMethod.state_dict`, saved with each training state and given back by
   :meth:`~UnlearnMethod.load_state_dict` on resume instead of ``setup``;
2. each step, :meth:`~UnlearnMethod.extra_inputs` (inputs appended to the shared forward, e.g. PGD copies), then
   the forward, then :meth:`~UnlearnMethod.losses` -> ``{'l_<name>': scalar}`` (summed and minimised; terms named
   ``l_retain``, ``l_adv``, ``l_distill`` are the retain side the divergence guard watches), then
   :meth:`~UnlearnMethod.after_backward` (e.g. mask gradients) before the optimiser step.

Example:
    >>> step = Step(lq=torch.zeros(2, 3, 4, 4), gt=torch.ones(2, 3, 4, 4), forget=torch.tensor([True, False]),
    ...             output=torch.full((2, 3, 4, 4), 0.5), nets=Nets(net=torch.nn.Identity()))
    >>> step.on_forget(lambda out, gt, lq: (out - gt).abs().mean())
    tensor(0.5000)
    >>> step.on_retain(lambda out, gt, lq: out.shape[0])
    1
"""
from collections.abc import Callable
from dataclasses import dataclass

import torch
from basicsr.utils.registry import Registry
from torch import nn

METHOD_REGISTRY = Registry('unlearning method')
RETAIN_SIDE = ('l_retain', 'l_adv', 'l_distill')  # terms the divergence guard compares with their first value


@dataclass(frozen=True)
class Needs:
    """What a method needs the model to build or the batches to hold.

    Attributes:
        original: a frozen copy of the pretrained network (``Nets.original``; on resume still the network the run
            started from, not the resumed weights).
        adapted: the network adapted to the forget data, from ``path.pretrain_network_adapted`` (``Nets.adapted``).
        forget: forget samples in every batch (``datasets.train.forget`` and ``role_group.forget > 0``).
        retain: retain samples in every batch (``role_group.retain > 0``).
    """

    original: bool = False
    adapted: bool = False
    forget: bool = False
    retain: bool = False


@dataclass
class Nets:
    """The networks of a run: ``net`` (the bare ``net_g`` being unlearned) and, if declared, frozen copies."""

    net: nn.Module
    original: nn.Module | None = None
    adapted: nn.Module | None = None


@dataclass
class Step:
    """One step's batch and the shared forward.

    Attributes:
        lq, gt: ``(N, 3, h, w)`` in [0, 1].
        forget: ``(N,)`` bool, True for forget samples.
        output: ``net_g(lq)`` ``(N, 3, h, w)``, differentiable.
        nets: the run's networks.
        extra_output: ``net_g`` of :meth:`UnlearnMethod.extra_inputs` (same forward), or None.
    """

    lq: torch.Tensor
    gt: torch.Tensor
    forget: torch.Tensor
    output: torch.Tensor
    nets: Nets
    extra_output: torch.Tensor | None = None

    def on_forget(self, fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]) -> torch.Tensor | None:
        """``fn(output, gt, lq)`` on the forget samples; None when the batch holds none."""
        return fn(self.output[self.forget], self.gt[self.forget], self.lq[self.forget]) if self.forget.any() else None

    def on_retain(self, fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]) -> torch.Tensor | None:
        """``fn(output, gt, lq)`` on the retain samples; None when the batch holds none."""
        r = ~self.forget
        return fn(self.output[r], self.gt[r], self.lq[r]) if r.any() else None


class UnlearnMethod:
    """Base class: no needs, no extra inputs, no gradient edits. Subclasses set :attr:`needs` and :meth:`losses`."""

    needs = Needs()

    def setup(self, nets: Nets) -> None:
        """Once, at the first start (``nets.net`` holds the pretrained weights); NOT called on resume
        (``--auto_resume``): what it computes must be in :meth:`state_dict` (a method that overrides ``setup`` but
        not ``state_dict`` is refused on resume, :func:`check_resumable`)."""

    def state_dict(self) -> dict:
        """What the method computed at :meth:`setup` or at a step (e.g. at its first forget step) and a resumed run
        must get back; saved in ``training_states/<iter>.hooks`` (``{}``: nothing)."""
        return {}

    def load_state_dict(self, state: dict, nets: Nets) -> None:
        """On resume, instead of :meth:`setup`: restore :meth:`state_dict` (its tensors come on the CPU; move them
        to ``nets.net``'s device)."""

    def extra_inputs(self, lq: torch.Tensor, gt: torch.Tensor, forget: torch.Tensor,
                     nets: Nets) -> torch.Tensor | None:
        """Inputs ``(M, 3, h, w)`` appended to this step's shared forward (their outputs: ``Step.extra_output``)."""
        return None

    def losses(self, step: Step) -> dict[str, torch.Tensor]:
        """The step's loss terms ``{'l_<name>': scalar}``; terms a batch cannot give (no such samples) are left out."""
        raise NotImplementedError

    def after_backward(self, nets: Nets) -> None:
        """After ``backward()``, before the optimiser step (gradients are in ``nets.net``'s ``.grad``)."""


def check_resumable(method: UnlearnMethod, key: str) -> None:
    """Raise when ``method`` overrides :meth:`~UnlearnMethod.setup` but not :meth:`~UnlearnMethod.state_dict`: a
    resumed run skips ``setup``, so what it computed would be lost.

    Example:
        >>> class Setup(UnlearnMethod):
        ...     def setup(self, nets): pass
        >>> check_resumable(Setup(), 'train.method')
        Traceback (most recent call last):
        ...
        TypeError: train.method: Setup overrides setup but not state_dict; ...
    """
    cls = type(method)
    if cls.setup is not UnlearnMethod.setup and cls.state_dict is UnlearnMethod.state_dict:
        raise TypeError(f'{key}: {cls.__name__} overrides setup but not state_dict; a resumed run skips setup, so it '
                        'cannot resume')


def present(**terms: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """The terms that are not None, as ``{'l_<name>': value}``.

    Example:
        >>> present(forget=torch.tensor(1.0), retain=None)
        {'l_forget': tensor(1.)}
    """
    return {f'l_{k}': v for k, v in terms.items() if v is not None}
