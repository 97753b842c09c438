"""The `rul` command: a thin layer over plain functions.

Every expected failure (bad data, bad config, missing file) prints one clear line and exits
with status 2; training commands import torch only when they run.
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rul.errors import RulError, describe_os_error

EXIT_USAGE = 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except (RulError, ValueError, FileNotFoundError, ImportError) as exc:
        print(f"rul {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:  # a path that is a folder, unwritable, unreachable, ...
        print(f"rul {args.command}: error: {describe_os_error(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"rul {args.command}: interrupted", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rul", description="Remaining-useful-life forecasts "
                                     "for predictive maintenance.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = commands.add_parser("simulate", help="write a simulated run-to-failure fleet "
                            "(C-MAPSS layout)")
    p.add_argument("--out", required=True, type=Path, help="directory to write into")
    p.add_argument("--assets", type=int, default=100, help="training assets (test: as many)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--conditions", type=int, default=1, help="operating conditions")
    p.add_argument("--fault-modes", type=int, default=1)
    p.add_argument("--subset", default="SIM", help="file name part: train_<subset>.txt")
    p.set_defaults(handler=cmd_simulate)

    p = commands.add_parser("inspect", help="load a fleet and show its assets, conditions, "
                            "selected sensors, windows and targets")
    add_data_arguments(p)
    p.add_argument("--window", type=int, default=30)
    p.set_defaults(handler=cmd_inspect)

    p = commands.add_parser("train", help="train a model into a run directory")
    add_data_arguments(p)
    p.add_argument("--out", required=True, type=Path, help="run directory")
    p.add_argument("--backbone", help="cnn or lstm (default: cnn)")
    p.add_argument("--max-epochs", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--window", type=int)
    p.add_argument("--folds", type=int, help="networks in the cross-fitted ensemble, one per "
                   "fold of the training assets (1: one network; CNN default: 5)")
    p.add_argument("--config", type=Path, help="YAML with data/model/train sections")
    p.add_argument("--resume", action="store_true", help="continue from RUN_DIR's last.ckpt")
    p.add_argument("--accelerator", help="auto (default), cpu, gpu")
    p.add_argument("--devices", help="number of devices, or auto")
    p.add_argument("--num-nodes", type=int)
    p.add_argument("--strategy", help="auto (default) or ddp")
    p.add_argument("--logger", choices=["csv", "tensorboard"])
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--export", action="store_true", help="also write RUN_DIR/model.onnx")
    p.set_defaults(handler=cmd_train)

    p = commands.add_parser("export", help="export a trained checkpoint to one ONNX file")
    p.add_argument("--checkpoint", required=True, type=Path, help="run directory or .ckpt")
    p.add_argument("--out", required=True, type=Path, help="MODEL.onnx (MODEL.json beside it)")
    p.add_argument("--data", type=Path, help="readings to check parity on (default: the "
                   "training data named in the model card)")
    p.add_argument("--subset", help="C-MAPSS subset, when --data is a directory")
    p.set_defaults(handler=cmd_export)

    p = commands.add_parser("evaluate", help="score a model on a labelled test set")
    add_data_arguments(p, fleet_files=False)
    p.add_argument("--model", required=True, type=Path,
                   help="run directory, checkpoint (.ckpt) or model file (.onnx)")
    p.add_argument("--labels", type=Path, help="RUL file (default: the subset's RUL_ file)")
    p.add_argument("--report", type=Path, help="write a report (HTML, Markdown, plots) here")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--record", action="store_true", help="write the test metrics into the "
                   "model file's card (metrics.test, with the test data's fingerprint)")
    p.set_defaults(handler=cmd_evaluate)

    p = commands.add_parser("forecast", help="forecast a fleet file into a ranked maintenance "
                            "schedule")
    p.add_argument("--input", required=True, type=Path,
                   help="fleet: .csv[.gz], .parquet/.pq or C-MAPSS .txt[.gz]")
    p.add_argument("--out", required=True, type=Path, help="schedule: .csv, .parquet or .json")
    p.add_argument("--model", type=Path, help="MODEL.onnx (default: $RUL_MODEL, else the "
                   "shipped FD001 model)")
    p.add_argument("--lead-time", type=int, default=10,
                   help="cycles to plan ahead of the pessimistic (lowest-quantile) RUL")
    p.add_argument("--threshold", type=float, default=0.5,
                   help="failure probability at which an asset counts as at risk")
    p.add_argument("--report", type=Path, help="write a readable HTML report here")
    p.add_argument("--evaluate", type=Path, metavar="LABELS",
                   help="true RUL (C-MAPSS RUL file or CSV asset_id,rul): report the "
                   "schedule's cost per lead time")
    p.add_argument("--chunk-rows", type=int, default=200_000)
    p.add_argument("--scheduler", metavar="ADDRESS", help="run on a Dask cluster: 'local', or "
                   "a scheduler address such as tcp://HOST:8786 (partitioned Parquet/CSV)")
    p.add_argument("--threads", type=int, help="onnxruntime threads (default: one fewer than "
                   "the cores, as the reading runs beside the model; 1 per Dask worker)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(handler=cmd_forecast)

    p = commands.add_parser("serve", help="serve models over HTTP (the Hug app under "
                            "gunicorn); settings also from RUL_* variables (docs/SERVICE.md)")
    p.add_argument("--model", type=Path, help="default model file (default: $RUL_MODEL or the "
                   "shipped FD001 model)")
    p.add_argument("--models-dir", type=Path, help="a folder of further .onnx models, served "
                   "by file name ($RUL_MODELS_DIR)")
    p.add_argument("--host", help="bind address (default: $RUL_HOST or 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default: $RUL_PORT or 8000)")
    p.add_argument("--workers", type=int, help="worker processes (default: $RUL_WORKERS or 2)")
    p.add_argument("--db", type=Path, help="SQLite database (default: $RUL_DB or "
                   "rul-service.db)")
    p.add_argument("--threads", type=int, dest="ort_threads", help="onnxruntime threads per "
                   "worker (default: $RUL_ORT_THREADS or cores / workers)")
    p.add_argument("--access-log", action="store_true", help="log every request to stderr")
    p.set_defaults(handler=cmd_serve)

    p = commands.add_parser("demo", help="simulate a fleet, train, evaluate (the main job on "
                            "the embedded default)")
    p.add_argument("--out", type=Path, default=Path("runs/demo"))
    p.add_argument("--max-epochs", type=int, default=15)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(handler=cmd_demo)
    return parser


DEFAULT_SUBSET = "FD001"
"""The C-MAPSS subset read when --subset is not given."""


def add_data_arguments(p: argparse.ArgumentParser, fleet_files: bool = True) -> None:
    p.add_argument("--data", type=Path, help="C-MAPSS directory"
                   f"{', or a CSV/Parquet fleet file' if fleet_files else ''} "
                   "(default: $RUL_CMAPSS_DIR or ../shared/data/cmapss)")
    p.add_argument("--subset", help="C-MAPSS subset: FD001..FD004, SIM, ... (default FD001)"
                   + ("; with a fleet file, whose defaults `train` takes (default: the generic "
                      "ones)" if fleet_files else ""))


def cmd_simulate(args: argparse.Namespace) -> int:
    from rul.simulate import SimulationConfig, simulate_fleet, write_cmapss

    config = SimulationConfig(assets=args.assets, seed=args.seed, conditions=args.conditions,
                              fault_modes=args.fault_modes)
    started = time.perf_counter()
    fleet = simulate_fleet(config)
    paths = write_cmapss(fleet, args.out, args.subset)
    print(f"simulated {args.assets} training and {args.assets} test assets "
          f"({len(fleet.train)} + {len(fleet.test)} rows) in {time.perf_counter() - started:.2f} s")
    for kind, path in paths.items():
        print(f"  {kind:5s} {path}")
    return 0


def load_training_fleet(args: argparse.Namespace):
    """The run-to-failure fleet named by --data/--subset."""
    from rul.loaders import default_cmapss_dir, load_cmapss, read_fleet

    data = args.data or default_cmapss_dir()
    if data.is_file():
        return read_fleet(data), data.stem
    subset = args.subset or DEFAULT_SUBSET
    return load_cmapss(data, subset).train, subset


def defaults_subset(args: argparse.Namespace) -> str | None:
    """Whose defaults `train` takes: the C-MAPSS subset trained on, or for a fleet file the
    generic ones unless --subset names a subset. A subset's defaults may promise things about
    its data (FD001's cycles count from each engine's start of service) that a file need not
    keep."""
    if args.data is not None and args.data.is_file():
        return args.subset
    return args.subset or DEFAULT_SUBSET


def cmd_inspect(args: argparse.Namespace) -> int:
    from rul.config import DataConfig
    from rul.preprocessing import fit_preprocessing
    from rul.targets import capped, rul_per_row
    from rul.windowing import make_windows

    fleet, name = load_training_fleet(args)
    config = DataConfig(window=args.window)
    pre = fit_preprocessing(fleet, config)
    windows = make_windows(pre.transform_fleet(fleet), fleet.lengths(), config.window)
    targets = capped(rul_per_row(fleet), config.rul_cap)[windows.end_rows]
    lengths = fleet.lengths()
    print(f"{name}: {fleet.n_assets} assets, {len(fleet.frame)} rows from {fleet.source}")
    print(f"  cycles per asset: min {lengths.min()}, median {int(np.median(lengths))}, "
          f"max {lengths.max()}")
    print(f"  operating conditions: {pre.n_conditions}")
    print(f"  sensors kept ({len(pre.sensors)}): {', '.join(pre.sensors)}")
    for sensor, why in pre.dropped.items():
        print(f"  dropped {sensor}: {why}")
    print(f"  windows: {len(windows)} x {config.window} cycles x {pre.n_inputs} inputs "
          f"({int((windows.padded > 0).sum())} padded); targets capped at {config.rul_cap}: "
          f"mean {targets.mean():.1f}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from training.config import resolve_config
    from training.run import train_run

    fleet, name = load_training_fleet(args)
    config = resolve_config(defaults_subset(args), backbone=args.backbone, config_file=args.config,
                            overrides={
                                "data": _given(window=args.window, folds=args.folds,
                                               seed=args.seed),
                                "train": _given(max_epochs=args.max_epochs, seed=args.seed,
                                                accelerator=args.accelerator,
                                                devices=_devices(args.devices),
                                                num_nodes=args.num_nodes,
                                                strategy=args.strategy, logger=args.logger)})
    started = time.perf_counter()
    data_dir = args.data if args.data is not None and args.data.is_dir() else None
    if config.data.extra_training:
        # A subset's defaults may add a sibling's engines; say so, as they change the model.
        print(f"training also on {', '.join(config.data.extra_training)} "
              "(data.extra_training: every network trains on them, none validates on them)",
              file=sys.stderr)
    run = train_run(fleet, config, args.out, name=name.lower(), resume=args.resume,
                    progress=not args.no_progress, data_dir=data_dir)
    if (run / "metrics.json").is_file():
        _print_validation(run, time.perf_counter() - started)
        if args.export:
            export_run(run, run / "model.onnx", fleet)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    fleet = None
    if args.data:
        from rul.loaders import load_cmapss, read_fleet

        fleet = (read_fleet(args.data) if args.data.is_file()
                 else load_cmapss(args.data, args.subset or DEFAULT_SUBSET).train)
    export_run(args.checkpoint, args.out, fleet)
    return 0


def export_run(checkpoint: Path, out: Path, fleet=None) -> None:
    """Export and report the parity check; parity windows come from `fleet` or the card's
    training data."""
    from export.onnx import (
        export_card,
        export_checkpoint,
        parity_readings,
        read_run_card,
        training_fleet_of,
    )
    from training.checkpoint import resolve_checkpoint

    card = export_card(read_run_card(resolve_checkpoint(checkpoint)))
    fleet = fleet or training_fleet_of(card)
    readings = parity_readings(fleet, card["features"], card["window"])
    result = export_checkpoint(checkpoint, out, readings)
    size = result.path.stat().st_size / 1024
    print(f"exported {result.path} ({size:.0f} KiB) and {result.sidecar.name}; parity on "
          f"{len(readings)} real windows, max |torch - onnxruntime|: "
          + ", ".join(f"{k} {v:.1e}" for k, v in result.parity.items()))


def cmd_evaluate(args: argparse.Namespace) -> int:
    from rul.io import dumps

    if args.record:
        if args.model.suffix != ".onnx":
            raise RulError(f"{args.model}: --record writes into a model file's card; give an "
                           ".onnx file (`rul export` makes one from a run)")
        if importlib.util.find_spec("onnx") is None:
            raise RulError("--record rewrites the model file, which needs the onnx package "
                           "(pip install 'rul[train]')")
    result = evaluate_model(args.model, args.data, args.subset or DEFAULT_SUBSET, args.labels,
                            args.report)
    summary = {k: v for k, v in result.items()
               if k not in ("per_asset", "trajectory", "calibration", "test_data", "labels")}
    if args.json:
        print(dumps(summary))
    else:
        print_metrics(result)
    where = sys.stderr if args.json else sys.stdout  # keep --json output one object
    if args.report:
        print(f"report: {args.report / 'report.html'}", file=where)
    if args.record:
        from export.card import evaluation_record, record_test_metrics
        from rul.forecaster import sidecar_path

        metrics = {k: v for k, v in summary.items() if k != "model"}
        record_test_metrics(args.model, evaluation_record(
            metrics, data=result["test_data"], labels=result["labels"]))
        print(f"recorded the test metrics in {args.model} and its card "
              f"{sidecar_path(args.model).name}", file=where)
    return 0


def evaluate_model(model: Path, data: Path | None, subset: str, labels: Path | None,
                   report: Path | None) -> dict[str, Any]:
    """Load a model and a labelled test set, score it, and optionally write the report."""
    from rul.evaluation import evaluate
    from rul.loaders import default_cmapss_dir, load_cmapss, read_rul_file
    from rul.model_card import fleet_fingerprint

    predictor = load_predictor(model)
    if data is not None and data.is_file():
        raise RulError(f"{data}: rul evaluate scores a C-MAPSS directory's test_{subset} against "
                       f"RUL_{subset} (or --labels); give that directory as --data")
    directory = data or default_cmapss_dir()
    dataset = load_cmapss(directory, subset)
    if dataset.test is None:
        raise RulError(f"{directory}: no test_{subset} file to evaluate on")
    test_rul = (read_rul_file(labels, dataset.test.n_assets) if labels
                else dataset.test_rul)
    if test_rul is None:
        raise RulError(f"no labels for {subset}: give --labels RUL_{subset}.txt")
    result = {"subset": subset, "model": str(model),
              "test_data": fleet_fingerprint(dataset.test),
              "labels": labels or dataset.test_rul_source,
              **evaluate(predictor, dataset.test, test_rul)}
    if report:
        import pandas as pd

        from rul.report import write_report

        # The run's history.csv, not its Lightning logs: a cross-fitted run keeps those per
        # fold (folds/fold-k/logs) and history.csv holds them all, one fold column.
        history_file = (model if model.is_dir() else model.parent) / "history.csv"
        history = pd.read_csv(history_file) if history_file.is_file() else None
        write_report(result, report, history)
    return result


def cmd_forecast(args: argparse.Namespace) -> int:
    from rul.io import dumps
    from rul.schedule import run_forecast

    summary = run_forecast(args.input, args.out, model_path=args.model, lead_time=args.lead_time,
                           report_path=args.report, labels_path=args.evaluate,
                           threshold=args.threshold, progress=not args.no_progress,
                           chunk_rows=args.chunk_rows, threads=args.threads,
                           scheduler=args.scheduler)
    if args.json:
        print(dumps(summary))
    else:
        print_forecast(summary)
    return 0


def print_forecast(summary: dict[str, Any]) -> None:
    print(f"forecast {summary['assets']} assets ({summary['rows']} rows) with {summary['model']} "
          f"in {summary['seconds']:.2f} s; {summary['assets_at_risk']} at risk of failing within "
          f"the horizon -> {summary['out']}")
    if summary.get("report"):
        print(f"  report: {summary['report']}")
    for row in summary.get("cost_by_lead_time", []):
        print(f"  lead time {row['lead_time']:>3}: {row['unexpected_failures']} unexpected "
              f"failures, {row['mean_unexploited_lifetime']:.1f} cycles of life unused per "
              f"maintained asset")


def load_predictor(model: Path):
    """An .onnx file runs through the torch-free Forecaster; anything else is a checkpoint."""
    if model.suffix == ".onnx":
        from rul.forecaster import Forecaster

        return Forecaster.load(model)
    from training.checkpoint import load_checkpoint

    return load_checkpoint(model)


def cmd_serve(args: argparse.Namespace) -> int:
    from service.server import serve
    from service.settings import from_env

    settings = from_env().with_overrides(model=args.model, models_dir=args.models_dir,
                                       host=args.host, port=args.port, workers=args.workers,
                                       db=args.db, ort_threads=args.ort_threads)
    serve(settings, access_log=args.access_log)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from rul.loaders import load_cmapss
    from rul.schedule import run_forecast
    from rul.simulate import SimulationConfig, simulate_fleet, write_cmapss
    from training.config import default_config, merge
    from training.run import train_run

    out: Path = args.out
    data, run = out / "data", out / "run"
    started = time.perf_counter()
    print(f"[1/4] simulating a 100-asset fleet into {data}")
    write_cmapss(simulate_fleet(SimulationConfig(assets=100, seed=args.seed)), data, "SIM")
    config = merge(default_config("SIM", "cnn"), {"train": {"max_epochs": args.max_epochs,
                                                             "seed": args.seed}})
    print(f"[2/4] training {config.data.folds} 1D-CNNs, one per fold of the training assets, "
          f"into {run} (up to {args.max_epochs} epochs each)")
    fleet = load_cmapss(data, "SIM").train
    shutil.rmtree(run, ignore_errors=True)  # the demo's own run of an earlier demo
    train_run(fleet, config, run, name="sim", progress=sys.stderr.isatty())
    print(f"[3/4] evaluating on the simulated test assets; report in {out / 'report'}")
    print_metrics(evaluate_model(run, data, "SIM", None, out / "report"))
    print(f"  predicting the training mean instead: RMSE {_mean_baseline_rmse(out):.2f}")
    print(f"[4/4] exporting to {run / 'model.onnx'} and forecasting the test fleet's "
          f"maintenance schedule")
    export_run(run, run / "model.onnx", fleet)
    print_forecast(run_forecast(data / "test_SIM.txt", out / "schedule.csv",
                                model_path=run / "model.onnx", lead_time=10,
                                report_path=out / "schedule.html",
                                labels_path=data / "RUL_SIM.txt", progress=False))
    print(f"done in {time.perf_counter() - started:.0f} s. Outputs:")
    for what, path in [("fleet", data), ("run", run), ("model", run / "model.onnx"),
                       ("report", out / "report" / "report.html"),
                       ("schedule", out / "schedule.csv"), ("", out / "schedule.html")]:
        print(f"  {what:9s}{path}")
    return 0


def print_metrics(result: dict[str, Any]) -> None:
    print(f"{result.get('subset', '')}: {result['n_assets']} test assets "
          f"(true RUL capped at {result['rul_cap']:g})")
    print(f"  RMSE {result['rmse']:.2f}  MAE {result['mae']:.2f}  "
          f"PHM08 score {result['score']:.1f}  (uncapped RMSE {result['rmse_uncapped']:.2f})")
    print(f"  failure within {result['horizon']:g} cycles: accuracy {result['accuracy']:.3f}  "
          f"precision {result['precision']:.3f}  recall {result['recall']:.3f}  "
          f"F1 {result['f1']:.3f}  AUROC {result['auroc']:.3f}  Brier {result['brier']:.4f}  "
          f"ECE {result['ece']:.4f}")
    print(f"  {result['coverage_nominal']:.0%} interval coverage {result['coverage']:.1%}")
    if "prognostic_horizon" in result:
        accuracy = ", ".join(f"{k}: {v:.2f}" for k, v in result["alpha_lambda"].items())
        print(f"  prognostic horizon {result['prognostic_horizon']:.1f} cycles; "
              f"alpha-lambda (alpha 0.2) accurate share {accuracy}")


def _mean_baseline_rmse(out: Path) -> float:
    from rul.loaders import load_cmapss
    from rul.metrics import rmse
    from rul.targets import capped, rul_per_row

    data = load_cmapss(out / "data", "SIM")
    mean = capped(rul_per_row(data.train), 125).mean()
    return rmse(capped(data.test_rul, 125), np.full(len(data.test_rul), mean))


def _print_validation(run: Path, seconds: float) -> None:
    import json

    v = json.loads((run / "metrics.json").read_text())["validation"]
    print(f"trained in {seconds:.0f} s -> {run}")
    print(f"  validation engines, each cut at random cycles: RMSE {v['rmse']:.2f}, "
          f"PHM08 score {v['score']:.1f}, F1 {v['f1']:.3f}, coverage {v['coverage']:.1%}")


def _given(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def _devices(value: str | None) -> str | int | None:
    return int(value) if value and value.isdigit() else value


if __name__ == "__main__":
    sys.exit(main())
