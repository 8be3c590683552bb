"""GAN on digits with and without DiffAugment: FID over seeds, at the same step budget.

    python -m benchmarks.diffaugment --fid-features ../shared/fid/inception-2015-12-05-features.pt
    python -m benchmarks.diffaugment --fid-features FILE --train-size 100 --skip-baseline --augment=--model.init_args.augment.init_args.ada_target=0.6
    python -m benchmarks.diffaugment --fid-features FILE --seeds 1 --skip-baseline --augment=--model.init_args.augment.init_args.policy=[translation]
    python -m benchmarks.diffaugment --fid-features FILE --train-size 100
    python -m benchmarks.diffaugment --fid-features FILE --train-size 100 --max-steps 24000 --seeds 0
    python -m benchmarks.diffaugment --fid-features FILE --train-size 100 --max-steps 48000 --seeds 0 1 2 \
        --option=--model.init_args.generator_scheduler=null --option=--model.init_args.discriminator_scheduler=null

Trains ``configs/gan/digits.yaml`` (797 training digits; ``--train-size N`` keeps a seeded N of
them, the few-shot setting DiffAugment and ADA were made for) once per seed as it is, and once per
seed with ``--model.init_args.augment=lightning_modules.augment.DiffAugment`` (the
``color,translation,cutout`` policy; ``--augment=--option=value`` adds options, ``--option=...``
adds them to every variant), each for the config's step count (or ``--max-steps``), then scores the
EMA generator as ``python -m benchmarks.gan`` does: FID of 1000 seeded samples against the held-out
digits, next to the floor (the 797 training digits against the same held-out digits, computed once,
whatever ``--train-size``). Each row also gives the discriminator's overfitting after training, the
gap between its mean logit on the digits it was trained on and on the held-out ones (un-augmented
images): DiffAugment is for the case where this gap is large. Prints one row per run and the mean
per variant. CPU time is the process's (all threads).
"""

from __future__ import annotations

import statistics
import tempfile
import warnings
from pathlib import Path

import torch

from benchmarks.common import argument_parser, timed_fit
from lightning_modules.fid import GenerativeMetrics
from train import cli_main

ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / "configs" / "gan" / "digits.yaml")
DIFFAUGMENT = "--model.init_args.augment=lightning_modules.augment.DiffAugment"


class Scorer:
    """FID against the held-out digits, whose features (and the floor: the training digits'
    FID) are computed once for all runs; the runs differ only in their generated samples."""

    def __init__(self, features: str, samples: int):
        data = _built([], None)[1]
        data.setup("fit")
        self.samples = samples
        self.training_digits = len(data.train_set)
        self.metrics = GenerativeMetrics(features, num_samples=samples)
        self.held_out = torch.stack([data.val_set[i]["image"] for i in range(min(samples, len(data.val_set)))])
        self.metrics.add(self.held_out, real=True)
        training = torch.stack([data.train_set[i]["image"] for i in range(min(samples, len(data.train_set)))])
        self.floor = float(self.metrics.score(training)["fid"])

    def __call__(self, model) -> float:
        """FID of ``samples`` seeded samples of ``model``'s EMA generator (as ``benchmarks.gan``'s)."""
        model.eval()
        latents = torch.randn(self.samples, model.latent_dim, generator=torch.Generator().manual_seed(0))
        return float(self.metrics.score(model.sample(latents))["fid"])

    @torch.no_grad()
    def overfitting(self, model, training: torch.Tensor) -> float:
        """Mean discriminator logit on ``training`` (the run's own training digits) minus that on
        the held-out digits."""
        model.discriminator.eval()
        return float(model.discriminator(training).mean() - model.discriminator(self.held_out).mean())


