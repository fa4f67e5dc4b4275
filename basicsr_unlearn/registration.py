"""Registration by import, as BasicSR does: each subpackage imports its own ``*_<suffix>.py`` modules."""
import importlib
import pkgutil


def import_modules(package: str, path: list[str], suffix: str) -> list[str]:
    """Import every module of ``package`` whose name ends with ``suffix`` (e.g. ``'_arch'``); returns their names.

    Args:
        package: dotted package name, e.g. ``'basicsr_unlearn.archs'`` (pass ``__name__``).
        path: the package's ``__path__``.
        suffix: module-name suffix that marks a registering module.

    Example:
        >>> from basicsr_unlearn import archs
        >>> 'promptir_arch' in import_modules(archs.__name__, archs.__path__, '_arch')
        True
    """
    names = sorted(m.name for m in pkgutil.iter_modules(path) if m.name.endswith(suffix))
    for name in names:
        importlib.import_module(f'{package}.{name}')
    return names
