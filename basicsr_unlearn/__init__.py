"""basicsr-unlearn: accurate forgetting and ASVP anti-distillation for BasicSR restoration models.

Importing this package registers every arch, dataset, loss and model with BasicSR's registries. It must be
imported before anything of ``basicsr``: BasicSR 1.4.2 imports ``torchvision.transforms.functional_tensor``,
a module removed in torchvision 0.17, so the alias below has to exist first.
"""
import sys
import types

__version__ = '0.1.0'  # the one version source (pyproject.toml reads it)


def _alias_functional_tensor() -> None:
    """Expose ``torchvision.transforms.functional_tensor`` (removed in torchvision 0.17) for BasicSR 1.4.2."""
    name = 'torchvision.transforms.functional_tensor'
    if name in sys.modules:
        return
    try:
        import torchvision.transforms.functional_tensor  # noqa: F401  (old torchvision: nothing to do)
    except ImportError:
        from torchvision.transforms import functional

        alias = types.ModuleType(name)
        alias.rgb_to_grayscale = functional.rgb_to_grayscale
        sys.modules[name] = alias


_alias_functional_tensor()

from basicsr_unlearn import archs, attacks, data, defenses, losses, models  # noqa: E402,F401  (registration)
