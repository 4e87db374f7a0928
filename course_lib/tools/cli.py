"""The ``course`` command: doctor, notebooks refresh, assign, grade, bench, pretrain, ddp,
finetune, predict, weights."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return EXIT_USAGE
    try:
        return args.run(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="course", description="Tools of the finetune-course.")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    doctor = commands.add_parser("doctor", help="check the environment and say how to fix it")
    doctor.set_defaults(run=_doctor)

    notebooks = commands.add_parser("notebooks", help="work with the course notebooks")
    notebook_commands = notebooks.add_subparsers(title="notebook commands", metavar="COMMAND")
    refresh = notebook_commands.add_parser(
        "refresh", help="execute notebooks top to bottom and store their outputs"
    )
    refresh.add_argument(
        "paths", nargs="*", default=["notebooks", "solutions"], help="notebooks or folders"
    )
    refresh.add_argument("--cell-timeout", type=int, default=120, metavar="SECONDS")
    refresh.set_defaults(run=_refresh)

    assign = commands.add_parser("assign", help="generate exercises/ from solutions/")
    assign.add_argument("--solutions", default="solutions", help="folder of solution notebooks")
    assign.add_argument("--exercises", default="exercises", help="folder to write exercises into")
    assign.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if exercises/ is stale"
    )
    assign.set_defaults(run=_assign)

    grade = commands.add_parser("grade", help="execute and grade submitted exercise notebooks")
    grade.add_argument("submissions", nargs="+", help="notebook files, or folders of them")
    grade.add_argument("--out", default="grades.csv", help="the gradebook CSV to write")
    grade.add_argument(
        "--feedback", default=None, help="folder for feedback files (default: next to --out)"
    )
    grade.add_argument(
        "--timeout", type=float, default=60, metavar="SECONDS", help="limit per cell"
    )
    grade.add_argument(
        "--wall-limit", type=float, default=300, metavar="SECONDS", help="limit per notebook"
    )
    grade.add_argument(
        "--jobs", type=int, default=os.cpu_count() or 1, help="submissions graded in parallel"
    )
    grade.add_argument(
        "--assignment", default=None, help="expected notebook, e.g. 01_gradient_descent"
    )
    grade.set_defaults(run=_grade)

    bench = commands.add_parser("bench", help="benchmarks (ratios against torch, same run)")
    bench_commands = bench.add_subparsers(title="benchmarks", metavar="BENCHMARK")
    bench_optim = bench_commands.add_parser(
        "optim", help="per-step time of the scratch optimizers vs torch.optim"
    )
    bench_optim.add_argument("--rounds", type=int, default=7, help="interleaved rounds (median)")
    bench_optim.add_argument("--steps", type=int, default=30, help="steps timed per round")
    bench_optim.set_defaults(run=_bench_optim)
    bench_fit = bench_commands.add_parser("fit", help="fit() against a minimal hand-written loop")
    bench_fit.add_argument("--rounds", type=int, default=11, help="interleaved rounds (median)")
    bench_fit.add_argument("--epochs", type=int, default=20, help="epochs per run")
    bench_fit.set_defaults(run=_bench_fit)

    pretrain = commands.add_parser(
        "pretrain", help="rebuild the bundled backbone (chapter 5) from its seed, ~1.5 min"
    )
    pretrain.add_argument("--out", default=None, help="file to write (default: the bundled file)")
    pretrain.add_argument("--seed", type=int, default=0)
    pretrain.add_argument("--epochs", type=int, default=8)
    pretrain.add_argument(
        "--check",
        action="store_true",
        help="write to a temporary file; exit 1 unless it is byte for byte the bundled one",
    )
    pretrain.set_defaults(run=_pretrain)

    finetune = commands.add_parser(
        "finetune", help="fine-tune a pretrained backbone on your photos (DATA_DIR/<class>/*.jpg)"
    )
    finetune.add_argument("data_dir", metavar="DATA_DIR", help="one sub-folder of photos per class")
    finetune.add_argument("--out", required=True, metavar="MODEL_DIR", help="model folder to write")
    finetune.add_argument(
        "--backbone",
        choices=["bundled", "resnet18"],
        default="bundled",
        help="bundled (offline, glyph-pretrained) or resnet18 (ImageNet; `course weights fetch resnet18` first)",
    )
    finetune.add_argument(
        "--strategy",
        choices=["fine-tune", "features"],
        default="fine-tune",
        help="train layer4 + a new head, or only a head on cached features",
    )
    finetune.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="default: the backbone's (15 for the bundled one, 3 for resnet18)",
    )
    finetune.add_argument("--batch-size", type=int, default=16)
    finetune.add_argument("--seed", type=int, default=0)
    finetune.add_argument(
        "--signing-key",
        default=None,
        metavar="KEY_FILE",
        help="sign the model (chapter 6's key file)",
    )
    finetune.set_defaults(run=_finetune)

    predict = commands.add_parser(
        "predict", help="classify photos with a model from `course finetune`"
    )
    predict.add_argument("model_dir", metavar="MODEL_DIR")
    predict.add_argument("images", nargs="+", metavar="IMAGE")
    predict.add_argument(
        "--verify-key", default=None, metavar="KEY_FILE", help="the key the model was signed with"
    )
    predict.add_argument(
        "--allow-unsigned",
        action="store_true",
        help="load an unsigned model (you wrote it yourself)",
    )
    predict.set_defaults(run=_predict)

    weights = commands.add_parser("weights", help="the one optional download: pretrained weights")
    weight_commands = weights.add_subparsers(title="weights commands", metavar="COMMAND")
    fetch = weight_commands.add_parser(
        "fetch", help="download resnet18's ImageNet weights (45 MB) into torch's cache, checked"
    )
    fetch.add_argument("name", choices=["resnet18"])
    fetch.set_defaults(run=_fetch_weights)

    ddp = commands.add_parser(
        "ddp",
        help="chapter 7: data-parallel fine-tuning with torchrun (gloo on CPUs, nccl on GPUs)",
    )
    ddp.add_argument("--workers", type=int, default=2, help="processes torchrun starts")
    ddp.add_argument(
        "--check",
        action="store_true",
        help="also train in one process; exit 1 if the parameters differ beyond float tolerance",
    )
    ddp.add_argument(
        "--port", type=int, default=None, help="rendezvous port (default: a free one, --standalone)"
    )
    ddp.add_argument("--max-restarts", type=int, default=0, help="restarts torchrun may make")
    ddp.add_argument(
        "--allow-oversubscribe", action="store_true", help="allow more workers than CPU cores"
    )
    ddp.add_argument(
        "--out", default=None, help="folder for checkpoints and results (default: temporary)"
    )
    ddp.add_argument(
        "--resume",
        action="store_true",
        help="continue from the checkpoint in a non-empty --out folder (same config only)",
    )
    ddp.set_defaults(run=_ddp)
    return parser


def _finetune(args: argparse.Namespace) -> int:
    from course_lib.tools.own_photos import finetune

    return finetune(
        args.data_dir,
        args.out,
        backbone=args.backbone,
        strategy=args.strategy,
        epochs=args.epochs,
        batch_size=args.batch_size,
        seed=args.seed,
        signing_key_file=args.signing_key,
    )


def _predict(args: argparse.Namespace) -> int:
    from course_lib.tools.own_photos import predict

    return predict(
        args.model_dir,
        args.images,
        verify_key_file=args.verify_key,
        allow_unsigned=args.allow_unsigned,
    )


def _fetch_weights(args: argparse.Namespace) -> int:
    from course_lib.tools.weights import FetchError, fetch_resnet18_imagenet

    try:
        path = fetch_resnet18_imagenet()
    except (FetchError, ValueError) as exc:
        print(f"course weights fetch: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(f"resnet18's ImageNet weights are in {path}, checked against their pinned SHA-256")
    return EXIT_OK


def _ddp(args: argparse.Namespace) -> int:
    import tempfile
    from dataclasses import replace
    from pathlib import Path

    from course_lib.ddp import (
        FLOAT_TOLERANCE,
        PortInUse,
        TrainingConfig,
        WorkerFailed,
        largest_difference,
        run_single,
        run_workers,
    )

    if args.out and Path(args.out).is_dir() and any(Path(args.out).iterdir()) and not args.resume:
        print(
            f"course ddp: {args.out} is not empty; pass --resume to continue the run in it, or "
            "give a new --out folder",
            file=sys.stderr,
        )
        return EXIT_USAGE
    with tempfile.TemporaryDirectory(prefix="course-ddp-") as folder:
        out = Path(args.out or folder)
        config = TrainingConfig(out=str(out / f"{args.workers}-workers"))
        try:
            run = run_workers(
                config,
                args.workers,
                max_restarts=args.max_restarts,
                port=args.port,
                allow_oversubscribe=args.allow_oversubscribe,
            )
        except (ValueError, PortInUse) as exc:
            print(f"course ddp: {exc}", file=sys.stderr)
            return EXIT_USAGE
        except (WorkerFailed, TimeoutError) as exc:
            print(f"course ddp: {exc}", file=sys.stderr)
            return EXIT_FAILED
        print(run.launch.shown_command)
        print(
            f"{run.world_size} workers x batch {config.global_batch // run.world_size}: "
            f"{len(run.history)} steps in {run.launch.seconds:.1f} s, "
            f"loss {run.losses[0]:.4f} -> {run.losses[-1]:.4f}"
        )
        if not args.check:
            return EXIT_OK
        single = run_single(replace(config, out=str(out / "1-process")))
        difference = largest_difference(run.params, single.params)
        same = difference <= FLOAT_TOLERANCE
        print(
            f"largest parameter difference to one process x batch {config.global_batch}: "
            f"{difference:.2e} ({'within' if same else 'BEYOND'} the float tolerance "
            f"{FLOAT_TOLERANCE:.0e})"
        )
        return EXIT_OK if same else EXIT_FAILED


def _pretrain(args: argparse.Namespace) -> int:
    import tempfile
    from pathlib import Path

    from course_lib.tools.pretrain import pretrain
    from course_lib.transfer import BUNDLED_SHA256, BUNDLED_WEIGHTS

    with tempfile.TemporaryDirectory() as folder:
        out = (
            Path(folder) / "check.safetensors" if args.check else Path(args.out or BUNDLED_WEIGHTS)
        )
        report = pretrain(out, seed=args.seed, epochs=args.epochs)
    print(
        f"pretrained on glyphs in {report['seconds']:.0f} s; glyph validation accuracy "
        f"{report['glyph_validation_accuracy']:.3f}\nSHA-256 {report['sha256']}"
    )
    if args.check:
        same = report["sha256"] == BUNDLED_SHA256
        print(
            "identical to the bundled file"
            if same
            else f"differs from the bundled file ({BUNDLED_SHA256})"
        )
        return EXIT_OK if same else EXIT_FAILED
    if report["sha256"] != BUNDLED_SHA256:
        print(
            f"{out} differs from the bundled file: if it is to replace it, set BUNDLED_SHA256 in "
            "course_lib/transfer.py to the SHA-256 above"
        )
    return EXIT_OK


def _doctor(args: argparse.Namespace) -> int:
    from course_lib.tools.doctor import check_environment

    report = check_environment()
    print(report)
    return EXIT_OK if report.ok else EXIT_FAILED


def _assign(args: argparse.Namespace) -> int:
    from pathlib import Path

    from course_lib.tools.assign import MarkerError, assign

    try:
        results = assign(Path(args.solutions), Path(args.exercises), write=not args.check)
    except MarkerError as exc:
        print(f"course assign: {exc}", file=sys.stderr)
        return EXIT_FAILED
    stale = [r for r in results if not r.up_to_date]
    for result in results:
        state = "up to date" if result.up_to_date else ("STALE" if args.check else "written")
        print(f"{state:<10} {result.exercise}  (from {result.solution})")
    if args.check and stale:
        print(
            f"{len(stale)} exercise notebook(s) differ from their solutions: run `course assign`",
            file=sys.stderr,
        )
        return EXIT_FAILED
    return EXIT_OK


def _grade(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    from course_lib.grading.batch import Limits, grade_batch, write_feedback, write_gradebook

    out = Path(args.out)
    feedback = Path(args.feedback) if args.feedback else out.parent / "feedback"
    limits = Limits(cell_timeout=args.timeout, wall_limit=args.wall_limit)
    started = time.monotonic()
    grades = grade_batch(
        [Path(p) for p in args.submissions],
        jobs=args.jobs,
        limits=limits,
        assignment=args.assignment,
    )
    if not grades:
        print("course grade: no submissions found", file=sys.stderr)
        return EXIT_USAGE
    write_gradebook(grades, out)
    write_feedback(grades, feedback)
    seconds = time.monotonic() - started
    for grade in grades:
        print(f"{grade.status:<15} {grade.total:>5g}/{grade.max_points:<3g} {grade.submission}")
    print(
        f"graded {len(grades)} submissions in {seconds:.1f} s ({seconds / len(grades):.1f} s each, "
        f"{args.jobs} in parallel); gradebook {out}, feedback in {feedback}/"
    )
    return EXIT_OK


def _bench_optim(args: argparse.Namespace) -> int:
    from course_lib.tools.bench import bench_optimizers, format_table

    rows = bench_optimizers(rounds=args.rounds, steps=args.steps)
    print(f"Per-step time on a 99,978-parameter MLP, median of {args.rounds} interleaved rounds")
    print(format_table(rows))
    return EXIT_OK


def _bench_fit(args: argparse.Namespace) -> int:
    from course_lib.tools.bench import bench_fit, format_fit_table

    workloads = [
        ((128,), 64, "the smallest: digits MLP 64-128-10, batch 64"),
        ((256, 256), 32, "chapter 4's MLP 64-256-256-10, batch 32"),
    ]
    for hidden, batch_size, title in workloads:
        rows = bench_fit(
            rounds=args.rounds, epochs=args.epochs, batch_size=batch_size, hidden=hidden
        )
        print(f"{title}; {args.epochs} epochs per run, median of {args.rounds} rounds")
        print(format_fit_table(rows) + "\n")
    return EXIT_OK


def _refresh(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from course_lib.tools.notebooks import (
        NOTEBOOK_BUDGET_SECONDS,
        NotebookRefreshError,
        find_notebooks,
        refresh_notebook,
    )

    try:
        paths = find_notebooks(args.paths)
    except FileNotFoundError as exc:
        print(f"course notebooks refresh: {exc}", file=sys.stderr)
        return EXIT_USAGE
    failed = []
    for path in paths:
        with tqdm(desc=str(path), unit="cell", leave=False) as bar:

            def advance(done: int, total: int, bar=bar) -> None:
                bar.total = total
                bar.update(done - bar.n)

            try:
                result = refresh_notebook(
                    path, cell_timeout=args.cell_timeout, on_cell_done=advance
                )
            except NotebookRefreshError as exc:
                failed.append(path)
                bar.close()
                print(f"FAILED {exc}", file=sys.stderr)
                continue
        budget = f"  OVER the {NOTEBOOK_BUDGET_SECONDS} s budget" if result.over_budget else ""
        print(
            f"ok     {path}: {result.code_cells_run} code cells in {result.seconds:.1f} s{budget}"
        )
    if not paths:
        print("course notebooks refresh: no notebooks found", file=sys.stderr)
    if failed:
        print(f"{len(failed)} of {len(paths)} notebooks not refreshed", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
