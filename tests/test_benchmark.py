"""Tests of rnnkit.benchmark and benchmarks/bench_rnn.py: structure, never speed."""

from __future__ import annotations

import argparse
import concurrent.futures
import importlib.util
import json
import logging
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from rnnkit import benchmark
from rnnkit.benchmark import BenchmarkConfig, format_table, run_benchmark
from rnnkit.compiled import available as compiled_available
from rnnkit.compiled import large_gemm_library as compiled_large_gemm_library
from rnnkit.cpu import has_avx512

TINY = (5, 2, 3, 4)  # (T, N, H_in, H_out)
IMPL_KEYS = {
    "median_ms",
    "iqr_ms",
    "peak_bytes",
    "peak_torch_bytes",
    "peak_python_bytes",
    "peak_x_output",
}


def tiny_config(**overrides):
    fields = {
        "shapes": (TINY,),
        "layers": (1, 2),
        "threads": (1,),
        "repeats": 2,
        "warmup": 1,
    }
    fields.update(overrides)
    return BenchmarkConfig(**fields)


@pytest.fixture(scope="module")
def results():
    return run_benchmark(tiny_config())


def test_one_row_per_case_in_grid_order(results):
    cases = [(r["num_layers"], r["bidirectional"], r["mode"]) for r in results]
    assert cases == [
        (layers, bidirectional, mode)
        for layers in (1, 2)
        for bidirectional in (False, True)
        for mode in ("inference", "train")
    ]
    for row in results:
        assert (row["T"], row["N"], row["H_in"], row["H_out"]) == TINY
        assert row["threads"] == 1
        assert row["repeats"] == 2
        assert isinstance(row["noisy"], bool)
        assert row["load_average"] is None or row["load_average"] >= 0


def test_ratios_and_times_are_positive_finite(results):
    for row in results:
        assert math.isfinite(row["ratio"]) and row["ratio"] > 0
        for name in ("torch", "rnnkit"):
            assert set(row[name]) == IMPL_KEYS
            assert math.isfinite(row[name]["median_ms"]) and row[name]["median_ms"] > 0
            assert row[name]["iqr_ms"] >= 0
        assert row["ratio"] == pytest.approx(row["torch"]["median_ms"] / row["rnnkit"]["median_ms"])


def test_peak_memory_covers_at_least_the_output(results):
    for row in results:
        directions = 2 if row["bidirectional"] else 1
        assert row["output_bytes"] == 5 * 2 * directions * 4 * 4
        for name in ("torch", "rnnkit"):
            impl = row[name]
            assert impl["peak_bytes"] == impl["peak_torch_bytes"] + impl["peak_python_bytes"]
            # Each call allocates the output it returns, and the profiler sees it.
            assert impl["peak_torch_bytes"] >= row["output_bytes"]
            assert impl["peak_x_output"] == pytest.approx(impl["peak_bytes"] / row["output_bytes"])


def test_implementations_agree_on_the_same_weights(results):
    for row in results:
        assert 0 <= row["max_rel_diff"] < 1e-4


def test_results_are_json_ready(results):
    assert json.loads(json.dumps(results)) == results


def test_leaves_threads_and_random_state_as_they_were():
    threads = torch.get_num_threads()
    rng = torch.get_rng_state()
    run_benchmark(tiny_config(layers=(1,), bidirectional=(False,), modes=("inference",)))
    assert torch.get_num_threads() == threads
    assert torch.equal(torch.get_rng_state(), rng)


@pytest.mark.skipif(not compiled_available(), reason="numba or scipy not installed")
def test_waits_for_each_cells_kernels_before_timing(monkeypatch):
    """Under "auto", the first calls of a fresh cache run torch ops while the kernels
    compile: the benchmark times the engine once they are ready."""
    from rnnkit.compiled import warmup

    waited = []
    monkeypatch.setattr(warmup, "wait", lambda dtype, cell="rnn": waited.append((dtype, cell)))
    config = tiny_config(cells=("gru", "rnn"), layers=(1,), bidirectional=(False,),
                         modes=("inference",), measure_memory=False)  # fmt: skip
    run_benchmark(config)
    assert waited == [(torch.float32, "gru"), (torch.float32, "rnn")]


