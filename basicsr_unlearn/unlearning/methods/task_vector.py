"""Task-vector negation (Ilharco et al. 2023): ``theta = theta_0 - s * (theta_N - theta_0)``, no training."""
import torch
from torch import nn

from basicsr_unlearn.unlearning.method import METHOD_REGISTRY, Needs, Nets, Step, UnlearnMethod


@torch.no_grad()
def negate_task_vector(net: nn.Module, adapted: dict[str, torch.Tensor], scale: float) -> nn.Module:
    """Move ``net`` (holding ``theta_0``) away from the adapted weights ``theta_N`` by ``scale`` task vectors, in place.

    Args:
        net: the original network (its floating-point parameters and buffers are ``theta_0``).
        adapted: state dict of the same architecture adapted to the forget data (``theta_N``).
        scale: ``s``; 0 keeps ``theta_0``, larger values forget more.

    Returns:
        ``net``.

    Example:
        >>> net = nn.Linear(1, 1, bias=False)
        >>> _ = net.weight.data.fill_(1.0)
        >>> negate_task_vector(net, {'weight': torch.full((1, 1), 3.0)}, 0.5).weight.item()  # 1 - 0.5 * (3 - 1)
        0.0
    """
    state = net.state_dict()
    missing = sorted(set(state) - set(adapted))
    if missing:
        raise KeyError(f'path.pretrain_network_adapted: the adapted network lacks {len(missing)} keys, e.g. '
                       f'{missing[:3]}')
    for key, value in state.items():
        if value.is_floating_point():
            value.sub_(scale * (adapted[key].to(value) - value))
    return net


@METHOD_REGISTRY.register()
class TaskVector(UnlearnMethod):
    """Applies the negated task vector once at start (``theta_N`` from ``path.pretrain_network_adapted``); use
    ``total_iter: 0`` (the model saves and validates the result). Has no loss terms: steps change nothing.

    Args:
        scale: ``s``.

    Example:
        >>> TaskVector(scale=1.0).needs.adapted
        True
    """

    needs = Needs(adapted=True)

    def __init__(self, scale: float = 1.0) -> None:
        self.scale = scale

    def setup(self, nets: Nets) -> None:
        """``nets.net <- theta_0 - scale * (theta_N - theta_0)``."""
        negate_task_vector(nets.net, nets.adapted.state_dict(), self.scale)

    def state_dict(self) -> dict:
        """The scale applied at the first start (the resumed weights already hold the vector)."""
        return {'scale': self.scale}

    def load_state_dict(self, state: dict, nets: Nets) -> None:
        """Refuse a resume with another scale than the one applied."""
        if state['scale'] != self.scale:
            raise ValueError(f"scale: the run applied {state['scale']} at its first start; cannot resume it with "
                             f'{self.scale}')

    def losses(self, step: Step) -> dict[str, torch.Tensor]:
        """No terms."""
        return {}
