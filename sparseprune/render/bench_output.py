"""`bench` and `export` results: JSON documents, CSV/Markdown rows, rich tables (no math)."""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from sparseprune.render.sizes import size_change
from sparseprune.render.tabular import Rows

if TYPE_CHECKING:  # result types only: rendering never loads the Keras side
    from sparseprune.keras_ops.bench import BenchResult
    from sparseprune.keras_ops.export import ExportResult
    from sparseprune.keras_ops.serving import ServingResult

COUNT_KEYS = ("file_size", "params", "nonzero_params", "macs", "macs_nonzero")
LATENCY_KEYS = ("batch_size", "median_ms", "p90_ms", "spread", "throughput")
CHECK_KEYS = ("samples", "max_abs_diff", "mean_abs_diff", "top1_agreement")


def document(result: BenchResult | ExportResult | ServingResult) -> dict[str, Any]:
    return asdict(result)


def rows(result: BenchResult) -> Rows:
    """One row per model and batch size: counts repeated, then that batch's latency."""
    table = [
        (
            model["path"],
            model["format"],
            *(model[k] for k in COUNT_KEYS),
            *(t[k] for k in LATENCY_KEYS),
        )
        for model in result.models
        for t in model["latency"]
    ]
    return Rows(("model", "format", *COUNT_KEYS, *LATENCY_KEYS), table)


def serving_rows(result: ServingResult) -> Rows:
    """One row per serving path and batch size."""
    columns = ("path", "batch_size", "median_ms", "p90_ms", "speedup_vs_baseline", "max_abs_diff")
    return Rows(
        columns,
        [
            (
                name,
                batch["batch_size"],
                batch["paths"][name]["median_ms"],
                batch["paths"][name]["p90_ms"],
                batch["speedup_vs_baseline"][name],
                batch["paths"][name]["max_abs_diff"],
            )
            for batch in result.batches
            for name in result.paths
        ],
    )


def export_rows(result: ExportResult) -> Rows:
    """One row: the conversion, its sizes and (with --data) the output check."""
    check = result.check or {}
    columns = ("model", "output", "quantize", "sparsity_optimization", "input_size")
    values = (result.model, result.output, result.quantize, result.sparsity_optimization)
    return Rows(
        (*columns, "output_size", *CHECK_KEYS),
        [(*values, result.input_size, result.output_size, *(check.get(k) for k in CHECK_KEYS))],
    )


def _count(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}x"


def print_bench(console: Console, result: BenchResult) -> None:
    """One table of sizes and counts, one of latency per batch size, then ratios to model A."""
    console.print(_counts_table(result.models))
    console.print(_latency_table(result.models))
    for ratio in result.ratios:
        console.print(_ratio_line(ratio))
    settings = result.settings
    threads = settings["threads"]
    console.print(
        f"[dim]{settings['repeats']} timed runs after {settings['warmup']} warm-up per batch size; "
        f"threads intra {threads['intra_op']}, inter {threads['inter_op']}, "
        f"tflite {threads['tflite']}; MACs per sample (Dense/Conv/Depthwise/Separable kernels)[/]"
    )
    if not threads["pinned"]:
        console.print(
            "[yellow]warning:[/] TensorFlow was already running, so its thread pools could not "
            "be pinned; latencies are not comparable with other runs."
        )


def _counts_table(models: list[dict[str, Any]]) -> Table:
    table = Table()
    for name in ("model", "format", "file size", "params", "nonzero", "MACs", "nonzero MACs"):
        table.add_column(name, justify="left" if name in ("model", "format") else "right")
    for model in models:
        table.add_row(
            escape(model["path"]),
            model["format"],
            _count(model["file_size"]),
            _count(model["params"]),
            _count(model["nonzero_params"]),
            _count(model["macs"]),
            _count(model["macs_nonzero"]),
        )
    return table


def _latency_table(models: list[dict[str, Any]]) -> Table:
    table = Table()
    table.add_column("model")
    for name in ("batch", "median ms", "p90 ms", "p90/median", "samples/s"):
        table.add_column(name, justify="right")
    for model in models:
        for row in model["latency"]:
            table.add_row(
                escape(model["path"]),
                str(row["batch_size"]),
                f"{row['median_ms']:.3f}",
                f"{row['p90_ms']:.3f}",
                "-" if row["spread"] is None else f"{row['spread']:.2f}",
                "-" if row["throughput"] is None else f"{row['throughput']:,.0f}",
            )
    return table


