"""Per-image and per-degradation metrics of a restoration function over a dataloader, distributed-aware.

Metrics are BasicSR's ``val.metrics`` blocks, ``{name: {type, **kwargs}}``, computed through BasicSR's
``METRIC_REGISTRY`` (``basicsr.metrics.calculate_metric``) on uint8 HWC BGR images as ``SRModel`` does, so an
existing BasicSR YAML drops in and any registered metric (``calculate_niqe``, or one a plugin registers) can be
named. Without a block: PSNR and SSIM on RGB, the convention of the all-in-one papers (Y channel with
``y_channel=True``). The mean absolute error in [0, 1] (``l1``) is always measured (membership inference uses it).
Non-finite outputs are refused: their 8-bit conversion would turn NaN into black and score a finite PSNR.
Under a process group each rank restores its share (that of the loader's own sharding sampler, e.g. the interleaved
``rank, rank + world_size, ...`` of a ``DistributedSampler``, else every ``world_size``-th image) and the results are
gathered on all ranks, in dataset order, each image once; a refusal on one rank is raised on every rank.

Example:
    >>> from torch.utils.data import DataLoader
    >>> gt = torch.full((2, 3, 16, 16), 0.5)
    >>> pairs = [{'lq': g, 'gt': g, 'lq_path': f'{i}.png', 'de_name': 'rain'} for i, g in enumerate(gt)]
    >>> result = evaluate(lambda lq: lq + 0.01, DataLoader(pairs, batch_size=2))  # 128 -> 130 in 8 bit
    >>> round(result['per_degradation']['rain']['psnr'], 2), result['per_degradation']['rain']['count']
    (42.11, 2)
"""
import inspect
import math
from collections.abc import Callable
from os import path as osp

import torch
from basicsr.metrics import calculate_metric
from basicsr.utils import imwrite, tensor2img
from basicsr.utils.registry import METRIC_REGISTRY
from mmengine.dist import all_gather_object, get_dist_info
from torch.utils.data import DataLoader, SequentialSampler, Subset

RESERVED_NAMES = ('name', 'de_name', 'dataset', 'l1', 'count', 'index')  # keys of the per-image records
METRIC_INPUTS = ('img', 'img2')  # what calculate_metric passes besides a block's keys


def default_metrics(y_channel: bool = False, crop_border: int = 0) -> dict[str, dict]:
    """The metric blocks used when none is given: BasicSR's PSNR and SSIM.

    Example:
        >>> default_metrics(y_channel=True)['psnr']
        {'type': 'calculate_psnr', 'crop_border': 0, 'test_y_channel': True}
    """
    return {name: {'type': f'calculate_{name}', 'crop_border': crop_border, 'test_y_channel': y_channel}
            for name in ('psnr', 'ssim')}


def metric_specs(val_opt: dict | None) -> dict[str, dict]:
    """The metric blocks of a ``val`` option block: ``val.metrics``, else :func:`default_metrics` of
    ``val.test_y_channel`` and ``val.crop_border``."""
    val_opt = val_opt or {}
    if val_opt.get('metrics'):
        return dict(val_opt['metrics'])
    return default_metrics(bool(val_opt.get('test_y_channel', False)), int(val_opt.get('crop_border', 0)))


def metric_space(specs: dict[str, dict]) -> str:
    """``'Y'`` or ``'RGB'`` when every block with a ``test_y_channel`` key agrees (``'RGB'`` if none has one), else
    ``'mixed'``.

    Example:
        >>> metric_space(default_metrics()), metric_space(default_metrics(y_channel=True))
        ('RGB', 'Y')
    """
    spaces = {'Y' if spec['test_y_channel'] else 'RGB' for spec in specs.values() if 'test_y_channel' in spec}
    if len(spaces) > 1:
        return 'mixed'
    return spaces.pop() if spaces else 'RGB'


