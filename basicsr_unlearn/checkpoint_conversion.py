"""Official PromptIR / AdaIR / Restormer checkpoints to BasicSR ``{'params': state_dict}`` files.

The official PromptIR and AdaIR releases are Lightning ``.ckpt`` files: ``{'state_dict': {'net.<key>': tensor}, ...}``
(the training module holds the arch as ``self.net``), alongside Lightning's bookkeeping (``epoch``, ``loops``,
``callbacks``, ``optimizer_states``, ...). Restormer's are BasicSR ``{'params': ...}`` files. :func:`convert` reads
either with ``torch.load(weights_only=True)`` (only the globals named in ``allow_globals`` are allow-listed, never a
full unpickle), takes the state dict, strips ``net.`` / ``module.``, drops the layers the reference builds but never
calls (:data:`UNUSED_IN_FORWARD`), and checks every key and shape against the target arch: the result loads with
``strict_load_g: true``.

Example:
    >>> import torch
    >>> from basicsr_unlearn.archs.restormer_arch import Restormer
    >>> net = Restormer(dim=8, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1, heads=(1, 1, 2, 2))
    >>> official = {'state_dict': {f'net.{k}': v for k, v in net.state_dict().items()}, 'epoch': 3}
    >>> params, report = convert_loaded(official, net, 'model.ckpt')
    >>> len(params) == len(net.state_dict()), report.dropped
    (True, [])
"""
import importlib
import pickle
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from os import PathLike

import torch
from torch import Tensor, nn

# layers the reference code builds but never calls in forward, as key patterns of the stripped state dict
UNUSED_IN_FORWARD: dict[str, tuple[str, ...]] = {
    'PromptIR': (r'chnl_reduce[123]\.', r'reduce_noise_channel_[123]\.'),
    'AdaIR': (r'fre[123]\.conv\.', r'fre[123]\.score_gen\.'),
    'Restormer': (),
}
PREFIXES = ('net.', 'module.')  # Lightning's attribute name, DataParallel/DDP wrappers
SHOWN = 5  # mismatching keys named per kind in an error
ALLOW_FLAG = '--allow-global'


class CheckpointConversionError(ValueError):
    """The file cannot become a checkpoint of the target arch; the message names the file and the first problems."""


@dataclass
class ConversionReport:
    """What :func:`convert` changed: stripped prefixes, dropped keys, reshaped or cast tensors, ignored entries."""

    source_entry: str = ''
    stripped: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    reshaped: list[str] = field(default_factory=list)
    cast: list[str] = field(default_factory=list)
    ignored_entries: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        """Human summary, one line per kind of change."""
        out = [f'state dict: {self.source_entry}']
        if self.ignored_entries:
            out.append(f'ignored (not weights): {", ".join(self.ignored_entries)}')
        if self.stripped:
            out.append(f'stripped key prefix: {", ".join(self.stripped)}')
        out.append(f'dropped {len(self.dropped)} tensors never used in forward' +
                   (f': {", ".join(self.dropped)}' if self.dropped else ''))
        out.append(f'reshaped {len(self.reshaped)}' + (f': {", ".join(self.reshaped)}' if self.reshaped else ''))
        if self.cast:
            out.append(f'cast to the arch dtype: {", ".join(self.cast)}')
        return out


def _resolve(name: str) -> object:
    """``'argparse.Namespace'`` -> the object, for ``torch.serialization.safe_globals``."""
    module, _, attr = name.rpartition('.')
    if not module:
        raise CheckpointConversionError(f'{ALLOW_FLAG} {name}: expected a dotted name such as argparse.Namespace')
    try:
        obj = importlib.import_module(module)
        for part in attr.split('.'):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as err:
        raise CheckpointConversionError(f'{ALLOW_FLAG} {name}: cannot import it ({err})') from err
    return obj


def read_official(path: str | PathLike, allow_globals: Iterable[str] = ()) -> object:
    """``torch.load(path, weights_only=True)`` with exactly the globals in ``allow_globals`` allow-listed.

    Raises:
        CheckpointConversionError: the file needs a global that is not allow-listed (the message names it and the
            ``--allow-global`` flag that would allow exactly it), or is not a torch file.
    """
    allowed = [_resolve(name) for name in allow_globals]
    try:
        with torch.serialization.safe_globals(allowed):
            return torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r'GLOBAL (\S+)', str(err))
        if not found:
            raise CheckpointConversionError(f'{path}: not a torch checkpoint ({err})') from err
        name = found.group(1)
        raise CheckpointConversionError(
            f'{path}: holds a pickled {name}, more than tensors and plain types, so weights_only=True refuses it. '
            f'If you trust the file, rerun with {ALLOW_FLAG} {name} (allow-lists exactly that name; repeat the flag '
            f'for each further name)') from err
    except (RuntimeError, EOFError, OSError) as err:
        raise CheckpointConversionError(f'{path}: cannot read it as a torch file ({err})') from err