def test_memory_can_be_skipped():
    (row,) = run_benchmark(
        tiny_config(layers=(1,), bidirectional=(False,), modes=("train",), measure_memory=False)
    )
    for name in ("torch", "rnnkit"):
        assert row[name]["peak_bytes"] is None
        assert row[name]["peak_x_output"] is None
    assert "n/a" in format_table([row])


class _ShiftedRNN(nn.RNN):
    """A wrong candidate: its output is off by one."""

    def forward(self, input, hx=None):
        output, h_n = super().forward(input, hx)
        return output + 1, h_n


def test_disagreeing_candidate_is_reported(caplog):
    config = tiny_config(layers=(1,), bidirectional=(False,), modes=("inference",))
    with caplog.at_level(logging.WARNING, logger="rnnkit.benchmark"):
        (row,) = run_benchmark(config, candidate=_ShiftedRNN)
    assert row["max_rel_diff"] > 1e-4
    assert "disagree" in caplog.text


def test_plain_table_has_header_rule_rows_and_summary(results):
    lines = format_table(results).splitlines()
    assert len(lines) == 2 + len(results) + 1
    assert lines[0].split()[:2] == ["shape", "TxNxH_inxH_out"]
    assert set(lines[1].replace(" ", "")) == {"-"}
    assert lines[2].startswith("5x2x3x4")
    assert lines[-1].startswith("rnnkit is slower than torch.nn.RNN in ")
    assert f" of {len(results)} rows" in lines[-1]


def test_markdown_table(results):
    lines = format_table(results, markdown=True).splitlines()
    assert all(line.startswith("|") and line.endswith("|") for line in lines[: 2 + len(results)])
    assert lines[1].startswith("|---|---:|")
    assert lines[2 + len(results)] == ""
    assert lines[-1].startswith("rnnkit is slower than torch.nn.RNN in ")


def test_summary_counts_rows_where_rnnkit_is_slower(results):
    rows = [dict(results[0], ratio=0.5, noisy=False), dict(results[1], ratio=2.0, noisy=False)]
    summary = benchmark.summarize(rows)
    assert summary.startswith(
        "rnnkit is slower than torch.nn.RNN in 1 of 2 rows; geometric-mean ratio all 1.00"
    )
    assert "noisy" not in summary


def test_noisy_rows_are_marked(results):
    rows = [dict(results[0], ratio=2.0, noisy=True), dict(results[1], ratio=2.0, noisy=False)]
    table = format_table(rows).splitlines()
    assert "2.00*" in table[2]
    assert "2.00*" not in table[3]
    assert "; noisy rows (*: an interquartile range above 25% of the median): 1;" in table[-1]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("threads", (0,), "`threads`, expected positive integers, got \\(0,\\)"),
        ("shapes", ((5, 2, 3),), "`shapes`, expected \\(T, N, H_in, H_out\\)"),
        ("modes", ("predict",), "`modes`, expected a subset of"),
        ("layers", (), "`layers`, expected at least one value, got none"),
        ("repeats", 0, "`repeats`, expected a positive integer or None, got 0"),
        ("budget_s", 0.0, "`budget_s`, expected a positive number of seconds, got 0.0"),
        ("bidirectional", (1,), "`bidirectional`, expected booleans, got \\(1,\\)"),
    ],
)
def test_config_rejects_invalid_values(field, value, message):
    with pytest.raises(ValueError, match=message):
        BenchmarkConfig(**{field: value})


def test_config_turns_lists_into_tuples():
    config = BenchmarkConfig(shapes=[[5, 2, 3, 4]], threads=[1])
    assert config.shapes == ((5, 2, 3, 4),)
    assert config.threads == (1,)


@pytest.mark.parametrize("text", ["100,30,4,64", "100x30x4x64"])
def test_parse_shape(text):
    assert benchmark.parse_shape(text) == (100, 30, 4, 64)