def check_metric_specs(metrics: object, where: str = 'val.metrics') -> None:
    """Raise on a metric block BasicSR would reject only while validating: unknown ``type`` (listing the registered
    metrics), a missing required argument, an unknown argument, a reserved name or a bad ``better``.

    Example:
        >>> check_metric_specs({'psnr': {'type': 'calculate_psnrr', 'crop_border': 0}})
        Traceback (most recent call last):
        ValueError: val.metrics.psnr.type: unknown 'calculate_psnrr'; expected one of ...
    """
    if not isinstance(metrics, dict) or not metrics:
        raise ValueError(f'{where}: expected a mapping {{name: {{type: calculate_psnr, crop_border: 0, ...}}}}, '
                         f'got {metrics!r}')
    registered = METRIC_REGISTRY._obj_map
    for name, spec in metrics.items():
        if name in RESERVED_NAMES:
            raise ValueError(f"{where}.{name}: '{name}' is reserved for the per-image records; choose another name")
        if not isinstance(spec, dict) or 'type' not in spec:
            raise ValueError(f'{where}.{name}: expected a mapping with a type, e.g. {{type: calculate_psnr, '
                             f'crop_border: 0}}, got {spec!r}')
        if spec['type'] not in registered:
            raise ValueError(f"{where}.{name}.type: unknown '{spec['type']}'; expected one of "
                             f"{', '.join(sorted(registered))}")
        if spec.get('better', 'higher') not in ('higher', 'lower'):
            raise ValueError(f"{where}.{name}.better: expected 'higher' or 'lower', got {spec['better']!r}")
        params = inspect.signature(registered[spec['type']]).parameters
        required = [p for p, v in params.items() if v.default is v.empty and p not in METRIC_INPUTS
                    and v.kind in (v.POSITIONAL_OR_KEYWORD, v.KEYWORD_ONLY)]
        missing = [p for p in required if p not in spec]
        if missing:
            raise ValueError(f"{where}.{name}: {spec['type']} needs {', '.join(missing)} "
                             f"(arguments: {', '.join(p for p in params if p not in METRIC_INPUTS)})")
        if not any(v.kind == v.VAR_KEYWORD for v in params.values()):
            unknown = [k for k in spec if k not in ('type', 'better') and k not in params]
            if unknown:
                raise ValueError(f"{where}.{name}: {spec['type']} takes no argument {', '.join(unknown)}")


def summarize(per_image: list[dict]) -> dict[str, dict[str, float]]:
    """Mean of every numeric entry (each metric and ``l1``) of per-image records, per ``de_name``.

    Returns:
        ``{de_name: {<metric>: mean, ..., 'l1': mean, 'count': n}}``.

    Example:
        >>> summarize([{'de_name': 'rain', 'psnr': 30.0}, {'de_name': 'rain', 'psnr': 32.0}])
        {'rain': {'psnr': 31.0, 'count': 2}}
    """
    groups: dict[str, list[dict]] = {}
    for record in per_image:
        groups.setdefault(record['de_name'], []).append(record)
    summary = {}
    for name, records in groups.items():
        keys = [k for k, v in records[0].items() if isinstance(v, int | float) and not isinstance(v, bool)]
        summary[name] = {k: sum(r[k] for r in records) / len(records) for k in keys}
        summary[name]['count'] = len(records)
    return summary


def _shard(dataloader: DataLoader, rank: int, world_size: int) -> tuple[DataLoader, list[int]]:
    """This rank's loader and the dataset index of each image it yields, in order.

    A sampler that shards by itself (it has ``num_replicas``: torch's ``DistributedSampler``, BasicSR's
    ``EnlargedSampler``; both yield the same order on every pass) is kept and its order read; otherwise this rank
    takes every ``world_size``-th image, in dataset order.
    """
    if hasattr(dataloader.sampler, 'num_replicas'):
        return dataloader, list(iter(dataloader.sampler))
    indices = list(range(len(dataloader.dataset)))[rank::world_size]
    if world_size == 1 and isinstance(dataloader.sampler, SequentialSampler):
        return dataloader, indices
    loader = DataLoader(
        Subset(dataloader.dataset, indices),
        batch_size=dataloader.batch_size,
        num_workers=dataloader.num_workers,
        collate_fn=dataloader.collate_fn)
    return loader, indices


def check_finite(output: torch.Tensor, lq_paths: list[str], source: str) -> None:
    """Raise if an image of ``output`` ``(B, C, H, W)`` holds NaN or inf, naming ``source`` and its ``lq_path``."""
    finite = torch.isfinite(output).flatten(1).all(1)
    if not finite.all():
        i = int((~finite).nonzero()[0])
        bad = int((~torch.isfinite(output[i])).sum())
        raise ValueError(f'{source}: non-finite output for {lq_paths[i]} ({bad} of {output[i].numel()} values are '
                         'NaN/inf); refusing to score it (the weights or the input are broken)')


def _score(images: dict, metric: str, spec: dict, source: str, lq_path: str) -> float:
    """``calculate_metric`` of one image pair; a NaN (e.g. SSIM on an image smaller than its window) is an error."""
    value = float(calculate_metric(images, spec))
    if math.isnan(value):
        h, w = images['img'].shape[:2]
        raise ValueError(f"{source}: metric {metric} ({spec['type']}) gave nan for {lq_path} ({h}x{w} px, options "
                         f'{ {k: v for k, v in spec.items() if k != "type"} })')
    return value


