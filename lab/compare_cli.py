"""`python -m samplerlab compare`: the A/B comparison of the ComfyUI nodes on the lab's problems
(same engine: lab/compare.py), with counted model calls, paired seeds, a reference solve or the exact
solution, pictures for image-like problems, a convergence sweep and a trajectory inspection."""
from pathlib import Path

from tqdm.auto import tqdm

from ..samplers import REGISTRY as SAMPLERS
from ..schedulers import REGISTRY as SCHEDULERS
from . import compare, problems
from .runner import CountingModel, schedule_range


def parse_spec(spec):
    """'sampler:schedule:steps' or 'sampler:steps' (karras) -> (sampler, schedule, steps), checked."""
    parts = spec.split(":")
    if len(parts) == 2:
        parts = [parts[0], "karras", parts[1]]
    if len(parts) != 3 or not parts[2].isdigit() or int(parts[2]) < 1:
        raise ValueError(f"contender {spec!r}: expected sampler:schedule:steps (steps >= 1), e.g. euler:karras:16")
    name, sched, steps = parts[0], parts[1], int(parts[2])
    if name not in SAMPLERS:
        raise ValueError(f"contender {spec!r}: sampler must be one of {sorted(SAMPLERS)}, got {name!r}")
    if sched not in SCHEDULERS:
        raise ValueError(f"contender {spec!r}: schedule must be one of {sorted(SCHEDULERS)}, got {sched!r}")
    return name, sched, steps


