"""Distillation attacks on a (possibly protected) teacher, one registered class per file, chosen by ``distill.type``.

An attack is an ``nn.Module`` (its trainable parts, e.g. tap adapters, train with the student) that names the
``(student module, teacher module)`` feature taps it reads, may transform the teacher taps it observes through the
defence (:meth:`~basicsr_unlearn.attacks.kd.KD.observe`), and turns the student's and the teacher's outputs and taps
into losses (:meth:`~basicsr_unlearn.attacks.kd.KD.losses`). ``DistillModel`` only wires them.

Example:
    >>> attack = build_attack({'type': 'KD', 'output_weight': 1.0})
    >>> attack.tap_pairs
    []
"""
from basicsr.utils.registry import Registry

from basicsr_unlearn.defenses import build_from

ATTACK_REGISTRY = Registry('attack')


def build_attack(opt: dict, where: str = 'distill'):
    """Instantiate the attack named by ``opt['type']`` (``KD`` when absent) with the other keys as arguments."""
    return build_from(ATTACK_REGISTRY, {'type': 'KD', **(opt or {})}, where)


from basicsr_unlearn.attacks import inverse_asvp, kd, low_pass, skeptical, spectrum  # noqa: E402,F401  (registration)

__all__ = ['ATTACK_REGISTRY', 'build_attack']
