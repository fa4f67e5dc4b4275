"""Per-image and per-degradation PSNR/SSIM/L1 of a restoration function over a dataloader, distributed-aware.

PSNR and SSIM are BasicSR's ``calculate_psnr`` / ``calculate_ssim`` on uint8 images (RGB by default, the
convention of the all-in-one papers; Y channel with ``y_channel=True``). Under a process group each rank restores
every ``world_size``-th image and the results are gathered on all ranks, in dataset order.

Example:
    >>> result = evaluate(model.restore, val_loader)
    >>> result['per_degradation']['rain']['psnr']
    31.2
"""
from collections.abc import Callable
from os import path as osp

import torch
from basicsr.metrics import calculate_psnr, calculate_ssim
from basicsr.utils import imwrite, tensor2img
from mmengine.dist import all_gather_object, get_dist_info
from torch.utils.data import DataLoader, DistributedSampler, Subset


def summarize(per_image: list[dict]) -> dict[str, dict[str, float]]:
    """Mean PSNR/SSIM (and L1) per ``de_name`` of per-image records: ``{de_name: {'psnr', 'ssim', 'l1', 'count'}}``."""
    groups: dict[str, list[dict]] = {}
    for record in per_image:
        groups.setdefault(record['de_name'], []).append(record)
    return {
        name: {
            'psnr': sum(r['psnr'] for r in records) / len(records),
            'ssim': sum(r['ssim'] for r in records) / len(records),
            'l1': sum(r['l1'] for r in records) / len(records),
            'count': len(records),
        }
        for name, records in groups.items()
    }


def _shard(dataloader: DataLoader, rank: int, world_size: int) -> tuple[DataLoader, list[int]]:
    """This rank's share of the dataset (every ``world_size``-th index) and the dataset indices it holds."""
    indices = list(range(len(dataloader.dataset)))
    if world_size == 1 or isinstance(dataloader.sampler, DistributedSampler):
        return dataloader, indices
    indices = indices[rank::world_size]
    loader = DataLoader(
        Subset(dataloader.dataset, indices),
        batch_size=dataloader.batch_size,
        num_workers=dataloader.num_workers,
        collate_fn=dataloader.collate_fn)
    return loader, indices


@torch.no_grad()
def evaluate(restore: Callable[[torch.Tensor], torch.Tensor],
             dataloader: DataLoader,
             y_channel: bool = False,
             crop_border: int = 0,
             save_dir: str | None = None,
             save_suffix: str | None = None) -> dict:
    """Restore every image of ``dataloader`` and measure it against its ``gt``.

    Args:
        restore: maps ``lq`` ``(B, 3, H, W)`` in [0, 1] to the restored ``(B, 3, H, W)``.
        dataloader: yields the batch dict of the shared contract (``lq``, ``gt``, ``lq_path``, ``de_name``);
            without ``de_name`` the dataset's ``opt['name']`` is used as the group.
        y_channel: measure PSNR/SSIM on the Y channel instead of RGB.
        crop_border: pixels cropped from each border before measuring.
        save_dir: if given, restored images are written there as ``<name>[_<save_suffix>].png``.
        save_suffix: suffix of saved image names.

    Returns:
        ``{'per_image': [{'name', 'de_name', 'psnr', 'ssim', 'l1'}, ...] (dataset order),
        'per_degradation': {de_name: {'psnr', 'ssim', 'l1', 'count'}}}``, identical on every rank.
    """
    rank, world_size = get_dist_info()
    loader, indices = _shard(dataloader, rank, world_size)
    default_group = getattr(dataloader.dataset, 'opt', {}).get('name', 'all')
    records = []
    position = 0
    for batch in loader:
        output = restore(batch['lq']).detach().float().cpu().clamp_(0, 1)
        gt = batch['gt'].float()
        for i in range(output.shape[0]):
            name = osp.splitext(osp.basename(batch['lq_path'][i]))[0]
            out_img, gt_img = tensor2img(output[i]), tensor2img(gt[i])
            records.append({
                'index': indices[position],
                'name': name,
                'de_name': batch['de_name'][i] if 'de_name' in batch else default_group,
                'psnr': float(calculate_psnr(out_img, gt_img, crop_border, test_y_channel=y_channel)),
                'ssim': float(calculate_ssim(out_img, gt_img, crop_border, test_y_channel=y_channel)),
                'l1': float((output[i] - gt[i]).abs().mean()),
            })
            position += 1
            if save_dir is not None:
                imwrite(out_img, osp.join(save_dir, f'{name}_{save_suffix}.png' if save_suffix else f'{name}.png'))
    if world_size > 1:
        records = [r for part in all_gather_object(records) for r in part]
    records.sort(key=lambda r: r['index'])
    per_image = [{k: v for k, v in r.items() if k != 'index'} for r in records]
    return {'per_image': per_image, 'per_degradation': summarize(per_image)}
