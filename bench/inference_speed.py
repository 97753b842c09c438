"""Inference speed: onnxruntime against torch eager, per model (prints numbers, asserts nothing).

    PYTHONPATH=. .venv/bin/python bench/inference_speed.py \
        --model runs/checkpoints/cmapss-fd001:checkpoints/cmapss-fd001.onnx [--model RUN:FILE ...]
        [--threads 2] [--batches 1 32 1024] [--latency-calls 2000] [--seconds 1] [--rounds 3]
        [--windows 2048] [--variants NAME ...] [--profile auto|always|never]
        [--core-gflops 207.5] [--data FLEET_FILE]

A short run: --latency-calls 300 --seconds 0.3 --rounds 2 --windows 1024 (a few minutes for two
models with every variant).

Each --model pairs a run directory (its checkpoint is the torch side) with the ONNX file exported
from it; a pair whose cards differ in `created`, features or window is refused. Inputs are real
raw windows (export.onnx.parity_readings) of --data, or else of the training data the card names.

One row per engine, torch and onnxruntime both held to --threads intra-op threads:
  torch eager        export.graph.ExportModel (exactly what the ONNX graph computes) called under
                     torch.inference_mode() on a prepared tensor;
  onnxruntime        the session Forecaster.load opens (ORT_ENABLE_ALL, inter-op 1), session.run
                     on a prepared float32 array;
then the rows of each of --variants (all by default):
  levels             graph optimisation DISABLE_ALL, BASIC, EXTENDED, LAYOUT (ALL is the default);
  offline            the file saved by SessionOptions.optimized_model_filepath at ALL, opened with
                     optimisation off (hardware-specific: ALL includes the NCHWc layout);
  threads            intra-op 1; allow_spinning 0; ORT_PARALLEL with inter-op --threads;
                     set_denormal_as_zero;
  int8               quantize_dynamic, QInt8 weights, per-tensor and per-channel;
  network-only       the network without the preprocessing, on normalised windows, in both
                     engines (the onnxruntime row's ratio is to torch's network-only row).

(The CNN backbone runs its convolutions as 1xK Conv2d, so the exported graph has 4-D Conv
nodes; as Conv1d, onnxruntime ran at 0.66x torch at batch 1024, see docs/PERFORMANCE.md.)

Columns: onnxruntime session creation time; p50/p99 of single-window calls after warm-up;
windows/s at each batch (batch / median call time over --seconds); the ratio to torch eager of
the same graph; GFLOP/s at the largest batch and its share of the fp32 ceiling, --core-gflops x
--threads (415 GFLOP/s for 2 cores); max |Δrul| (cycles) against torch eager on --windows
windows. Every timing is the best of --rounds rounds in which the engines take turns, so that a
burst of other load spoils a round rather than a row. --profile adds per-op tables of both
engines at the largest batch (auto: for the models where onnxruntime is slower than torch there).

FLOPs per window are 2 x the multiply-adds of the Conv, Linear and LSTM layers on one window
(convolutions and matrix products counted by torch.utils.flop_counter, LSTMs from their shapes):
  Linear   2 * in_features * out_features
  Conv     2 * (C_in / groups) * prod(kernel) * C_out * L_out
  LSTM     2 * 4 * hidden * (layer input + hidden) * steps, per layer and direction
Biases, activations, gate nonlinearities, the heads' arithmetic and the preprocessing are left out.

Timings move with other load on the machine (the load average is printed): take numbers to quote
on a quiet one.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from export.graph import ExportModel
from export.onnx import parity_readings, read_run_card, trace, training_fleet_of
from rul.errors import RulError
from rul.forecaster import INPUT, OUTPUTS, Forecaster
from rul.loaders import read_fleet
from rul.preprocessing import Preprocessing
from training.checkpoint import load_checkpoint, resolve_checkpoint

TORCH = "torch eager"
ORT = "onnxruntime (Forecaster.load)"
CPU = ["CPUExecutionProvider"]
WARMUP_CALLS = 5
MIN_CALLS = 5
LEVELS = ("ORT_DISABLE_ALL", "ORT_ENABLE_BASIC", "ORT_ENABLE_EXTENDED", "ORT_ENABLE_LAYOUT")

Call = Callable[[], Sequence[Any]]
"""A prepared inference call; its outputs start with rul."""
Runner = Callable[[np.ndarray], Call]
"""Windows -> a prepared call on them (input conversion done outside the timed call)."""


@dataclass(frozen=True)
class Settings:
    threads: int
    batches: list[int]
    latency_calls: int
    seconds: float
    rounds: int
    windows: int
    ceiling: float
    profile: str
    data: Path | None
    tmp: Path


@dataclass
class Subject:
    """One model under test: the torch module and ONNX file of one run, on real windows."""

    name: str
    backbone: str
    onnx_path: Path
    module: ExportModel
    preprocessing: Preprocessing
    windows: np.ndarray
    """[n, window, features] float32 raw readings, n >= the largest batch."""
    flops: int
    """Per window (see the module docstring)."""
    reference: np.ndarray
    """torch eager rul on the first --windows windows: what max |Δrul| compares with."""


@dataclass
class Engine:
    label: str
    open: Callable[[], Runner]
    """Opens the session (timed: the row's session ms) or wraps the module."""
    windows: np.ndarray
    against: str = TORCH
    """Label of the row whose windows/s the ratio divides by."""


@dataclass
class Row:
    model: str
    label: str
    load_ms: float | None
    """onnxruntime session creation (for Forecaster.load, with its checks); None for torch."""
    p50_us: float
    p99_us: float
    rates: dict[int, float]
    """Windows/s per batch size."""
    max_drul: float
    against: str


# --- runners -------------------------------------------------------------------------------

def torch_runner(module: nn.Module) -> Runner:
    def prepare(windows: np.ndarray) -> Call:
        tensor = torch.from_numpy(np.ascontiguousarray(windows, dtype=np.float32))

        def call() -> Sequence[Any]:
            with torch.inference_mode():
                return module(tensor)
        return call
    return prepare


def ort_runner(session: ort.InferenceSession) -> Runner:
    def prepare(windows: np.ndarray) -> Call:
        feed = {INPUT: np.ascontiguousarray(windows, dtype=np.float32)}
        return lambda: session.run(list(OUTPUTS), feed)
    return prepare


def session_options(threads: int, level: str = "ORT_ENABLE_ALL", **config: str
                    ) -> ort.SessionOptions:
    """Forecaster.load's options (intra-op `threads`, inter-op 1) at `level`, plus session config
    entries given with dots as double underscores (session__intra_op__allow_spinning="0")."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    for key, value in config.items():
        options.add_session_config_entry(key.replace("__", "."), value)
    return options


def ort_engine(label: str, path: Path, options: ort.SessionOptions, windows: np.ndarray,
               against: str = TORCH) -> Engine:
    return Engine(label, lambda: ort_runner(ort.InferenceSession(str(path), options,
                                                                 providers=CPU)),
                  windows, against)


# --- timing --------------------------------------------------------------------------------

def call_times(call: Call, calls: int, seconds: float = 0.0) -> np.ndarray:
    """Seconds per call after warm-up, for at least `calls` calls and `seconds` seconds."""
    for _ in range(WARMUP_CALLS):
        call()
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    while len(times) < calls or time.perf_counter() < deadline:
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return np.array(times)


def batch_of(windows: np.ndarray, size: int) -> np.ndarray:
    return windows[np.arange(size) % len(windows)]


def predict_rul(runner: Runner, windows: np.ndarray, batch: int) -> np.ndarray:
    parts = [np.asarray(runner(windows[i:i + batch])()[0]) for i in range(0, len(windows), batch)]
    return np.concatenate(parts).astype(np.float64)


def open_row(subject: Subject, engine: Engine, settings: Settings) -> tuple[Row, Runner]:
    """Open the engine: its row with session time and max |Δrul|, timings not yet taken."""
    start = time.perf_counter()
    runner = engine.open()
    load_ms = None if engine.label.startswith(TORCH) else (time.perf_counter() - start) * 1e3
    rul = predict_rul(runner, engine.windows[:settings.windows], max(settings.batches))
    drul = float(np.abs(rul - subject.reference).max())
    return Row(subject.name, engine.label, load_ms, math.inf, math.inf,
               dict.fromkeys(settings.batches, 0.0), drul, engine.against), runner


def time_round(row: Row, runner: Runner, windows: np.ndarray, settings: Settings) -> None:
    """One round of latency and throughput; the row keeps each figure's best round."""
    single = call_times(runner(windows[:1]), settings.latency_calls) * 1e6
    row.p50_us = min(row.p50_us, float(np.percentile(single, 50)))
    row.p99_us = min(row.p99_us, float(np.percentile(single, 99)))
    for b in settings.batches:
        seconds = call_times(runner(batch_of(windows, b)), MIN_CALLS, settings.seconds)
        row.rates[b] = max(row.rates[b], b / float(np.median(seconds)))


# --- FLOPs ---------------------------------------------------------------------------------

def lstm_flops(layer: nn.LSTM, output: Any) -> int:
    """2 x multiply-adds of one LSTM call on one window: 4 gates x hidden x (input + hidden)
    per step, layer and direction."""
    steps = output[0].shape[1 if layer.batch_first else 0]
    directions = 2 if layer.bidirectional else 1
    inputs = [layer.input_size] + [layer.hidden_size * directions] * (layer.num_layers - 1)
    return sum(2 * 4 * layer.hidden_size * (i + layer.hidden_size) * steps * directions
               for i in inputs)


def flops_per_window(module: nn.Module, window: np.ndarray) -> int:
    """torch's FLOP counter for convolutions and matrix products (however a module spells
    them), plus the LSTMs, which it does not count."""
    counted: list[int] = []
    hooks = [m.register_forward_hook(lambda m, _, out: counted.append(lstm_flops(m, out)))
             for m in module.modules() if isinstance(m, nn.LSTM)]
    try:
        with FlopCounterMode(display=False) as counter:
            torch_runner(module)(window[None])()
    finally:
        for hook in hooks:
            hook.remove()
    return counter.get_total_flops() + sum(counted)


# --- subjects and variants -----------------------------------------------------------------

def parse_pair(text: str) -> tuple[Path, Path]:
    run, sep, model = text.rpartition(":")
    if not sep or not run or not model.endswith(".onnx"):
        raise argparse.ArgumentTypeError(f"{text!r}: expected RUN_DIR:MODEL.onnx")
    return Path(run), Path(model)


def load_subject(name: str, run: Path, model: Path, settings: Settings) -> Subject:
    """The run's checkpoint as ExportModel, checked to be the source of `model`, on windows of
    --data or of the card's training data."""
    predictor = load_checkpoint(run)
    card = Forecaster.load(model, threads=settings.threads).card  # verifies file and sidecar
    run_card = read_run_card(resolve_checkpoint(run))
    differing = [k for k in ("created", "features", "window") if card.get(k) != run_card.get(k)]
    if differing:
        raise RulError(f"{model} was not exported from {run}: their cards differ in {differing}")
    fleet = read_fleet(settings.data) if settings.data else training_fleet_of(card)
    n = max(settings.windows, *settings.batches)
    windows = batch_of(parity_readings(fleet, predictor.features, predictor.window, n=n), n)
    module = ExportModel(predictor.preprocessing, predictor.network).eval()
    reference = predict_rul(torch_runner(module), windows[:settings.windows],
                            max(settings.batches))
    return Subject(name, card.get("backbone", "?"), model, module, predictor.preprocessing,
                   windows, flops_per_window(module, windows[0]), reference)


def export_module(module: nn.Module, example: np.ndarray, path: Path) -> None:
    """Trace as `rul export` does (export.onnx.trace), without the card."""
    path.write_bytes(trace(module, torch.from_numpy(example)).SerializeToString())


def level_engines(subject: Subject, settings: Settings) -> list[Engine]:
    return [ort_engine(f"ort level {level.removeprefix('ORT_')}", subject.onnx_path,
                       session_options(settings.threads, level), subject.windows)
            for level in LEVELS if hasattr(ort.GraphOptimizationLevel, level)]


def offline_engines(subject: Subject, settings: Settings) -> list[Engine]:
    path = settings.tmp / f"{subject.name}-optimised.onnx"
    options = session_options(settings.threads)
    options.optimized_model_filepath = str(path)
    ort.InferenceSession(str(subject.onnx_path), options, providers=CPU)  # writes the file
    return [ort_engine("ort offline-optimised (ALL), opened DISABLE_ALL", path,
                       session_options(settings.threads, "ORT_DISABLE_ALL"), subject.windows)]


def thread_engines(subject: Subject, settings: Settings) -> list[Engine]:
    threads, path, windows = settings.threads, subject.onnx_path, subject.windows
    parallel = session_options(threads)
    parallel.execution_mode = ort.ExecutionMode.ORT_PARALLEL
    parallel.inter_op_num_threads = threads
    return [
        ort_engine("ort intra_op 1", path, session_options(1), windows),
        ort_engine(f"ort intra_op {threads}, allow_spinning 0", path,
                   session_options(threads, session__intra_op__allow_spinning="0"), windows),
        ort_engine(f"ort PARALLEL, inter_op {threads}", path, parallel, windows),
        ort_engine("ort set_denormal_as_zero", path,
                   session_options(threads, session__set_denormal_as_zero="1"), windows),
    ]


def int8_engines(subject: Subject, settings: Settings) -> list[Engine]:
    """quantize_dynamic (QInt8 weights) after quant_pre_process, whose constant folding turns
    the exporter's sliced LSTM weights into initializers that it can quantise."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = settings.tmp / f"{subject.name}-prepared.onnx"
    quant_pre_process(str(subject.onnx_path), str(prepared))
    engines = []
    for per_channel in (False, True):
        path = settings.tmp / f"{subject.name}-int8-{per_channel}.onnx"
        quantize_dynamic(prepared, path, weight_type=QuantType.QInt8, per_channel=per_channel)
        label = f"ort int8 dynamic, {'per-channel' if per_channel else 'per-tensor'}"
        engines.append(ort_engine(label, path, session_options(settings.threads),
                                  subject.windows))
    return engines


def network_engines(subject: Subject, settings: Settings) -> list[Engine]:
    """The network alone on normalised windows: what the preprocessing costs each engine."""
    module = copy.deepcopy(subject.module)
    module.preprocessing = nn.Identity()
    normalised = subject.preprocessing.transform(subject.windows).astype(np.float32)
    path = settings.tmp / f"{subject.name}-network.onnx"
    export_module(module, normalised[:2], path)
    label = f"{TORCH}, network only"
    return [Engine(label, lambda: torch_runner(module), normalised),
            ort_engine("ort network only (no preprocessing)", path,
                       session_options(settings.threads), normalised, against=label)]


VARIANTS: dict[str, Callable[[Subject, Settings], list[Engine]]] = {
    "levels": level_engines,
    "offline": offline_engines,
    "threads": thread_engines,
    "int8": int8_engines,
    "network-only": network_engines,
}


# --- profiles ------------------------------------------------------------------------------

def ort_profile(path: Path, subject: Subject, settings: Settings, calls: int
                ) -> list[tuple[str, int, float]]:
    """(op type, nodes, µs per call) of a file opened as Forecaster.load opens it, at the
    largest batch; each node's time is its median over the calls."""
    options = session_options(settings.threads)
    options.enable_profiling = True
    options.profile_file_prefix = str(settings.tmp / f"{path.stem}-profile")
    session = ort.InferenceSession(str(path), options, providers=CPU)
    call = ort_runner(session)(batch_of(subject.windows, max(settings.batches)))
    for _ in range(calls):
        call()
    events = json.loads(Path(session.end_profiling()).read_text())
    per_node: dict[tuple[str, str], list[float]] = defaultdict(list)
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            per_node[event["args"]["op_name"], event["name"]].append(event["dur"])
    by_op: dict[str, list[float]] = defaultdict(list)
    for (op, _), durations in per_node.items():
        by_op[op].append(statistics.median(durations))
    return sorted(((op, len(t), sum(t)) for op, t in by_op.items()), key=lambda r: -r[2])


def torch_profile(subject: Subject, settings: Settings, calls: int
                  ) -> list[tuple[str, int, float]]:
    """(aten op, calls per forward, self µs per call) of torch eager at the largest batch."""
    call = torch_runner(subject.module)(batch_of(subject.windows, max(settings.batches)))
    for _ in range(WARMUP_CALLS):
        call()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        for _ in range(calls):
            call()
    rows = [(e.key, e.count // calls, e.self_cpu_time_total / calls)
            for e in profile.key_averages()]
    return sorted(rows, key=lambda r: -r[2])


def profile_table(title: str, counted: str, rows: list[tuple[str, int, float]],
                  top: int = 8) -> str:
    total = sum(r[2] for r in rows) or 1.0
    body = [[op, str(n), f"{us:,.0f}", f"{us / total:.0%}"] for op, n, us in rows[:top]]
    return f"{title}\n\n" + markdown(["op", counted, "µs per call", "share"], body)


# --- output --------------------------------------------------------------------------------

def markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = [header, ["---"] * len(header), *rows]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in lines)


def results_table(rows: list[Row], subjects: dict[str, Subject], settings: Settings) -> str:
    largest = max(settings.batches)
    header = ["model", "engine / variant", "session ms", "p50 µs", "p99 µs",
              *[f"w/s @{b}" for b in settings.batches],
              *[f"×torch @{b}" for b in settings.batches],
              f"GFLOP/s @{largest}", f"% of {settings.ceiling:g}", "max |Δrul|"]
    rates = {(r.model, r.label): r.rates for r in rows}
    body = []
    for r in rows:
        subject = subjects[r.model]
        against = rates[r.model, r.against]
        gflops = subject.flops * r.rates[largest] / 1e9
        load = "–" if r.load_ms is None else f"{r.load_ms:.0f}"
        body.append([f"{r.model} ({subject.backbone})", r.label, load,
                     f"{r.p50_us:.0f}", f"{r.p99_us:.0f}",
                     *[f"{r.rates[b]:,.0f}" for b in settings.batches],
                     *[f"{r.rates[b] / against[b]:.2f}" for b in settings.batches],
                     f"{gflops:.1f}", f"{gflops / settings.ceiling:.1%}", f"{r.max_drul:.2g}"])
    return markdown(header, body)


def environment(settings: Settings) -> str:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (f"{cpu_name()}, {os.cpu_count()} CPUs, load average {load}; threads "
            f"{settings.threads}, fp32 ceiling {settings.ceiling:g} GFLOP/s; torch "
            f"{torch.__version__}, onnxruntime {ort.__version__}, python "
            f"{platform.python_version()}")


def cpu_name() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.machine()
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return names[0] if names else platform.machine()


# --- main ----------------------------------------------------------------------------------

def run_model(name: str, run: Path, model: Path, settings: Settings, variants: list[str]
              ) -> tuple[Subject, list[Row], list[str]]:
    """All rows of one model, and its profile tables."""
    print(f"{name}: {run} : {model}", file=sys.stderr, flush=True)
    subject = load_subject(name, run, model, settings)
    engines = [Engine(TORCH, lambda: torch_runner(subject.module), subject.windows),
               Engine(ORT, lambda: ort_runner(Forecaster.load(model,
                                                              threads=settings.threads).session),
                      subject.windows)]
    for variant in variants:
        engines += VARIANTS[variant](subject, settings)
    opened = []
    for engine in list(engines):
        try:
            opened.append(open_row(subject, engine, settings))
        except Exception as exc:  # a variant onnxruntime cannot run is a finding, not a crash
            if engine.label in (TORCH, ORT):
                raise
            print(f"  {name}: {engine.label} left out, it failed: {str(exc).splitlines()[0]}",
                  file=sys.stderr, flush=True)
            engines.remove(engine)
    for i in range(settings.rounds):
        print(f"  {name}: round {i + 1} of {settings.rounds}", file=sys.stderr, flush=True)
        for engine, (row, runner) in zip(engines, opened, strict=True):
            time_round(row, runner, engine.windows, settings)
    rows = [row for row, _ in opened]
    return subject, rows, profiles(subject, rows, settings)


def profiles(subject: Subject, rows: list[Row], settings: Settings) -> list[str]:
    """Per-op tables at the largest batch: the Forecaster.load graph and torch eager."""
    largest = max(settings.batches)
    rates = {r.label: r.rates[largest] for r in rows}
    slower = rates[ORT] < rates[TORCH]
    if settings.profile == "never" or (settings.profile == "auto" and not slower):
        return []
    calls = max(MIN_CALLS, min(50, 20_000 // largest))
    where = f"{subject.name} ({subject.backbone}), batch {largest}, {calls} calls"
    tables = [profile_table(f"### {ORT} profile: {where}", "nodes",
                            ort_profile(subject.onnx_path, subject, settings, calls))]
    return [*tables, profile_table(f"### {TORCH} profile: {where}", "per forward",
                                   torch_profile(subject, settings, calls))]


def model_names(pairs: list[tuple[Path, Path]]) -> list[str]:
    """Each model's run directory name, numbered where two are the same."""
    names = [run.name for run, _ in pairs]
    return [n if names.count(n) == 1 else f"{n}#{i + 1}" for i, n in enumerate(names)]


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=parse_pair, action="append", required=True,
                   metavar="RUN_DIR:MODEL.onnx", help="a run directory and the ONNX file "
                   "exported from it; repeat for more models")
    p.add_argument("--threads", type=int, default=2, help="intra-op threads of both engines")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 32, 1024])
    p.add_argument("--latency-calls", type=int, default=2000,
                   help="single-window calls timed for p50/p99 (after warm-up)")
    p.add_argument("--seconds", type=float, default=1.0,
                   help="time at each batch size per row and round (at least 5 calls)")
    p.add_argument("--rounds", type=int, default=3,
                   help="rounds in which the engines take turns; each figure is its best round")
    p.add_argument("--windows", type=int, default=2048, help="windows for max |Δrul|")
    p.add_argument("--variants", nargs="*", choices=list(VARIANTS), default=list(VARIANTS),
                   help="onnxruntime variants to add (none: give the flag alone)")
    p.add_argument("--profile", choices=["auto", "always", "never"], default="auto",
                   help="per-op profiles at the largest batch (auto: where ort < torch)")
    p.add_argument("--core-gflops", type=float, default=207.5,
                   help="fp32 GFLOP/s ceiling of one core; the %% column divides by it x "
                   "--threads (default: 2 AVX-512 FMA units x 16 lanes x 2 x ~3.25 GHz)")
    p.add_argument("--data", type=Path, help="fleet file for the windows (default: the "
                   "training data named in each model card)")
    args = p.parse_args(argv)
    return args, [sys.executable, *(sys.argv if argv is None else [__file__, *argv])]


def main(argv: list[str] | None = None) -> int:
    args, command = parse_args(argv)
    torch.set_num_threads(args.threads)
    ort.set_default_logger_severity(3)  # the offline-optimised file's hardware warning
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(args.threads, args.batches, args.latency_calls, args.seconds,
                            args.rounds, args.windows, args.core_gflops * args.threads,
                            args.profile, args.data, Path(tmp))
        header = f"`{shlex.join(command)}`\n\n{environment(settings)}\n"
        try:
            results = [run_model(name, run, model, settings, args.variants)
                       for name, (run, model) in zip(model_names(args.model), args.model,
                                                     strict=True)]
        except RulError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    subjects = {s.name: s for s, _, _ in results}
    flops = ", ".join(f"{s.name} {s.flops / 1e6:.2f} MFLOP" for s in subjects.values())
    print(f"{header}\nFLOPs per window: {flops}\n")
    print(results_table([r for _, rows, _ in results for r in rows], subjects, settings))
    for _, _, tables in results:
        for table in tables:
            print(f"\n{table}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
