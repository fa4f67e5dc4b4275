"""The one vocabulary of degradation names shared by datasets, models, metrics and reports.

Ids follow PromptIR/AdaIR (``denoise_15:0 ... dehaze:4, deblur:5, enhance:6``) so labels stay comparable.

Example:
    >>> de_type('haze')
    4
    >>> check_name('hazy', 'datasets.train.sources[2].degradation')
    Traceback (most recent call last):
    ValueError: datasets.train.sources[2].degradation: unknown 'hazy'; expected one of noise15, ...
"""
DEGRADATIONS: dict[str, int] = {
    'noise15': 0,
    'noise25': 1,
    'noise50': 2,
    'rain': 3,
    'haze': 4,
    'blur': 5,
    'lowlight': 6,
}


def register_name(name: str, type_id: int | None = None) -> int:
    """Add a degradation name (e.g. ``'snow'``) to the vocabulary; returns its integer id."""
    if name in DEGRADATIONS:
        raise ValueError(f'degradation name {name!r} is already registered (id {DEGRADATIONS[name]})')
    DEGRADATIONS[name] = max(DEGRADATIONS.values()) + 1 if type_id is None else type_id
    return DEGRADATIONS[name]


def check_name(name: object, where: str = 'degradation') -> str:
    """Return ``name`` if it is a known degradation, else raise naming the option path ``where``."""
    if name not in DEGRADATIONS:
        raise ValueError(f'{where}: unknown {name!r}; expected one of {", ".join(DEGRADATIONS)}')
    return name


def de_type(name: str, where: str = 'degradation') -> int:
    """Integer id of a degradation name (PromptIR's numbering)."""
    return DEGRADATIONS[check_name(name, where)]