@pytest.mark.parametrize("text", ["100,30,4", "100,30,4,0", "a,b,c,d"])
def test_parse_shape_rejects(text):
    with pytest.raises(argparse.ArgumentTypeError, match="expected T,N,H_in,H_out"):
        benchmark.parse_shape(text)


def parse(argv):
    parser = argparse.ArgumentParser()
    benchmark.add_arguments(parser)
    return benchmark.config_from_args(parser.parse_args(argv))


def test_config_from_args_defaults_and_overrides():
    assert parse([]) == BenchmarkConfig()
    quick = parse(["--quick", "--threads", "1"])
    assert quick.shapes == (benchmark.REFERENCE_SHAPE,)
    assert quick.threads == (1,)
    assert quick.budget_s < BenchmarkConfig().budget_s
    config = parse(["--bidirectional", "1", "--shapes", "5x2x3x4", "--no-memory"])
    assert config.bidirectional == (True,)
    assert config.shapes == (TINY,)
    assert config.measure_memory is False


@pytest.fixture(scope="module")
def gated_results():
    return run_benchmark(tiny_config(cells=benchmark.CELLS, layers=(2,)))


def test_every_cell_runs_against_its_torch_layer_in_grid_order(gated_results):
    cases = [(r["cell"], r["bidirectional"], r["mode"]) for r in gated_results]
    assert cases == [
        (cell, bidirectional, mode)
        for cell in ("rnn", "lstm", "gru")
        for bidirectional in (False, True)
        for mode in ("inference", "train")
    ]
    for row in gated_results:
        assert 0 <= row["max_rel_diff"] < 1e-4, row["cell"]
        assert row["ratio"] == pytest.approx(row["torch"]["median_ms"] / row["rnnkit"]["median_ms"])
        assert row["bound_ms"] > 0 and math.isfinite(row["bound_fraction"])
        assert row["rnnkit"]["peak_torch_bytes"] >= row["output_bytes"]
    assert json.loads(json.dumps(gated_results)) == gated_results


def test_lstm_rows_alone_carry_the_onednn_off_baseline(gated_results):
    for row in gated_results:
        off = row[benchmark.ONEDNN_OFF]
        if row["cell"] != "lstm":
            assert off is None and row["ratio_onednn_off"] is None
            continue
        assert set(off) == IMPL_KEYS and off["peak_torch_bytes"] >= row["output_bytes"]
        assert row["ratio_onednn_off"] == pytest.approx(
            off["median_ms"] / row["rnnkit"]["median_ms"]
        )


def test_table_of_several_cells_names_the_cell_and_the_onednn_off_columns(gated_results):
    lines = format_table(gated_results).splitlines()
    assert lines[0].split()[:3] == ["cell", "shape", "TxNxH_inxH_out"]
    assert "no-oneDNN ms" in lines[0] and "ratio no-oneDNN" in lines[0]
    assert "no-oneDNN peak" in lines[0]
    rows = lines[2 : 2 + len(gated_results)]
    assert [row.split()[0] for row in rows] == [r["cell"] for r in gated_results]
    for line, row in zip(rows, gated_results, strict=True):
        # three "-" cells (time, ratio, peak) where there is no second baseline
        assert line.split().count("-") == (0 if row["cell"] == "lstm" else 3), line
    assert [line.split(" in ")[0] for line in lines[-3:]] == [
        f"rnnkit is slower than torch.nn.{name}" for name in ("RNN", "LSTM", "GRU")
    ]
    assert "than torch.nn.LSTM with oneDNN off (no-oneDNN) in " in lines[-2]
    assert "; with oneDNN off all " in lines[-2]
    markdown = format_table(gated_results, markdown=True).splitlines()
    assert markdown[0].startswith("| cell | shape TxNxH_inxH_out |")
    assert markdown[2 + len(gated_results) :: 2] == [""] * 3  # a paragraph per cell


