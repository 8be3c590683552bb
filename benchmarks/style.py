"""Style-transfer benchmark: Lightning overhead of the fast style-transfer step, throughput, memory,
and (with VGG16 weights) the losses of the embedded default after its budget.

    python -m benchmarks.style                                   # timing only (no VGG16 weights needed)
    python -m benchmarks.style --vgg-weights vgg16-397923af.pth  # also trains configs/style/embedded.yaml

Prints a markdown table. The step ratio compares the Lightning training step with a plain PyTorch
loop doing the same work (transformation network, VGG16 content + style + TV terms against the
style image's Gram matrices computed once, the module's own Adam) on one batch of the embedded
config. Timing uses random VGG16 weights (``pretrained: false``, said in the table): the time of a
step does not depend on the weight values. The quality rows need the ImageNet weights: the
embedded config is trained for its budget with ``--vgg-weights`` and its validation losses
(content, style, tv, weighted as in training) are reported next to those of the photos left
unchanged; without weights they are reported as not measured.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from benchmarks.common import (
    argument_parser, per_second, pipeline_samples_per_second, timed_fit, training_peak_rss_mib, validated, write_summary,
)
from benchmarks.overhead import overhead_ratio
from train import cli_main

ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / "configs" / "style" / "embedded.yaml")
RANDOM_VGG = ["--model.init_args.perceptual.init_args.pretrained=false"]  # timing only


def _make_cli():
    return cli_main(["--config", CONFIG, *RANDOM_VGG, "--trainer.logger=false"], run=False)


def _overhead(batch: dict) -> dict[str, float]:
    def make_plain_step():
        module = _make_cli().model
        optimizer = module.configure_optimizers()
        grams = module.style_grams()

        def step():
            photos = batch["image"]
            loss = sum(module.perceptual.terms(module.network(photos), photos, grams).values())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        return step

    return overhead_ratio(lambda: _make_cli().model, make_plain_step, batch, steps=10, warmup=2, rounds=5)


def _quality(weights: str, workdir: Path) -> dict[str, float]:
    option = f"--model.init_args.perceptual.init_args.weights_path={weights}"
    cli, ckpt, (wall, cpu) = timed_fit(CONFIG, workdir, option)
    values = validated(CONFIG, workdir, option, "--ckpt_path", ckpt)
    return values | {"wall_s": wall, "cpu_s": cpu, "steps": cli.trainer.global_step}


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--vgg-weights", help="torchvision's vgg16-397923af.pth: also train the embedded config")
    args = parser.parse_args()

    rows = []
    if args.vgg_weights:
        with tempfile.TemporaryDirectory() as workdir:
            q = _quality(args.vgg_weights, Path(workdir))
        rows += [
            ("embedded job: wall / process CPU time (fit incl. validation)",
             f"{q['wall_s'] / 60:.1f} / {q['cpu_s'] / 60:.1f} min ({q['steps']} optimizer steps)"),
            *((f"val {term} (model / photo unchanged)", f"{q[f'val/{term}']:.4g} / {q[f'val/photo_{term}']:.4g}")
              for term in ("content", "style", "tv", "loss")),
        ]
        quality = f"style loss {q['val/style']:.3g} vs {q['val/photo_style']:.3g} unchanged, content {q['val/content']:.3g}"
    else:
        rows.append(("losses after the embedded budget", "not measured: no VGG16 ImageNet weights (--vgg-weights)"))
        quality = "not measured (no VGG16 weights)"

    cli = _make_cli()
    module, datamodule = cli.model.eval(), cli.datamodule
    datamodule.setup("fit")
    batch = next(iter(datamodule.train_dataloader()))
    pipeline = pipeline_samples_per_second(datamodule.train_dataloader(), 30)
    photo = datamodule.val_set[0]["image"].unsqueeze(0)
    predict = per_second(lambda: module.stylize(photo), 1)
    overhead = _overhead(batch)
    peak_memory = training_peak_rss_mib(CONFIG, RANDOM_VGG)
    size = f"{photo.shape[-2]}x{photo.shape[-1]}"
    crops = f"batch {len(batch['image'])} x {batch['image'].shape[-1]}px"
    rows += [
        ("Lightning step / plain PyTorch step (target <= 1.05; random VGG16 weights, timing only)", f"{overhead['ratio']:.3f}"),
        (f"step time Lightning / plain ({crops}, VGG16 to relu4_3)",
         f"{overhead['lightning_s'] * 1e3:.0f} / {overhead['plain_s'] * 1e3:.0f} ms"),
        ("peak memory while training (process RSS)", f"{peak_memory:.0f} MiB"),
        ("data pipeline throughput", f"{pipeline:.0f} crops/s"),
        (f"predict throughput (network, {size} photo)", f"{predict:.1f} images/s"),
    ]
    print(f"\n| style transfer (torch {torch.__version__}, {torch.get_num_threads()} threads) | value |")
    print("|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")
    write_summary(
        args.summary, task="fast style transfer", config="configs/style/embedded.yaml", quality=quality,
        step_ratio=overhead["ratio"], train_samples_per_s=len(batch["image"]) / overhead["lightning_s"],
        pipeline_samples_per_s=pipeline, peak_memory_mib=peak_memory, predict=f"{predict:.1f} images/s ({size})",
    )


if __name__ == "__main__":
    main()