def _score_batch(restore: Callable[[torch.Tensor], torch.Tensor], batch: dict, indices: list[int],
                 specs: dict[str, dict], source: str, default_group: str, save_dir: str | None,
                 save_suffix: str | None) -> list[dict]:
    """Restore one batch and return its per-image records (``indices``: the dataset index of each, in order)."""
    output = restore(batch['lq']).detach().float().cpu()
    check_finite(output, batch['lq_path'], source)
    output.clamp_(0, 1)
    gt = batch['gt'].float()
    records = []
    for i in range(output.shape[0]):
        name = osp.splitext(osp.basename(batch['lq_path'][i]))[0]
        images = {'img': tensor2img(output[i]), 'img2': tensor2img(gt[i])}
        records.append({
            'index': indices[i],
            'name': name,
            'de_name': batch['de_name'][i] if 'de_name' in batch else default_group,
            **{metric: _score(images, metric, spec, source, batch['lq_path'][i]) for metric, spec in specs.items()},
            'l1': float((output[i] - gt[i]).abs().mean()),
        })
        if save_dir is not None:
            file_name = f'{name}_{save_suffix}.png' if save_suffix else f'{name}.png'
            imwrite(images['img'], osp.join(save_dir, file_name))
    return records


@torch.no_grad()
def evaluate(restore: Callable[[torch.Tensor], torch.Tensor],
             dataloader: DataLoader,
             y_channel: bool = False,
             crop_border: int = 0,
             save_dir: str | None = None,
             save_suffix: str | None = None,
             metrics: dict[str, dict] | None = None,
             source: str | None = None) -> dict:
    """Restore every image of ``dataloader`` and measure it against its ``gt``.

    Args:
        restore: maps ``lq`` ``(B, 3, H, W)`` in [0, 1] to the restored ``(B, 3, H, W)``.
        dataloader: yields the batch dict of the shared contract (``lq``, ``gt``, ``lq_path``, ``de_name``);
            without ``de_name`` the dataset's ``opt['name']`` is used as the group.
        y_channel: default PSNR/SSIM on the Y channel instead of RGB (ignored with ``metrics``).
        crop_border: pixels cropped from each border by the default PSNR/SSIM (ignored with ``metrics``).
        save_dir: if given, restored images are written there as ``<name>[_<save_suffix>].png``.
        save_suffix: suffix of saved image names.
        metrics: BasicSR ``val.metrics`` blocks (see :func:`check_metric_specs`); default
            :func:`default_metrics` of ``y_channel`` and ``crop_border``.
        source: what produced the outputs (e.g. ``'model haze_ga'``), named in errors; default ``restore``'s name.

    Returns:
        ``{'per_image': [{'name', 'de_name', <metric>..., 'l1'}, ...] (dataset order),
        'per_degradation': {de_name: {<metric>..., 'l1', 'count'}}}``, identical on every rank.

    Raises:
        ValueError: an output holds NaN or inf, or a metric gives NaN (naming ``source`` and the image's
            ``lq_path``), on every rank under a process group (the lowest failing rank's message). An infinite
            PSNR (output equal to ``gt``) is kept. Any other failure on one rank is re-raised there and raised as
            a ``RuntimeError`` naming that rank on the others, so no rank waits in the gather.
    """
    specs = metrics or default_metrics(y_channel, crop_border)
    source = source or getattr(restore, '__qualname__', 'restore')
    rank, world_size = get_dist_info()
    loader, indices = _shard(dataloader, rank, world_size)
    default_group = getattr(dataloader.dataset, 'opt', {}).get('name', 'all')
    records, error = [], None
    try:
        for batch in loader:
            records += _score_batch(restore, batch, indices[len(records):], specs, source, default_group, save_dir,
                                    save_suffix)
    except Exception as err:  # a refusal (or any failure): every rank must learn of it before anyone raises
        error = err
    if world_size > 1:
        failure = None if error is None else (type(error).__name__, str(error))
        parts = all_gather_object((failure, records))
        failed = [r for r, (fail, _) in enumerate(parts) if fail is not None]
        if failed and failed[0] != rank:
            kind, message = parts[failed[0]][0]
            raise ValueError(message) if kind == 'ValueError' else RuntimeError(f'rank {failed[0]}: {kind}: {message}')
        records = [r for _, part in parts for r in part]
    if error is not None:
        raise error
    unique = {r['index']: r for r in records}  # a DistributedSampler repeats images to even out its shards
    per_image = [{k: v for k, v in unique[i].items() if k != 'index'} for i in sorted(unique)]
    return {'per_image': per_image, 'per_degradation': summarize(per_image)}