def test_table_of_gated_cells_alone_drops_the_baseline_it_lacks(gated_results):
    gru = [row for row in gated_results if row["cell"] == "gru"]
    header = format_table(gru).splitlines()[0]
    assert header.startswith("cell ") and "oneDNN" not in header


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_quick_config_runs_each_cell(cell):
    config = BenchmarkConfig.quick(
        cells=(cell,), layers=(1,), bidirectional=(True,), threads=(1,), repeats=1
    )
    rows = run_benchmark(config)
    assert [(row["cell"], row["mode"]) for row in rows] == [(cell, "inference"), (cell, "train")]
    assert all(row["max_rel_diff"] < 1e-4 for row in rows)
    assert all((row[benchmark.ONEDNN_OFF] is not None) == (cell == "lstm") for row in rows)


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="torch without oneDNN")
def test_onednn_off_baseline_leaves_onednn_and_takes_torchs_other_path():
    from torch.profiler import profile

    steps = benchmark._make_steps(nn.LSTM, (5, 2, 3, 4), 1, False, "train", seed=0, cell="lstm")
    assert list(steps) == ["torch", benchmark.ONEDNN_OFF, "rnnkit"]
    ops = {}
    for name in ("torch", benchmark.ONEDNN_OFF):
        with profile() as prof:
            steps[name]()
        ops[name] = {event.name for event in prof.events()}
    assert "aten::mkldnn_rnn_layer" in ops["torch"]
    assert "aten::mkldnn_rnn_layer" not in ops[benchmark.ONEDNN_OFF]
    assert torch.backends.mkldnn.enabled  # switched back on after the call


def test_cell_option_defaults_to_rnn_and_all_means_every_cell():
    assert parse([]).cells == ("rnn",)
    assert parse(["--cell", "all"]).cells == ("rnn", "lstm", "gru")
    assert parse(["--cell", "gru", "lstm", "gru"]).cells == ("gru", "lstm")
    assert parse(["--quick", "--cell", "lstm"]).cells == ("lstm",)


def test_config_rejects_an_unknown_cell():
    expected = re.escape("`cells`, expected a subset of ('rnn', 'lstm', 'gru'), got ('lstmx',)")
    with pytest.raises(ValueError, match=expected):
        BenchmarkConfig(cells=("lstmx",))
    with pytest.raises(ValueError, match="`cells`, expected at least one value, got none"):
        BenchmarkConfig(cells=())