def _state_dict(loaded: object, path: str | PathLike, report: ConversionReport) -> dict[str, Tensor]:
    """The tensors of a Lightning (``state_dict``), BasicSR (``params``/``params_ema``) or bare state-dict file."""
    if not isinstance(loaded, dict):
        raise CheckpointConversionError(f'{path}: expected a dict, got {type(loaded).__name__}')
    for entry in ('state_dict', 'params', 'params_ema'):
        if isinstance(loaded.get(entry), dict):
            report.source_entry = f"['{entry}']"
            report.ignored_entries = sorted(str(k) for k in loaded if k != entry)
            state = loaded[entry]
            break
    else:
        report.source_entry = '(file root)'
        state = loaded
    bad = [str(k) for k, v in state.items() if not isinstance(v, Tensor)]
    if bad:
        raise CheckpointConversionError(f'{path}{report.source_entry}: not a state dict of tensors (e.g. {bad[0]}); '
                                        f"expected a Lightning 'state_dict', a BasicSR 'params' entry or bare tensors")
    for prefix in PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k.removeprefix(prefix): v for k, v in state.items()}
            report.stripped.append(prefix)
    return dict(state)


def _examples(keys: list[str]) -> str:
    return ', '.join(keys[:SHOWN]) + (f', ... ({len(keys)} in all)' if len(keys) > SHOWN else '')


def convert_loaded(loaded: object, net: nn.Module, path: str | PathLike = 'checkpoint',
                   arch: str | None = None) -> tuple[dict[str, Tensor], ConversionReport]:
    """Map a loaded official checkpoint onto ``net``'s state dict.

    Args:
        loaded: what :func:`read_official` returned.
        net: the target network (its keys, shapes and dtypes are the contract).
        path: file name for messages.
        arch: registered arch name selecting :data:`UNUSED_IN_FORWARD` (default: ``type(net).__name__``).

    Returns:
        ``(params, report)``: a state dict that ``net.load_state_dict(params, strict=True)`` accepts, and what was
        changed. Tensors whose shapes differ only by size-1 axes (e.g. a Linear weight and a 1x1 conv weight) are
        reshaped and reported.

    Raises:
        CheckpointConversionError: keys missing from or unexpected in the file, or shapes that cannot be reshaped;
            the message names the first of each kind.
    """
    report = ConversionReport()
    state = _state_dict(loaded, path, report)
    unused = [re.compile(p) for p in UNUSED_IN_FORWARD.get(arch or type(net).__name__, ())]
    target = net.state_dict()
    report.dropped = sorted(k for k in state if k not in target and any(p.match(k) for p in unused))
    state = {k: v for k, v in state.items() if k not in report.dropped}
    missing = [k for k in target if k not in state]
    unexpected = [k for k in state if k not in target]
    shapes = []
    params = {}
    for key, want in target.items():
        got = state.get(key)
        if got is None:
            continue
        if got.shape != want.shape:
            if got.numel() != want.numel() or [s for s in got.shape if s != 1] != [s for s in want.shape if s != 1]:
                shapes.append(f'{key}: file {tuple(got.shape)}, arch {tuple(want.shape)}')
                continue
            report.reshaped.append(f'{key} {tuple(got.shape)} -> {tuple(want.shape)}')
            got = got.reshape(want.shape)
        if got.dtype != want.dtype:
            report.cast.append(f'{key} {str(got.dtype).removeprefix("torch.")}')
            got = got.to(want.dtype)
        params[key] = got.contiguous()
    if missing or unexpected or shapes:
        parts = [f'{name} {len(keys)}: {_examples(keys)}' for name, keys in
                 (('missing from the file', missing), ('not in the arch', unexpected), ('shape mismatches', shapes))
                 if keys]
        raise CheckpointConversionError(f'{path}{report.source_entry} does not match {type(net).__name__} '
                                        f'({len(target)} tensors): ' + '; '.join(parts) +
                                        '. Check the arch options (network_g) against the checkpoint.')
    net.load_state_dict(params, strict=True)  # the contract: strict_load_g: true accepts it
    return params, report
