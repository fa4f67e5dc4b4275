"""Runtime defences for released networks, built by name from an option block.

A defence is a class registered in :data:`DEFENSE_REGISTRY`; ``build_defense(opt)`` instantiates
``opt['type']`` with the other keys. Every defence offers ``attach(net) -> self`` and ``remove()``.

Example:
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 3, 3, padding=1))
    >>> defense = build_defense({'type': 'ASVP', 'targets': ['0'], 'k': 2, 'h': 4.0}).attach(net)
    >>> defense
    ASVP(targets=['0'], k=2, h=4.0, layout=channel_space, mode=exposed)
    >>> defense.remove()
"""
import inspect

from basicsr.utils.registry import Registry

from basicsr_unlearn.config import check_keys

DEFENSE_REGISTRY = Registry('defense')


def build_from(registry: Registry, opt: dict, where: str):
    """Instantiate ``registry``'s class named by ``opt['type']`` with the other keys (checked against its signature).

    Args:
        registry: a BasicSR :class:`Registry` (defences, attacks).
        opt: option block with a ``type`` key.
        where: option path of the block, used in error messages (and passed as the class's ``where``).

    Returns:
        The instance.
    """
    if not isinstance(opt, dict) or 'type' not in opt:
        raise ValueError(f'{where}: expected a mapping with a "type" key, got {opt!r}')
    name = opt['type']
    if name not in registry._obj_map:
        names = ', '.join(sorted(registry._obj_map))
        raise ValueError(f"{where}.type: unknown '{name}'; expected one of {names}")
    cls = registry.get(name)
    kwargs = {k: v for k, v in opt.items() if k != 'type'}
    check_keys(kwargs, [p for p in inspect.signature(cls).parameters if p != 'where'], where)
    return cls(where=where, **kwargs)


def build_defense(opt: dict, where: str = 'asvp'):
    """Instantiate the defence named by ``opt['type']`` with the remaining keys as keyword arguments.

    Args:
        opt: option block, e.g. ``{'type': 'ASVP', 'targets': ['body.3'], 'k': 4, 'h': 4.0}``.
        where: option path of the block, used in error messages.

    Returns:
        The (not yet attached) defence.
    """
    return build_from(DEFENSE_REGISTRY, opt, where)


from basicsr_unlearn.defenses import asvp  # noqa: E402,F401  (registration)

__all__ = ['DEFENSE_REGISTRY', 'build_defense', 'build_from']
