"""Runtime defences for released networks, built by name from an option block.

A defence is a class registered in :data:`DEFENSE_REGISTRY`; ``build_defense(opt)`` instantiates
``opt['type']`` with the other keys. Every defence offers ``attach(net) -> self`` and ``remove()``.

Example:
    >>> defense = build_defense({'type': 'ASVP', 'targets': ['body.*'], 'k': 4, 'h': 4.0}).attach(net)
    >>> out = net(x)                       # exposed mode: bit-identical output
    >>> defense.exposed_features['body.0']  # what a feature tap sees
    >>> defense.remove()
"""
import inspect

from basicsr.utils.registry import Registry

from basicsr_unlearn.config import check_keys

DEFENSE_REGISTRY = Registry('defense')


def build_defense(opt: dict, where: str = 'asvp'):
    """Instantiate the defence named by ``opt['type']`` with the remaining keys as keyword arguments.

    Args:
        opt: option block, e.g. ``{'type': 'ASVP', 'targets': ['body.3'], 'k': 4, 'h': 4.0}``.
        where: option path of the block, used in error messages.

    Returns:
        The (not yet attached) defence.
    """
    if not isinstance(opt, dict) or 'type' not in opt:
        raise ValueError(f'{where}: expected a mapping with a "type" key, got {opt!r}')
    name = opt['type']
    if name not in DEFENSE_REGISTRY._obj_map:
        names = ', '.join(sorted(DEFENSE_REGISTRY._obj_map))
        raise ValueError(f"{where}.type: unknown '{name}'; expected one of {names}")
    cls = DEFENSE_REGISTRY.get(name)
    kwargs = {k: v for k, v in opt.items() if k != 'type'}
    check_keys(kwargs, [p for p in inspect.signature(cls).parameters if p != 'where'], where)
    return cls(where=where, **kwargs)


from basicsr_unlearn.defenses import asvp  # noqa: E402,F401  (registration)

__all__ = ['DEFENSE_REGISTRY', 'build_defense']