def _ratio_line(ratio: dict[str, Any]) -> str:
    latency = ", ".join(f"batch {b} {_ratio(v)}" for b, v in ratio["latency"].items())
    return (
        f"{escape(ratio['model'])} / {escape(ratio['baseline'])}: latency {latency}; "
        f"params {_ratio(ratio['params'])}, nonzero {_ratio(ratio['nonzero_params'])}, "
        f"MACs {_ratio(ratio['macs'])}, nonzero MACs {_ratio(ratio['macs_nonzero'])}, "
        f"size {_ratio(ratio['file_size'])}"
    )


def print_export(console: Console, result: ExportResult) -> None:
    """Sizes before and after, the optimizations used, and the Keras-vs-TFLite check."""
    options = ["sparsity" if result.sparsity_optimization else "no sparsity"]
    if result.quantize:
        options.append(str(result.quantize))
    console.print(
        f"{escape(result.model)} -> {escape(result.output)}  ({', '.join(options)})\n"
        f"size: {size_change(result.input_size, result.output_size)}"
    )
    if result.layers:
        console.print(layer_runs_table(result.layers))
    check = result.check
    if check is None:
        console.print("[dim]outputs not compared (pass --data to compare Keras and TFLite)[/]")
        return
    agreement = check["top1_agreement"]
    top1 = "" if agreement is None else f", top-1 agreement {agreement:.1%}"
    console.print(
        f"Keras vs TFLite on {check['samples']} samples of {escape(check['data'])}: "
        f"max |Δ| {check['max_abs_diff']:.3g}, mean |Δ| {check['mean_abs_diff']:.3g}{top1}"
    )


RUN_STYLES = {"sparse": "green", "densified": "yellow", "dense": "dim"}


def layer_runs_table(rows: list[dict[str, Any]]) -> Table:
    """Per weight-carrying op: how LiteRT runs the kernel, read from the converted flatbuffer."""
    table = Table(title="how LiteRT runs each kernel (read from the .tflite)", title_justify="left")
    for name in ("layer", "op", "zeros", "4x1 zero", "runs", "why"):
        table.add_column(name, justify="right" if name in ("zeros", "4x1 zero") else "left")
    for row in rows:
        style = RUN_STYLES.get(row["runs"], "")
        table.add_row(
            escape(row["layer"] or row["tensor"]),
            row["op"],
            _percent(row["zero_fraction"]),
            _percent(row["block_fraction"]),
            f"[{style}]{row['runs']}[/]",
            escape(row["reason"]),
        )
    return table


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def print_serving(console: Console, serving: ServingResult) -> None:
    """Median latency per serving path and batch size, speed-ups against the compiled call."""
    result = asdict(serving)
    table = Table(title=escape(f"{result['model']}: serving paths"), title_justify="left")
    table.add_column("path")
    for batch in result["batches"]:
        size = batch["batch_size"]
        table.add_column(f"batch {size} ms", justify="right")
        table.add_column(f"vs {result['baseline']}", justify="right")
    for name in result["paths"]:
        cells = []
        for batch in result["batches"]:
            cells += [
                f"{batch['paths'][name]['median_ms']:.3f}",
                f"{batch['speedup_vs_baseline'][name]:.2f}x",
            ]
        table.add_row(name, *cells)
    console.print(table)
    ratios = ", ".join(
        f"batch {b['batch_size']}: {b['sparse_vs_dense_litert']:.2f}x" for b in result["batches"]
    )
    console.print(f"LiteRT sparse vs LiteRT dense (the zeros' own effect): {ratios}")
    worst = {
        name: max(b["paths"][name]["max_abs_diff"] for b in result["batches"])
        for name in result["paths"]
    }
    shown = ", ".join(f"{name} {value:.2g}" for name, value in worst.items())
    console.print(f"max |Δ| of outputs against {result['baseline']}: {shown}")
    if result["layers"]:
        console.print(layer_runs_table(result["layers"]))
    if result["verdict"]:
        console.print(f"[yellow]{escape(result['verdict'])}[/]")
    settings = result["settings"]
    console.print(
        f"[dim]{settings['repeats']} timed calls per path after {settings['warmup']} warm-up, "
        f"interleaved; {settings['threads']['tflite']} thread(s); "
        f"{escape(settings['litert_runtime'])}; higher is faster[/]"
    )
    for name, text in result["paths"].items():
        console.print(f"[dim]{name}: {escape(text)}[/]")
