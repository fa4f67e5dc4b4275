"""Build a registered class from a YAML block ``{type: Name, **params}``, checking keys and value types first.

The parameters of the class's ``__init__`` (names, defaults and type hints) are the schema: an unknown key, a
missing required one or a value of the wrong type fails at once with the option path and the expected form, so the
launchers can check a whole ``train`` block before any folder is created.

Example:
    >>> from typing import Literal
    >>> from basicsr.utils.registry import Registry
    >>> REG = Registry('example')
    >>> @REG.register()
    ... class Clip:
    ...     def __init__(self, tau: float | Literal['input'] = 0.2, steps: int = 1) -> None:
    ...         self.tau, self.steps = tau, steps
    >>> build(REG, {'type': 'Clip', 'tau': 'input'}, 'train.method').tau
    'input'
    >>> build(REG, {'type': 'Clip', 'tau': 'abc'}, 'train.method')
    Traceback (most recent call last):
    ValueError: train.method.tau: expected a number or 'input'; got 'abc'
"""
import inspect
import types
import typing
from typing import Any, Literal

from basicsr_unlearn.config import check_keys

__all__ = ['build', 'check_value', 'construct', 'describe']


def describe(hint: Any) -> str:
    """Readable form of a type hint, e.g. ``float | Literal['input']`` -> ``"a number or 'input'"``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return ' or '.join(describe(a) for a in args)
    if origin is Literal:
        return ' or '.join(repr(a) for a in args)
    if origin in (list, tuple):
        return f'a list of {describe(args[0])}' if args else 'a list'
    return {float: 'a number', int: 'an integer', bool: 'true or false', str: 'a string', dict: 'a mapping',
            type(None): 'null (~)'}.get(hint, getattr(hint, '__name__', str(hint)))


def check_value(value: Any, hint: Any) -> bool:
    """Whether ``value`` (as YAML loads it) fits the type hint ``hint`` (an int fits ``float``; a bool fits only
    ``bool``)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(check_value(value, a) for a in args)
    if origin is Literal:
        return value in args
    if origin in (list, tuple):
        return isinstance(value, list | tuple) and all(check_value(v, args[0]) for v in value) if args else True
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def construct(cls: type, params: dict, where: str) -> Any:
    """``cls(**params)`` after checking ``params`` against ``cls.__init__``'s signature and type hints.

    Raises:
        ValueError: unknown or missing key, a value of the wrong type, or a value ``cls`` itself rejects, each
            naming ``where`` (e.g. ``'train.guard'``); ``cls`` names a rejected parameter as ``'<name>: ...'``.
        FileNotFoundError: a file ``cls`` needs is missing (same naming).
    """
    signature = inspect.signature(cls)
    check_keys(params, signature.parameters, where)
    hints = typing.get_type_hints(cls.__init__)
    for key, parameter in signature.parameters.items():
        if key not in params:
            if parameter.default is inspect.Parameter.empty:
                raise ValueError(f'{where}.{key}: required ({describe(hints.get(key, Any))})')
            continue
        if not check_value(params[key], hints.get(key, Any)):
            raise ValueError(f'{where}.{key}: expected {describe(hints[key])}; got {params[key]!r}')
    try:
        return cls(**params)
    except (ValueError, FileNotFoundError) as err:  # 'tau: ...' (a parameter of cls) -> 'train.method.tau: ...'
        own = str(err).split(':', 1)[0] in signature.parameters
        raise type(err)(f"{where}{'.' if own else ': '}{err}") from err


def build(registry: Any, block: Any, where: str) -> Any:
    """Instantiate ``block['type']`` from ``registry`` with the other keys (checked by :func:`construct`).

    Args:
        registry: a BasicSR ``Registry`` (e.g. ``METHOD_REGISTRY``).
        block: the YAML block, ``{type: Name, **params}``.
        where: option path of the block, used in every error (e.g. ``'train.method'``).

    Raises:
        ValueError: not a mapping, unknown ``type`` (listing the registered names), or any error of
            :func:`construct`.
    """
    names = ', '.join(sorted(registry.keys()))
    if not isinstance(block, dict) or 'type' not in block:
        raise ValueError(f'{where}: expected a mapping with a "type" key (one of {names}); got {block!r}')
    if block['type'] not in registry:
        raise ValueError(f"{where}.type: unknown '{block['type']}'; expected one of {names}")
    return construct(registry.get(block['type']), {k: v for k, v in block.items() if k != 'type'}, where)
