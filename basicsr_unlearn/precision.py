"""Mixed precision and ``channels_last`` for training steps: ``train: {amp: {dtype: bf16|fp16}, channels_last: true}``.

``amp.dtype`` runs the forward pass and the losses under ``torch.autocast`` in that dtype; ``fp16`` adds a
``torch.amp.GradScaler`` (loss scaled before backward, gradients unscaled before anything reads them, a step with
inf/NaN gradients skipped), ``bf16`` needs none. ``channels_last`` stores the network's 4-D weights and each input
batch in NHWC order. Both are off when absent.

Both are CUDA options: a model on the CPU ignores them with one log line and trains in fp32, contiguous. bf16
autocast does run on the CPU, but it is slower than fp32 there unless the CPU has bf16 units, it changes the numbers,
and the same YAML (``num_gpu: auto``) is meant to give the fp32 reference run on a CPU and the fast run on a GPU.
:class:`Precision` itself accepts any device type, so tests can exercise the scaler and autocast on the CPU.

A training step with it (what ``AllInOneModel.optimize_parameters`` does)::

    with self.precision.autocast():
        l_total = loss(self.net_g(self.lq), self.gt)
    self.precision.backward(l_total, self.optimizer_g)  # gradients are unscaled from here on
    self.precision.step(self.optimizer_g)

Example:
    >>> net = torch.nn.Conv2d(3, 3, 1)
    >>> opt = torch.optim.SGD(net.parameters(), lr=0.1)
    >>> precision = Precision('fp16', device_type='cpu')
    >>> with precision.autocast():
    ...     loss = net(torch.ones(1, 3, 2, 2)).abs().mean()
    >>> loss.dtype
    torch.float16
    >>> precision.backward(loss, opt); precision.step(opt)
    >>> check_precision_options({'amp': {'dtype': 'fp32'}})
    Traceback (most recent call last):
    ValueError: train.amp.dtype: unknown 'fp32'; expected one of bf16, fp16 (or no train.amp block for fp32)
"""
import itertools
from contextlib import AbstractContextManager

import torch
from basicsr.utils import get_root_logger
from torch import nn

from basicsr_unlearn.config import check_keys

AMP_DTYPES = {'bf16': torch.bfloat16, 'fp16': torch.float16}
PRECISION_KEYS = ('amp', 'channels_last')  # the train keys read here (models that check train keys allow them)


def check_precision_options(train: dict, where: str = 'train') -> None:
    """Raise unless ``train.amp`` is absent, ``~`` or ``{dtype: bf16|fp16}`` and ``train.channels_last`` a bool.

    Args:
        train: the ``train`` option block.
        where: its option path, for messages.
    """
    amp = train.get('amp')
    if amp is not None:
        if not isinstance(amp, dict):
            raise ValueError(f'{where}.amp: expected a block {{dtype: bf16}} or {{dtype: fp16}}, got {amp!r}')
        check_keys(amp, ('dtype',), f'{where}.amp')
        if amp.get('dtype') not in AMP_DTYPES:
            raise ValueError(f"{where}.amp.dtype: unknown {amp.get('dtype')!r}; expected one of "
                             f"{', '.join(AMP_DTYPES)} (or no {where}.amp block for fp32)")
    channels_last = train.get('channels_last', False)
    if not isinstance(channels_last, bool):
        raise ValueError(f'{where}.channels_last: expected true or false, got {channels_last!r}')


class Precision:
    """Autocast, loss scaling and memory format of one model's training steps.

    Args:
        dtype: ``'bf16'``, ``'fp16'`` (with a grad scaler) or ``None`` (fp32, every method a plain pass-through).
        channels_last: convert the network and the inputs to ``torch.channels_last``.
        device_type: where the step runs (``'cuda'``, or ``'cpu'`` in tests).
    """

    def __init__(self, dtype: str | None = None, channels_last: bool = False, device_type: str = 'cuda') -> None:
        self.device_type = device_type
        self.dtype = AMP_DTYPES[dtype] if dtype is not None else None
        self.channels_last = channels_last
        self.scaler = torch.amp.GradScaler(device_type) if dtype == 'fp16' else None

    @classmethod
    def from_options(cls, train: dict | None, device: torch.device) -> 'Precision':
        """The ``train.amp`` / ``train.channels_last`` settings on ``device``; ignored with a log line off CUDA."""
        train = train or {}
        dtype = (train.get('amp') or {}).get('dtype')
        channels_last = bool(train.get('channels_last', False))
        if device.type != 'cuda':
            if dtype is not None or channels_last:
                get_root_logger().info(f'train.amp / train.channels_last: ignored on the {device.type} (CUDA only); '
                                       'training in fp32 with contiguous tensors')
            return cls(device_type=device.type)
        if dtype == 'bf16' and not torch.cuda.is_bf16_supported():
            raise ValueError('train.amp.dtype: bf16 needs a GPU with bfloat16 support (Ampere or newer); '
                             'use fp16 on this GPU')
        return cls(dtype, channels_last, device.type)

    def autocast(self) -> AbstractContextManager:
        """Context for the forward pass and the losses (a no-op without ``dtype``)."""
        return torch.autocast(self.device_type, dtype=self.dtype, enabled=self.dtype is not None)

    def to_memory_format(self, x: nn.Module | torch.Tensor) -> nn.Module | torch.Tensor:
        """``x`` (a network, or an input batch ``(B, C, H, W)``) in channels_last when enabled, else ``x`` itself.

        A network keeps its other tensors as they are (``Module.to(memory_format=...)`` would fail on PromptIR's 5-D
        prompt parameters); only the 4-D parameters and buffers (conv weights) change layout, in place.
        """
        if not self.channels_last:
            return x
        if isinstance(x, torch.Tensor):
            return x.contiguous(memory_format=torch.channels_last)
        for tensor in itertools.chain(x.parameters(), x.buffers()):
            if tensor.dim() == 4:
                tensor.data = tensor.data.contiguous(memory_format=torch.channels_last)
        return x

    def backward(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        """``loss.backward()``; with a scaler the scaled loss, then the gradients of ``optimizer`` unscaled, so code
        between this and :meth:`step` (gradient clipping, masks, projections) sees true gradients."""
        if self.scaler is None:
            loss.backward()
            return
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(optimizer)

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """``optimizer.step()``; with a scaler skipped when a gradient is inf/NaN, and the scale updated."""
        if self.scaler is None:
            optimizer.step()
            return
        self.scaler.step(optimizer)
        self.scaler.update()

    def state_dict(self) -> dict:
        """The scaler's state (plain numbers, for the training state), ``{}`` without a scaler."""
        return self.scaler.state_dict() if self.scaler is not None else {}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` (ignored without a scaler or when ``state`` is empty)."""
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)
