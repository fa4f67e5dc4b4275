"""Evaluate a model per dataset and per degradation: ``basicsr-unlearn-test -opt X.yml [--cfg-options a.b=v]``.

Writes ``results/<name>/metrics.json`` (``datasets: {name: {per_degradation, per_image}}``, overall
``per_degradation`` and ``per_image``, ``metrics`` (the metric blocks), ``metric_space`` 'RGB', 'Y' or 'mixed',
``checkpoint``) and ``metrics.md``, plus BasicSR's log and the merged options. The metrics are ``val.metrics``
(BasicSR's blocks) or PSNR/SSIM. Multi-process: ``torchrun --nproc_per_node=N tools/test.py ... --launcher
pytorch`` shards the images over ranks.
"""
import logging
from os import path as osp

from basicsr.data import build_dataloader, build_dataset
from basicsr.models import build_model
from basicsr.utils import get_root_logger, get_time_str, make_exp_dirs
from basicsr.utils.options import dict2str
from tqdm import tqdm

from basicsr_unlearn.config import parse_options, save_options
from basicsr_unlearn.evaluation.metrics import evaluate, metric_space, metric_specs, summarize
from basicsr_unlearn.evaluation.report import markdown_table
from basicsr_unlearn.fileio import write_json, write_text
from basicsr_unlearn.launchers import launch


def metrics_markdown(metrics: dict) -> str:
    """Human table of ``metrics.json``: one row per (dataset, degradation), one column per metric (with its space).

    Example:
        >>> block = {'per_degradation': {'rain': {'psnr': 30.0, 'count': 2}}}
        >>> specs = {'psnr': {'type': 'calculate_psnr', 'crop_border': 0, 'test_y_channel': False}}
        >>> table = metrics_markdown({'name': 'x', 'checkpoint': 'a.pth', 'metrics': specs, 'datasets': {'v': block}})
        >>> for line in table.splitlines()[4::2]:
        ...     print(line)
        | dataset | degradation | psnr (RGB) | images |
        | v | rain | 30.0000 | 2 |
    """
    specs = metrics['metrics']
    rows = [[ds, de, *(m[k] for k in specs), m['count']]
            for ds, block in metrics['datasets'].items() for de, m in block['per_degradation'].items()]
    spaces = {k: f" ({'Y' if spec['test_y_channel'] else 'RGB'})" if 'test_y_channel' in spec else ''
              for k, spec in specs.items()}
    header = ['dataset', 'degradation', *(f'{k}{spaces[k]}' for k in specs), 'images']
    return (f"# {metrics['name']}\n\ncheckpoint: `{metrics['checkpoint']}`\n\n"
            + markdown_table(header, rows, floatfmt='.4f') + '\n')


def test_pipeline(root_path: str) -> dict:
    """Build the model and every ``datasets`` entry, evaluate, write the results; returns the metrics dict."""
    opt, args = parse_options(root_path, is_train=False)
    make_exp_dirs(opt)
    results_root = opt['path']['results_root']
    if opt['rank'] == 0:
        save_options(args.opt, results_root)
    log_file = osp.join(opt['path']['log'], f"test_{opt['name']}_{get_time_str()}.log")
    logger = get_root_logger(logger_name='basicsr', log_level=logging.INFO, log_file=log_file)
    logger.info(dict2str(opt))

    model = build_model(opt)
    val_opt = opt.get('val') or {}
    specs = metric_specs(val_opt)
    checkpoint = opt['path'].get('pretrain_network_g')
    metrics = {'name': opt['name'], 'checkpoint': checkpoint, 'metrics': specs, 'metric_space': metric_space(specs),
               'datasets': {}}
    per_image = []
    for _, dataset_opt in tqdm(sorted(opt['datasets'].items()), desc='datasets', disable=opt['rank'] != 0):
        dataset = build_dataset(dataset_opt)
        loader = build_dataloader(dataset, dataset_opt, num_gpu=opt['num_gpu'], dist=opt['dist'], sampler=None,
                                  seed=opt['manual_seed'])
        save_dir = osp.join(opt['path']['visualization'], dataset_opt['name']) if val_opt.get('save_img') else None
        result = evaluate(model.restore, loader, save_dir=save_dir, save_suffix=val_opt.get('suffix'), metrics=specs,
                          source=f"model {opt['name']} ({checkpoint})")
        metrics['datasets'][dataset_opt['name']] = result
        per_image += [{'dataset': dataset_opt['name'], **r} for r in result['per_image']]
        for de_name, m in result['per_degradation'].items():
            values = ' '.join(f'{k} {m[k]:.4f}' for k in specs)
            logger.info(f"{dataset_opt['name']} {de_name}: {values} ({m['count']})")
    metrics['per_degradation'] = summarize(per_image)
    metrics['per_image'] = per_image
    if opt['rank'] == 0:
        write_json(osp.join(results_root, 'metrics.json'), metrics)
        write_text(osp.join(results_root, 'metrics.md'), metrics_markdown(metrics))
    return metrics


def main() -> None:
    """:func:`test_pipeline` rooted at the current directory."""
    launch(test_pipeline)


if __name__ == '__main__':
    main()
