"""`python -m samplerlab <command>`: the pack's main job outside ComfyUI."""
import argparse
import sys
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..samplers import REGISTRY as SAMPLERS
from ..schedulers import REGISTRY as SCHEDULERS
from . import bench, compare_cli, digits_lab, docs, guidance, images, poisson, problems, report, schedules
from . import studies
from .studies import calibrated
from .runner import registry_contenders, run_grid, schedule_range


def cmd_list(args):
    print("samplers (KSampler names sl_<name>):")
    for name, s in sorted(SAMPLERS.items()):
        calls = "adaptive" if s.nfe_per_step is None else f"{s.nfe_per_step} call/step"
        kind = "stochastic" if s.stochastic else "deterministic"
        print(f"  {name:<14} order {s.order}  {calls:<12} {kind:<13} {s.summary}")
        for p, spec in s.params.items():
            print(f"      {p} = {spec.default!r}  [{spec.min}, {spec.max}]  {spec.tooltip}")
    print("schedulers (KSampler names sl_<name>):")
    for name, s in sorted(SCHEDULERS.items()):
        print(f"  {name:<14} {s.summary}")
    print("problems: " + ", ".join(sorted(problems.PROBLEMS)))


def cmd_docs(args):
    path = Path(args.readme)
    print(f"{path}: {'updated' if docs.update_readme(path) else 'already up to date'}")


def field_grid(contenders, nfes, schedule, seeds):
    """Samples of the image-like field: one row per sampler, one column per NFE, then the exact solution."""
    field = problems.make("field")
    sigma_min, sigma_max = schedule_range(field, "ve")
    x_T, _ = field.draw(seeds, "ve", sigma_max)
    exact = field.exact(x_T, sigma_max)
    model = field.model("ve")
    rows = []
    for c in contenders:
        row = []
        for nfe in nfes:
            sigmas = SCHEDULERS[schedule].fn(max(1, nfe // c.nfe_per_step), sigma_min, sigma_max).float()
            row.append(images.to_image(c.fn(model, x_T.float(), sigmas, disable=True, **(c.options or {}))[0]))
        rows.append(row + [images.to_image(exact[0])])
    return images.grid(rows, [c.label for c in contenders], [f"NFE {n}" for n in nfes] + ["exact"])


def cmd_demo(args):
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    contenders = registry_contenders(args.samplers)
    spaces = ("ve", "flow")
    total = len(args.problems) * len(spaces) * len(contenders) * len(args.schedules) * len(args.nfe)
    t0 = time.perf_counter()
    records = []
    with tqdm(total=total, desc="samplerlab demo", disable=args.quiet) as bar:
        for name in args.problems:
            for space in spaces:
                records += run_grid(problems.make(name), contenders, args.schedules, args.nfe,
                                    range(args.seeds), space, torch.float32, bar)
    (out / "report.md").write_text(report.markdown(records))
    report.write_json(records, out / "report.json", command="demo", seeds=args.seeds)
    report.plot(records, out / "error_vs_nfe.png")
    field_grid(contenders, args.nfe, args.schedules[0], [0]).save(out / "field_grid.png")
    digits_lab.grid(contenders, args.nfe, args.schedules[0]).save(out / "digits_grid.png")
    print(report.markdown(records))
    print(f"wrote {out}/report.md, report.json, error_vs_nfe.png, field_grid.png, digits_grid.png in {time.perf_counter() - t0:.1f} s")


def cmd_train(args):
    """Train a shipped network reproducibly (one thread, fixed seed) and write its weights and manifest."""
    from . import classifier, trained

    torch.set_num_threads(args.threads)
    module = {"digits": trained, "classifier": classifier}[args.network]
    steps = module.TRAIN["steps"] if args.steps is None else args.steps
    out = Path(args.out) if args.out else module.WEIGHTS
    command = " ".join(["python -m samplerlab train", args.network, "--steps", str(steps), "--seed", str(args.seed),
                        "--threads", str(args.threads)] + (["--out", args.out] if args.out else []))
    t0 = time.perf_counter()
    with tqdm(total=steps, desc=f"train {args.network}", disable=args.quiet) as bar:
        if args.network == "digits":
            manifest = trained.write(steps, args.seed, out, command, lambda step, loss: (bar.update(1), bar.set_postfix(loss=f"{loss:.3f}")))
        else:
            manifest = classifier.write(steps, args.seed, out, command)
    print(f"wrote {out} and {out.with_suffix('.json')} in {time.perf_counter() - t0:.0f} s: "
          + ", ".join(f"{k} {manifest[k]}" for k in ("final_loss", "heldout_accuracy", "sha256") if k in manifest))


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m samplerlab", description=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="print the sampler and scheduler registries").set_defaults(fn=cmd_list)
    readme = sub.add_parser("docs", help="regenerate the README's sampler and scheduler tables from the registries")
    readme.add_argument("--readme", default=str(Path(__file__).resolve().parents[1] / "README.md"))
    readme.set_defaults(fn=cmd_docs)
    demo = sub.add_parser("demo", help="every sampler on the built-in problems; writes a report folder")
    demo.add_argument("--out", default="samplerlab-report", help="report folder (default: %(default)s)")
    demo.add_argument("--problems", nargs="+", default=["gaussian", "mixture", "field"], choices=sorted(problems.PROBLEMS))
    demo.add_argument("--samplers", nargs="+", default=None, choices=sorted(SAMPLERS), help="default: all registered")
    demo.add_argument("--schedules", nargs="+", default=["karras", "exponential"], choices=sorted(SCHEDULERS))
    demo.add_argument("--nfe", nargs="+", type=int, default=[4, 6, 8, 12, 16, 24, 32])
    demo.add_argument("--seeds", type=int, default=8)
    demo.add_argument("--quiet", action="store_true", help="no progress bar")
    demo.set_defaults(fn=cmd_demo)
    train = sub.add_parser("train", help="retrain a shipped network (the digits denoiser or the classifier) reproducibly")
    train.add_argument("network", choices=["digits", "classifier"])
    train.add_argument("--steps", type=int, default=None, help="default: the shipped network's")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--threads", type=int, default=1, help="torch threads (default 1: bit-reproducible)")
    train.add_argument("--out", default=None, help="weights file (default: the shipped one in lab/weights/)")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.set_defaults(fn=cmd_train)
    bench.add_parser(sub)
    digits_lab.add_parser(sub)
    compare_cli.add_parser(sub)
    guidance.add_parser(sub)
    schedules.add_parser(sub)
    poisson.add_parser(sub)
    calibrated.add_parser(sub)
    studies.add_parser(sub)
    args = ap.parse_args(argv)
    args.fn(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