def test_script_rejects_an_unknown_cell_in_one_line(capsys):
    assert load_script().main(["--cell", "lstmx"]) == 2
    err = capsys.readouterr().err
    assert "argument --cell: invalid choice: 'lstmx'" in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_script_json_records_the_cell(tmp_path, capsys):
    out = tmp_path / "results.json"
    argv = ["--cell", "lstm", "--shapes", "5,2,3,4", "--layers", "1", "--bidirectional", "0"]
    argv += ["--threads", "1", "--modes", "inference", "--repeats", "1", "--warmup", "1"]
    assert load_script().main([*argv, "--quiet", "--markdown", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| lstm | 5x2x3x4 | 1 | uni | inference | 1 |" in printed
    report = json.loads(out.read_text())
    assert report["config"]["cells"] == ["lstm"]
    assert report["environment"]["onednn"] == torch.backends.mkldnn.is_available()
    (row,) = report["results"]
    assert row["cell"] == "lstm" and row["torch_onednn_off"]["median_ms"] > 0


def load_script(name: str = "bench_rnn"):
    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_script_prints_table_and_writes_json(tmp_path, capsys):
    out = tmp_path / "results.json"
    argv = ["--shapes", "5,2,3,4", "--layers", "1", "--bidirectional", "0", "--threads", "1"]
    argv += ["--modes", "train", "--repeats", "1", "--warmup", "1", "--quiet", "--markdown"]
    assert load_script().main([*argv, "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("| shape TxNxH_inxH_out |")
    assert "| 5x2x3x4 | 1 | uni | train | 1 |" in printed
    report = json.loads(out.read_text())
    assert set(report) == {"environment", "config", "results"}
    expected = compiled_large_gemm_library() if compiled_available() else None
    assert report["environment"]["large_gemm_library"] == expected
    # which of the engine's measured rules the timings ran under
    assert report["environment"]["avx512"] == (has_avx512() if compiled_available() else None)
    assert report["environment"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert len(report["results"]) == 1
    assert report["config"]["repeats"] == 1


def table_rows(printed: str, columns: int) -> list[list[str]]:
    """The data rows of a markdown table in `printed`, each checked to have `columns` cells."""
    rows = [line.strip("|").split("|") for line in printed.splitlines() if line.startswith("| ")]
    assert rows and all(len(row) == columns for row in rows), printed
    return [[cell.strip() for cell in row] for row in rows[1:]]  # below the header


@pytest.mark.skipif(not compiled_available(), reason="numba or scipy not installed")
def test_engine_comparison_prints_a_ratio_per_engine_and_restores_the_engine(monkeypatch, capsys):
    monkeypatch.setenv("RNNKIT_ENGINE", "reference")
    argv = ["--shapes", "5,2,3,4", "--layers", "1", "--threads", "1", "--modes", "train"]
    assert load_script("compare_engines").main([*argv, "--repeats", "1"]) == 0
    rows = table_rows(capsys.readouterr().out, columns=8)
    assert [row[:5] for row in rows] == [["5x2x3x4", "1", d, "train", "1"] for d in ("uni", "bi")]
    assert all(float(cell) > 0 for row in rows for cell in row[5:])
    assert os.environ["RNNKIT_ENGINE"] == "reference"


@pytest.mark.skipif(not compiled_available(), reason="numba or scipy not installed")
def test_blas_comparison_times_each_library_and_torch(capsys):
    argv = ["--products", "2x3x4", "T300x4x1024", "16x64x256", "--threads", "1"]
    assert load_script("compare_blas").main(argv) == 0
    small, large, step = table_rows(capsys.readouterr().out, columns=7)
    assert small[:2] == ["2x3x4", "1"] and all(float(cell) > 0 for cell in small[2:6])
    assert small[6] == "scipy" and large[:2] == ["T300x4x1024", "1"]
    assert large[4] == "-"  # brgemm takes no transposed operand
    assert large[6] == compiled_large_gemm_library()  # transposed: not a tall exception
    assert step[6] == "brgemm"  # a per-step product at one thread


def test_interleave_effect_prints_alone_and_interleaved_times(capsys):
    argv = ["--shape", "5,2,3,4", "--repeats", "3"]
    assert load_script("interleave_effect").main(argv) == 0
    printed = capsys.readouterr().out
    rows = table_rows(printed, columns=4)
    assert [row[0] for row in rows] == ["alone", "each after the other"]
    assert all(float(cell) > 0 for row in rows for cell in row[1:])
    assert "empty autograd.Function step (alone):" in printed


@pytest.mark.parametrize("packed", [False, True])
def test_interleave_effect_times_lstm_after_torch_without_onednn(capsys, packed):
    argv = ["--cell", "lstm", "--shape", "5,2,3,4", "--repeats", "3", "--mode", "inference"]
    assert load_script("interleave_effect").main(argv + ["--packed"] * packed) == 0
    printed = capsys.readouterr().out
    assert ("5x2x3x4 packed," in printed) == packed
    rows = table_rows(printed, columns=4)
    labels = ["alone", "each after the other", "each after torch without oneDNN"]
    assert [row[0] for row in rows] == labels
    assert all(float(cell) > 0 for row in rows for cell in row[1:])


def test_revision_export_renames_every_reference_to_the_package():
    rename = load_script("compare_revisions").rename_package
    source = (
        "import rnnkit\nimport rnnkit.engine as engine\nfrom rnnkit import compiled\n"
        "from rnnkit.engine.layer import run_layer\n"
        '@torch.library.custom_op("rnnkit::rnn_layer", mutates_args=())\n'
        "x = torch.ops.rnnkit.rnn_layer  # myrnnkit and rnnkit_base stay\n"
        'llvm.add_symbol(f"rnnkit_{name}", f); ExternalFunction("rnnkit_sgemm")\n'
    )
    assert rename(source) == (
        "import rnnkit_base\nimport rnnkit_base.engine as engine\n"
        "from rnnkit_base import compiled\nfrom rnnkit_base.engine.layer import run_layer\n"
        '@torch.library.custom_op("rnnkit_base::rnn_layer", mutates_args=())\n'
        "x = torch.ops.rnnkit_base.rnn_layer  # myrnnkit and rnnkit_base stay\n"
        'llvm.add_symbol(f"rnnkit_base_{name}", f); ExternalFunction("rnnkit_base_sgemm")\n'
    )


def _git_checkout() -> Path | None:
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD:src/rnnkit"],
                            capture_output=True)  # fmt: skip
    return root if result.returncode == 0 else None


@pytest.mark.skipif(_git_checkout() is None, reason="not a git checkout with src/rnnkit at HEAD")
def test_revision_comparison_times_head_against_the_working_tree(tmp_path, monkeypatch, capsys):
    script = load_script("compare_revisions")
    monkeypatch.setattr(script, "_CACHE", tmp_path)
    with concurrent.futures.ThreadPoolExecutor(3) as pool:  # exports racing for one place
        roots = list(pool.map(lambda _: script.export_revision("HEAD", _git_checkout(),
                                                                tmp_path), range(3)))  # fmt: skip
    root = roots[0]
    assert roots == [root] * 3 and [p.name for p in tmp_path.iterdir()] == [root.name]
    package = root / "rnnkit_base"
    sources = "".join(path.read_text() for path in package.rglob("*.py"))
    assert (package / "engine" / "layer.py").exists() and "from rnnkit." not in sources
    assert "rnnkit::" not in sources and '"rnnkit_sgemm"' not in sources
    assert script.export_revision("HEAD", _git_checkout(), tmp_path) == root  # reused
    with pytest.raises(ValueError, match="no src/rnnkit at 'no-such-revision'"):
        script.export_revision("no-such-revision", _git_checkout(), tmp_path)
    monkeypatch.setenv("RNNKIT_ENGINE", "fused")  # no kernel compilation for the copy
    monkeypatch.setattr(sys, "path", list(sys.path))
    argv = ["--shapes", "5,2,3,4", "--layers", "1", "--bidirectional", "0", "1"]
    assert script.main([*argv, "--modes", "train", "inference", "--repeats", "3"]) == 0
    rows = table_rows(capsys.readouterr().out, columns=9)
    assert [(row[0], row[3], row[4]) for row in rows] == [
        ("rnn", "uni", "train"),
        ("rnn", "uni", "inference"),
        ("rnn", "bi", "train"),
        ("rnn", "bi", "inference"),
    ]
    assert all(float(cell) > 0 for row in rows for cell in row[6:])
    # the gated cells, (h, c) for the LSTM included
    assert script.main([*argv[:5], "0", "--cell", "lstm", "gru", "--repeats", "2"]) == 0
    rows = table_rows(capsys.readouterr().out, columns=9)
    assert [row[0] for row in rows] == ["lstm", "gru"] and all(float(row[8]) > 0 for row in rows)
    # PackedSequence input, in training too (the gradient of the packed output's rows)
    argv = [*argv[:5], "0", "--cell", "lstm", "--packed", "--modes", "train", "inference"]
    assert script.main([*argv, "--repeats", "2"]) == 0
    rows = table_rows(capsys.readouterr().out, columns=9)
    assert [row[1] for row in rows] == ["5x2x3x4 packed"] * 2
    assert all(float(row[8]) > 0 for row in rows)
    assert script.main(["--base", "no-such-revision"]) == 2
    assert "no src/rnnkit at 'no-such-revision'" in capsys.readouterr().err


def test_script_rejects_invalid_options(capsys):
    assert load_script().main(["--threads", "0"]) == 2  # a usage error, as `rnnkit bench`
    err = capsys.readouterr().err
    assert "`threads`, expected positive integers" in err
    assert err.count("\n") == 1 and "Traceback" not in err  # one line, no traceback


def recording_steps(calls):
    return {
        name: benchmark._Step(lambda name=name: calls.append(name) or (), leaves=())
        for name in ("torch", "rnnkit")
    }


def test_timing_interleaves_and_alternates_which_runs_first():
    calls = []
    samples = benchmark._time_interleaved(recording_steps(calls), repeats=3)
    assert calls == ["torch", "rnnkit", "rnnkit", "torch", "torch", "rnnkit"]
    assert [len(samples[name]) for name in ("torch", "rnnkit")] == [3, 3]


def test_timing_makes_the_untimed_call_before_every_timed_one():
    calls = []
    samples = benchmark._time_interleaved(
        recording_steps(calls), repeats=2, before=lambda: calls.append("before")
    )
    assert calls == ["before", "torch", "before", "rnnkit", "before", "rnnkit", "before", "torch"]
    assert [len(samples[name]) for name in ("torch", "rnnkit")] == [2, 2]


def test_timing_stops_at_the_limit_after_three_repeats():
    calls = []
    samples = benchmark._time_interleaved(recording_steps(calls), repeats=100, limit_s=0.0)
    assert [len(samples[name]) for name in ("torch", "rnnkit")] == [3, 3]


def test_rnnkit_peak_memory_stays_within_the_engine_targets():
    """On the reference shape: a training step of one layer holds at most twice the
    output beyond what it held before (output, half of it for the chunked
    backward, input gradient), inference at most the output plus a sixteenth
    for the in-place projection of stacked layers and the small h_n / weight
    copies (1.0-1.1x measured); torch holds 3-6x. Allocation sizes do not depend
    on timing: exact."""
    rows = run_benchmark(tiny_config(shapes=((100, 30, 4, 64),), repeats=1))
    for row in rows:
        peak = row["rnnkit"]["peak_x_output"]
        label = (row["num_layers"], row["bidirectional"], row["mode"])
        assert peak < row["torch"]["peak_x_output"], label
        if row["mode"] == "inference":
            assert peak <= 1.15, label
        elif row["num_layers"] == 1:
            assert peak <= 2.0, label


def test_packed_and_projected_rows_time_the_slow_torch_paths():
    # the LSTM rows with proj_size, packed and dense; the GRU's proj_size is 0
    config = tiny_config(cells=("lstm", "gru"), layers=(1,), bidirectional=(True,),
                         packed=(False, True), modes=("train",), proj_size=2)  # fmt: skip
    rows = run_benchmark(config)
    assert [(r["cell"], r["packed"], r["proj_size"]) for r in rows] == [
        ("lstm", False, 2), ("lstm", True, 2), ("gru", False, 0), ("gru", True, 0),
    ]  # fmt: skip
    for row in rows:
        assert 0 <= row["max_rel_diff"] < 1e-4, row
        assert row["bound_ms"] > 0 and math.isfinite(row["bound_fraction"]), row
    table = format_table(rows)
    assert "5x2x3x4 P=2 packed" in table and "5x2x3x4 packed" in table
    assert "5x2x3x4 P=2 " in table


def test_packed_and_proj_size_options_parse_and_are_checked():
    config = parse(["--packed", "0", "1", "--proj-size", "2", "--cell", "lstm"])
    assert config.packed == (False, True) and config.proj_size == 2
    with pytest.raises(ValueError, match="argument `proj_size`, expected 0 or a positive"):
        tiny_config(proj_size=4)  # not below H_out = 4
    with pytest.raises(ValueError, match="argument `packed`, expected booleans"):
        tiny_config(packed=(1,))


def test_weight_grad_orientation_times_both_and_names_the_rule(capsys):
    argv = ["--products", "40x8x4", "40x16x64:24", "--threads", "1", "--repeats", "3"]
    assert load_script("weight_grad_orientation").main(argv) == 0
    narrow, wide = table_rows(capsys.readouterr().out, columns=6)
    assert narrow[:2] == ["1", "40x8x4"] and wide[:2] == ["1", "40x16x64:24"]
    assert all(float(cell) > 0 for row in (narrow, wide) for cell in row[2:5])
    assert (narrow[5], wide[5]) == ("transposed", "as asked")


def test_weight_in_place_times_both_and_names_the_rule(capsys, monkeypatch, tmp_path):
    from rnnkit.engine import recurrent_operand

    argv = ["--steps", "1", "3", "--batches", "2", "--hidden", "4", "--repeats", "3"]
    assert load_script("weight_in_place").main(argv) == 0
    one_step, three_steps = table_rows(capsys.readouterr().out, columns=7)
    assert one_step[:3] == ["gru", "1x2x4x4", "0"] and three_steps[:2] == ["gru", "3x2x4x4"]
    assert all(float(cell) > 0 for row in (one_step, three_steps) for cell in row[3:6])
    assert (one_step[6], three_steps[6]) == ("in place", "copy")
    # batch 1 from brgemm's size (3 * 296**2 >= 2**18): the rule's copy with AVX-512, as
    # the engine's; in place with AVX2 only
    argv = ["--steps", "3", "--batches", "1", "--hidden", "295", "296", "--repeats", "3"]
    for avx512, expected in ((True, "copy"), (False, "in place")):
        monkeypatch.setattr(recurrent_operand, "has_avx512", lambda avx512=avx512: avx512)
        assert load_script("weight_in_place").main(argv) == 0
        below, at_limit = table_rows(capsys.readouterr().out, columns=7)
        assert (below[6], at_limit[6]) == ("in place", expected)
    # both cells, packed sequences of unequal lengths: without AVX-512 a large weight over
    # 16 steps of two sequences reads in place only where their lengths are unequal
    monkeypatch.setattr(recurrent_operand, "has_avx512", lambda: False)
    rows_file = tmp_path / "rows.json"
    argv = ["--cell", "gru", "lstm", "--packed", "0", "1", "--steps", "16", "--batches", "2",
            "--hidden", "224", "--input-size", "8", "--repeats", "3",
            "--json", str(rows_file)]  # fmt: skip
    assert load_script("weight_in_place").main(argv) == 0
    rows = table_rows(capsys.readouterr().out, columns=7)
    assert [row[:3] + row[6:] for row in rows] == [
        [cell, "16x2x8x224", packed, "in place" if packed == "1" else "copy"]
        for cell in ("gru", "lstm") for packed in ("0", "1")
    ]  # fmt: skip
    written = json.loads(rows_file.read_text())
    assert [row["rule_in_place"] for row in written] == [False, True, False, True]
    assert all(row["ratio"] > 0 for row in written)


def test_unbatched_times_both_layers_and_shows_their_difference(capsys):
    argv = ["--cell", "gru", "lstm", "--shapes", "2,3,4", "--modes", "inference", "train",
            "--repeats", "3"]  # fmt: skip
    assert load_script("unbatched").main(argv) == 0
    rows = table_rows(capsys.readouterr().out, columns=8)
    assert [row[:3] for row in rows] == [
        [cell, "2x3x4", mode] for cell in ("gru", "lstm") for mode in ("inference", "train")
    ]
    assert all(float(cell) > 0 for row in rows for cell in row[4:7])
    # a GRU's two steps run on torch's own layer; an LSTM's on our loops once they are
    # loaded (rnnkit.engine.few_steps: the session's fixture loads them), else on oneDNN
    gru, lstm = [float(row[7]) for row in rows if row[2] == "inference"]
    assert gru == 0.0 and lstm < 1e-5
    with pytest.raises(SystemExit):
        load_script("unbatched").main(["--shapes", "2,3"])


def test_generation_step_times_both_streams_and_shows_their_difference(capsys):
    argv = ["--cell", "gru", "lstm", "--stacks", "2,3,4", "--steps", "3", "--repeats", "2"]
    assert load_script("generation_step").main(argv) == 0
    rows = table_rows(capsys.readouterr().out, columns=7)
    assert [row[:3] for row in rows] == [["gru", "2x3x4", "1"], ["lstm", "2x3x4", "1"]]
    assert all(float(cell) > 0 for row in rows for cell in row[3:6])
    assert all(float(row[6]) < 1e-5 for row in rows)  # the same weights: torch's outputs
    for bad in (["--stacks", "2,3"], ["--steps", "0"]):
        with pytest.raises(SystemExit):
            load_script("generation_step").main(bad)
