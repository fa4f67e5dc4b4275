"""Task-vector negation (Ilharco et al. 2023): ``theta = theta_0 - s * (theta_N - theta_0)``."""
import torch
from torch import nn


@torch.no_grad()
def negate_task_vector(net: nn.Module, adapted: dict[str, torch.Tensor], scale: float) -> nn.Module:
    """Move ``net`` (holding ``theta_0``) away from the adapted weights ``theta_N`` by ``scale`` task vectors, in place.

    Args:
        net: the original network (its floating-point parameters and buffers are ``theta_0``).
        adapted: state dict of the same architecture adapted to the forget data (``theta_N``).
        scale: ``s``; 0 keeps ``theta_0``, larger values forget more.

    Returns:
        ``net``.
    """
    state = net.state_dict()
    missing = sorted(set(state) - set(adapted))
    if missing:
        raise KeyError(f'task_vector: the adapted network lacks {len(missing)} keys, e.g. {missing[:3]}')
    for key, value in state.items():
        if value.is_floating_point():
            value.sub_(scale * (adapted[key].to(value) - value))
    return net