class Lab:
    """One problem in one parametrisation: per-seed start states and runs of registered samplers."""

    def __init__(self, problem, space):
        self.problem, self.space = problems.make(problem), space
        self.sigma_min, self.sigma_max = schedule_range(self.problem, space)

    def start(self, seed):
        return self.problem.draw([seed], self.space, self.sigma_max)

    def sigmas(self, sched, steps):
        return SCHEDULERS[sched].fn(steps, self.sigma_min, self.sigma_max).float()

    def entry(self, name, sched, steps, label=None, record=None):
        """An Entry running sampler `name` on schedule `sched`; record(d) sees every callback dict."""
        sigmas = self.sigmas(sched, steps)

        def run(seed, step):
            x_T, labels = self.start(seed)
            counted = CountingModel(self.problem.model(self.space, labels))

            def callback(d):
                step(d["i"])
                if record is not None:
                    record(d)

            x = SAMPLERS[name].fn(counted, x_T.float(), sigmas, callback=callback, disable=True, space=self.space)
            return compare.Outcome(x, counted.calls)

        return compare.Entry(label or f"{name}/{sched}", steps, run, {"sampler": name, "schedule": sched, "contender": f"{name}/{sched}"})

    def exact(self):
        def run(seed, step):
            x_T, labels = self.start(seed)
            step(0)
            return compare.Outcome(self.problem.exact(x_T, self.sigma_max, 0.0, self.space, labels), 0)

        return compare.Entry("exact", None, run, {"sampler": "exact ODE solution"})

    def decode(self):
        """Pixels for the image-like field ([-1, 1] -> [0, 1], channels last); None for the others."""
        if len(self.problem.shape) != 3 or self.problem.shape[0] != 3:
            return None
        return lambda x: ((x.clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1)


def _bar(total_desc, quiet):
    bar = tqdm(total=1, desc=total_desc, disable=quiet)

    def progress(done, total):
        bar.total = total
        bar.n = done
        bar.refresh()

    return bar, progress


def cmd_compare(args):
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lab = Lab(args.problem, args.space)
    specs = [parse_spec(s) for s in args.contender]
    labels = compare.unique_labels([f"{n}/{s}/{k}" for n, s, k in specs])
    reference = lab.exact() if args.reference == "exact" else lab.entry(*parse_spec(args.reference), label="reference")
    seeds = list(range(args.seed, args.seed + args.seeds))
    decode = lab.decode()
    wrote = []

    entries = [lab.entry(n, s, k, label) for (n, s, k), label in zip(specs, labels)]
    bar, progress = _bar("samplerlab compare", args.quiet)
    with bar:
        ref, results = compare.compare(entries, reference, seeds, decode, progress)
    report = compare.summary(ref, results, seeds, decode is not None)
    report.update(problem=args.problem, space=args.space)
    (out / "compare.json").write_text(compare.to_json(report, indent=1))
    table = compare.markdown(report)
    (out / "compare.md").write_text(table + "\n")
    wrote += ["compare.json", "compare.md"]
    for name, pic in (("grid.png", compare.grid_picture(ref, results)),
                      ("heatmap.png", compare.heatmap_picture(ref, results, decode is not None))):
        if pic is not None:
            pic.save(out / name)
            wrote.append(name)
    print(f"{args.problem} ({args.space}), reference {ref.label} ({ref.steps or 'exact'}), {len(seeds)} seeds\n{table}")

    if args.sweep:
        kinds = list(dict.fromkeys((n, s) for n, s, _ in specs))
        sweep = [lab.entry(n, s, k, f"{n}/{s}/{k}") for n, s in kinds for k in args.sweep]
        compare.check_entries(sweep, reference, seeds, minimum=1)
        bar, progress = _bar("samplerlab sweep", args.quiet)
        with bar:
            ref_s, res_s = compare.run_paired(sweep, reference, seeds, None, progress, keep=0)
        records = compare.sweep_records(ref_s, res_s, args.problem, args.space)
        table = compare.sweep_table(records, [(r.label, r.problem) for r in res_s if r.problem])
        (out / "sweep.md").write_text(table + "\n")
        (out / "sweep.json").write_text(compare.to_json({"kind": "samplerlab.sweep", "problem": args.problem, "space": args.space,
                                                    "reference": ref_s.label, "seeds": seeds,
                                                    "records": [r.__dict__ for r in records]}, indent=1))
        compare.sweep_chart(records).save(out / "sweep.png")
        wrote += ["sweep.md", "sweep.json", "sweep.png"]
        print(f"\nconvergence sweep (RMSE against {ref_s.label}, counted calls in brackets)\n{table}")

    if args.trajectory:
        if len(lab.problem.shape) < 2:
            raise ValueError(f"--trajectory: problem {args.problem!r} has no spatial dimensions (shape {lab.problem.shape})")
        n, s, k = specs[0]
        x0s = []
        entry = lab.entry(n, s, k, record=lambda d: x0s.append(d["denoised"].detach().clone()))
        entry.run(seeds[0], lambda i: None)
        t = compare.trajectory(x0s, lab.sigmas(s, k).tolist(), args.space, args.bands)
        (out / "trajectory.json").write_text(compare.to_json(t, indent=1))
        compare.trajectory_chart(t, entry.label).save(out / "trajectory.png")
        wrote += ["trajectory.json", "trajectory.png"]
        print(f"\ntrajectory of {entry.label}, seed {seeds[0]}: x0 speed peaks at step {t['peak_speed_step']} "
              f"(level {t['peak_speed_level']}); half-energy step per band {dict(zip(t['bands'], t['half_energy_step']))}")
    print(f"wrote {', '.join(wrote)} to {out}/")


def add_parser(sub):
    p = sub.add_parser("compare", help="paired A/B comparison of samplers against a reference (as the ComfyUI nodes)")
    p.add_argument("--problem", default="field", choices=sorted(problems.PROBLEMS))
    p.add_argument("--space", default="ve", choices=["ve", "flow"])
    p.add_argument("--contender", action="append", required=True, metavar="SAMPLER:SCHEDULE:STEPS",
                   help="repeat for each contender (at least two), e.g. euler:karras:16")
    p.add_argument("--reference", default="exact", metavar="exact|SAMPLER:SCHEDULE:STEPS",
                   help="the exact ODE solution (default) or a fine solve, e.g. heun:karras:200")
    p.add_argument("--seeds", type=int, default=8)
    p.add_argument("--seed", type=int, default=0, help="first seed (default: %(default)s)")
    p.add_argument("--sweep", type=int, nargs="+", metavar="STEPS", help="also sweep every contender over these step counts")
    p.add_argument("--trajectory", action="store_true", help="also inspect the first contender's x0 predictions (first seed)")
    p.add_argument("--bands", type=int, default=5, help="frequency bands of the trajectory inspection")
    p.add_argument("--out", default="samplerlab-compare")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(fn=cmd_compare)