def run(seed: int, overrides: list[str], scorer: Scorer, workdir: Path) -> dict[str, float]:
    """Train one variant with ``seed`` and score its EMA generator and its discriminator."""
    args = [f"--seed_everything={seed}", *overrides]
    cli, ckpt, (wall, cpu) = timed_fit(CONFIG, workdir, *args)
    model, _ = _built(args, ckpt)
    train_set = cli.datamodule.train_set
    training = torch.stack([train_set[i]["image"] for i in range(min(scorer.samples, len(train_set)))])
    row = {"fid": scorer(model), "floor": scorer.floor, "d_gap": scorer.overfitting(model, training),
           "wall_min": wall / 60, "cpu_min": cpu / 60}
    augment = getattr(model, "augment", None)
    if augment is not None and augment.ada_target is not None:
        row["final_p"] = float(augment.p)  # where ADA's adaptive probability ended
    return row


def _built(args: list[str], ckpt: str | None):
    """The variant's model (its augment too, so that the checkpoint loads) and data."""
    cli = cli_main(["--config", CONFIG, *args], run=False)
    if ckpt is not None:
        cli.model.load_state_dict(torch.load(ckpt, weights_only=True, map_location="cpu")["state_dict"])
    return cli.model, cli.datamodule


def main() -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--fid-features", default="inception", help="TorchScript file: uint8 (N,3,H,W) -> (N,D) features")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--fid-samples", type=int, default=1000)
    parser.add_argument("--augment", action="append", default=[],
                        help="an extra CLI option for the DiffAugment runs, as --augment=--model...=VALUE (repeatable)")
    parser.add_argument("--option", action="append", default=[],
                        help="an extra CLI option for every variant, as --option=--trainer...=VALUE (repeatable)")
    parser.add_argument("--train-size", type=int, default=None, help="train every variant on this many digits")
    parser.add_argument("--max-steps", type=int, default=None,
                        help="train every variant for this many optimizer steps (default: the config's)")
    parser.add_argument("--skip-baseline", action="store_true",
                        help="train the DiffAugment variant only (a seed's run without it repeats bit for bit)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    common = [] if args.train_size is None else [f"--data.init_args.train_size={args.train_size}"]
    common += [] if args.max_steps is None else [f"--trainer.max_steps={args.max_steps}"]
    common += args.option
    variants = {"DiffAugment": [*common, DIFFAUGMENT, *args.augment]}
    if not args.skip_baseline:
        variants = {"no augmentation": common, **variants}
    results: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
    scorer = Scorer(args.fid_features, args.fid_samples)
    with tempfile.TemporaryDirectory() as workdir:
        for seed in args.seeds:
            for name, overrides in variants.items():
                results[name].append(run(seed, overrides, scorer, Path(workdir)))
                row = results[name][-1]
                print(f"seed {seed}, {name}: FID {row['fid']:.2f} (floor {row['floor']:.2f}), "
                      f"D logit gap training - held-out {row['d_gap']:.3f}, "
                      f"{row['wall_min']:.1f} min wall, {row['cpu_min']:.1f} CPU-min"
                      + (f", final ADA p {row['final_p']:.3f}" if "final_p" in row else ""), flush=True)
    steps = f", {args.max_steps} optimizer steps" if args.max_steps else ""
    steps += f", {' '.join(args.option)}" if args.option else ""
    print(f"\nGAN digits ({args.train_size or scorer.training_digits} training digits{steps}), {len(args.seeds)} seeds ({', '.join(map(str, args.seeds))}), {args.fid_samples} samples, "
          f"torch threads {torch.get_num_threads()}\n")
    print("| variant | FID per seed | mean FID | mean FID / floor | D logit gap, training - held-out | mean CPU-min |")
    print("|---|---|---|---|---|---|")
    for name, rows in results.items():
        fid = statistics.mean(r["fid"] for r in rows)
        floor = statistics.mean(r["floor"] for r in rows)
        per_seed = ", ".join(f"{r['fid']:.2f}" for r in rows)
        gaps = ", ".join(f"{r['d_gap']:.2f}" for r in rows)
        print(f"| {name} | {per_seed} | {fid:.2f} | {fid / floor:.2f} | {gaps} "
              f"| {statistics.mean(r['cpu_min'] for r in rows):.1f} |")


if __name__ == "__main__":
    main()
