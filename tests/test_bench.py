"""The benchmark's output format and the host-memory setting it measures. No timing is asserted here:
times on a shared machine are noise; `python -m minidann.bench` reports them, side by side."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from minidann import bench


def run_bench(capsys, *argv):
    assert bench.main(list(argv)) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_step_benchmark_prints_the_documented_rows(capsys):
    rows = run_bench(capsys, "--device", "cpu", "--batch-size", "4", "--steps", "3", "--no-memory")
    (md_row,) = [r for r in rows if r.get("impl") == "minidann"]
    assert md_row["device"] == "cpu" and md_row["batch"] == 4 and md_row["steps"] == 3
    assert md_row["ms_per_step"] > 0 and md_row["page_faults_per_step"] >= 0
    assert md_row["peak_numpy_mb_during_steps"] > 0
    assert "blas" in md_row  # which BLAS kernels NumPy runs: the figure means little without it
    assert md_row["cpu"] == bench.cpu_summary()  # and on which processor


@pytest.mark.parametrize("flags, simd", [("fpu sse2 avx avx2 fma", "AVX2"),
                                         ("sse2 avx2 avx512f avx512bw", "AVX-512"), ("fpu", None)])
def test_cpu_summary_names_model_cores_and_widest_vector_unit(tmp_path, flags, simd):
    info = tmp_path / "cpuinfo"
    info.write_text(f"processor\t: 0\nmodel name\t: Test CPU 9000\nflags\t\t: {flags}\n\n"
                    f"processor\t: 1\nmodel name\t: Test CPU 9000\nflags\t\t: {flags}\n")
    summary = bench.cpu_summary(str(info))
    assert summary.startswith("Test CPU 9000, ") and f"{os.cpu_count()} cores" in summary
    assert summary.endswith(f", {simd}") if simd else summary.endswith(" cores")


def test_handoff_probe_prints_both_copies_and_their_ratio(capsys):
    rows = run_bench(capsys, "--batch-size", "4", "--steps", "2", "--no-memory", "--handoff")
    (probe,) = [r for r in rows if r.get("probe") == "core_handoff"]
    assert probe["handoff_ms"] > 0 and probe["local_ms"] > 0
    assert probe["ratio"] == pytest.approx(probe["handoff_ms"] / probe["local_ms"], rel=0.02, abs=0.01)
    assert [r["impl"] for r in rows if "impl" in r] == ["minidann"]  # the step is still timed after the probe


def test_compare_torch_without_torch_is_skipped_with_a_message(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    rows = run_bench(capsys, "--batch-size", "4", "--steps", "2", "--no-memory", "--compare-torch")
    assert [r["impl"] for r in rows if "impl" in r] == ["minidann"]
    (note,) = [r for r in rows if "note" in r]
    assert "torch is not importable" in note["note"] and "pip install torch" in note["note"]
    assert not any("ratio" in r for r in rows)


def test_compare_torch_prints_both_and_the_ratio(capsys):
    pytest.importorskip("torch")
    rows = run_bench(capsys, "--batch-size", "4", "--steps", "2", "--no-memory", "--compare-torch")
    md_row, torch_row, ratio = rows
    assert (md_row["impl"], torch_row["impl"]) == ("minidann", "torch")
    # the ratio is of the unrounded medians; the rows show them rounded to 0.01 ms
    assert ratio["ratio"] == pytest.approx(md_row["ms_per_step"] / torch_row["ms_per_step"], rel=0.02)
    assert ratio["blocks"] == 1 and set(ratio["block_ratios"]) == {"min", "q1", "median", "q3", "max"}
    assert "float32" not in torch_row  # TF32 is a GPU matter


def test_gpu_comparison_makes_torch_compute_in_ieee_float32():
    # PyTorch lets cuDNN convolutions run in TF32 by default; CuPy's products, minidann's, are IEEE float32.
    # The flags exist in CPU builds too, so this runs wherever torch does.
    torch = pytest.importorskip("torch")
    conv = getattr(torch.backends.cudnn, "conv", None)
    new_api = conv is not None and hasattr(conv, "fp32_precision")
    if new_api:
        saved = conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision
    else:
        saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    try:
        conv_mode = saved[0] if new_api else ("tf32" if saved[0] else "ieee")
        assert bench.set_torch_cuda_float32(torch, tf32=True) == f"left as PyTorch has it (convolutions: {conv_mode})"
        now = ((conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision) if new_api
               else (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32))
        assert now == saved  # tf32=True changes nothing
        assert bench.set_torch_cuda_float32(torch, tf32=False) == "ieee"
        if new_api:
            assert (conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision) == ("ieee", "ieee")
        else:
            assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
        assert bench.set_torch_cuda_float32(torch, tf32=True).endswith("(convolutions: ieee)")  # reads, not assumes
    finally:
        if new_api:
            conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision = saved
        else:
            torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@pytest.mark.parametrize("value, words", [(None, "ieee"), ("0", "ieee"), ("1", "tf32 (CUPY_TF32=1)")])
def test_gpu_rows_say_whether_cupy_products_run_in_tf32(monkeypatch, value, words):
    if value is None:
        monkeypatch.delenv("CUPY_TF32", raising=False)
    else:
        monkeypatch.setenv("CUPY_TF32", value)
    assert bench.cupy_float32() == words


def test_block_ratio_spread_summarises_the_ratio_of_each_block():
    # blocks in run order; ratios 1.2, 0.9, 1.0, 1.1, 1.5: sorted 0.9 1.0 1.1 1.2 1.5
    spread = bench.block_ratio_spread([60.0, 45.0, 50.0, 55.0, 75.0], [50.0, 50.0, 50.0, 50.0, 50.0])
    assert spread["block_ratios"] == {"min": 0.9, "q1": 1.0, "median": 1.1, "q3": 1.2, "max": 1.5}
    assert (spread["blocks_at_or_below_1"], spread["blocks"]) == (2, 5)
    one = bench.block_ratio_spread([30.0], [40.0])
    assert one["block_ratios"] == dict.fromkeys(["min", "q1", "median", "q3", "max"], 0.75)
    assert (one["blocks_at_or_below_1"], one["blocks"]) == (1, 1)


def test_gpu_bench_without_a_gpu_says_why(capsys):
    from minidann.backend import gpu_available

    if gpu_available():
        pytest.skip("a GPU is usable here")
    assert bench.main(["--device", "gpu", "--steps", "1"]) == 2
    assert "GPU" in capsys.readouterr().err


FAULTS = textwrap.dedent("""
    import contextlib, resource, sys
    import numpy as np
    import minidann  # must change nothing process-wide
    from minidann.fast.tuning import tuned
    def step():  # a training step's pattern: several arrays of a few MB alive together, then all freed
        arrays = [np.ones(1_000_000 + 1000 * i, np.float32) for i in range(6)]
        del arrays
    def faults_per_step():
        for _ in range(3):
            step()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(20):
            step()
        return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 20
    plain = faults_per_step()
    with tuned():
        kept = faults_per_step()
    after = faults_per_step()
    print(plain, kept, after)
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc and Linux fault counters")
def test_tuning_keeps_freed_memory_only_while_fast_training_runs():
    import platform

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("not glibc")
    out = subprocess.run([sys.executable, "-c", FAULTS], capture_output=True, text=True, check=True)
    plain, kept, after = map(float, out.stdout.split())
    # plain glibc hands the freed 24 MB back to the kernel and maps it again, zero-filled, every step: ~6,000
    # faults of 4 KB per step; tuned, the next step reuses the same pages; afterwards glibc's defaults are back
    assert plain > 1000, plain  # import minidann alone left malloc as it was
    assert kept < 50, kept
    assert after > 1000, after


def test_blas_kernel_names_the_kernels_and_a_forced_coretype(monkeypatch):
    from minidann.fast.tuning import blas_kernel

    monkeypatch.delenv("OPENBLAS_CORETYPE", raising=False)
    plain = blas_kernel()
    if plain == "unknown":
        pytest.skip("NumPy's BLAS is not an OpenBLAS this function can query")
    assert plain.startswith("OpenBLAS ") and plain.endswith(" threads") and "forced" not in plain
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")  # read at load time by OpenBLAS; here only reported
    assert "forced by OPENBLAS_CORETYPE=Haswell" in blas_kernel()


def test_threads_one_and_two_get_a_row_each(capsys):
    rows = run_bench(capsys, "--batch-size", "4", "--steps", "2", "--no-memory", "--threads", "1,2")
    md_rows = [r for r in rows if r.get("impl") == "minidann"]
    assert [r["threads"] for r in md_rows] == [1, 2]
    assert all(r["ms_per_step"] > 0 for r in md_rows)


def test_threads_two_with_a_batch_that_does_not_halve_is_refused(capsys):
    assert bench.main(["--threads", "1,2", "--batch-size", "6", "--steps", "1", "--no-memory"]) == 2
    captured = capsys.readouterr()
    assert "use a --batch-size divisible by 4 (got 6)" in captured.err
    assert captured.out == ""  # refused before anything was measured


@pytest.mark.parametrize("value", ["3", "two", "1,x"])
def test_threads_other_than_one_or_two_are_refused(capsys, value):
    assert bench.main(["--threads", value, "--steps", "1", "--no-memory", "--handoff"]) == 2
    captured = capsys.readouterr()
    assert f"--threads {value}: takes 1, 2 or 1,2" in captured.err
    assert captured.out == ""  # refused before anything was measured


def test_profile_has_a_row_per_op_and_input_shape_and_shares_that_add_up(capsys):
    rows = run_bench(capsys, "--batch-size", "4", "--steps", "2", "--no-memory", "--profile")
    prof = [r for r in rows if "op" in r]
    assert all(r["impl"] == "minidann" for r in prof)
    # the two convolutions are told apart by their input, forward and backward alike; on the CPU the step runs
    # as two halves of the batch (minidann.parallel), so each op sees 2 of the 4 images
    conv = {(r["op"], r["input"]) for r in prof if r["op"].startswith("Conv2d.")}
    assert conv == {(f"Conv2d.{p}", s) for p in ("forward", "backward") for s in ("2x3x28x28", "2x32x14x14")}
    assert prof[-1]["op"].startswith("other")
    assert sum(r["share"] for r in prof) == pytest.approx(1.0, abs=0.03)  # every op plus the rest: the whole step
    assert all(r["ms_per_step"] >= 0 for r in prof)


def test_profile_with_compare_torch_adds_torchs_ops(capsys):
    pytest.importorskip("torch")
    rows = run_bench(capsys, "--batch-size", "4", "--steps", "2", "--no-memory", "--profile", "--compare-torch")
    prof = [r for r in rows if "op" in r]
    torch_rows = [r for r in prof if r["impl"] == "torch"]
    assert {r["impl"] for r in prof} == {"minidann", "torch"}
    assert ("aten::convolution_backward", "4x48x14x14") in {(r["op"], r["input"]) for r in torch_rows}
    assert torch_rows[-1]["op"].startswith("other")
    assert sum(r["share"] for r in torch_rows) == pytest.approx(1.0, abs=0.1)  # the profiler's own time is the rest


def test_profile_with_compare_torch_without_torch_says_so(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    rows = run_bench(capsys, "--batch-size", "4", "--steps", "2", "--no-memory", "--profile", "--compare-torch")
    assert {r["impl"] for r in rows if "op" in r} == {"minidann"}
    assert any("its profile is skipped" in r.get("note", "") for r in rows)


def test_example_memory_measures_the_whole_example_and_pytorchs_floor(monkeypatch):
    # the example's whole run (tiny: 2 steps per mode on 256 images) in a fresh process, and PyTorch's floor
    rows = bench.example_memory(2, limit_train=256, limit_test=256)
    md = rows[0]
    assert md["impl"] == "minidann" and "error" not in md, md
    assert md["peak_rss_mb"] > 30 and "--steps 2 --limit-train 256 --limit-test 256" in md["what"]
    try:
        import torch  # noqa: F401
    except ImportError:
        assert "torch is not importable" in rows[1]["note"] and len(rows) == 2
    else:
        md_row, torch_row, ratio = rows
        assert torch_row["impl"] == "torch" and "error" not in torch_row, torch_row
        assert ratio["ratio"] == pytest.approx(md["peak_rss_mb"] / torch_row["peak_rss_mb"], rel=0.01)


def test_example_memory_without_the_example_says_where_to_run_it(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(bench, "EXAMPLE", tmp_path / "missing.py")
    rows = run_bench(capsys, "--example-memory", "--steps", "2")
    assert len(rows) == 1 and "not found" in rows[0]["error"] and "clone of the repository" in rows[0]["error"]


def test_example_memory_without_torch_keeps_minidanns_row_and_says_why(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # as if torch were not installed
    rows = bench.example_memory(1, limit_train=128, limit_test=128)
    assert [r.get("impl") for r in rows] == ["minidann", None] and rows[0]["peak_rss_mb"] > 30
    assert "torch is not importable" in rows[1]["note"] and "pip install torch" in rows[1]["note"]


@pytest.mark.parametrize("flags, message", [
    (["--steps", "0"], "--steps and --repeats must be at least 1"),
    (["--steps", "-3"], "--steps and --repeats must be at least 1"),
    (["--ops", "--repeats", "0"], "--steps and --repeats must be at least 1"),
    (["--batch-size", "1"], "--batch-size must be at least 2"),
    (["--example-memory", "--steps", "0"], "--steps and --repeats must be at least 1"),
])
def test_bad_numbers_exit_2_before_anything_runs(capsys, flags, message):
    with pytest.raises(SystemExit) as info:
        bench.main(flags)
    assert info.value.code == 2 and message in capsys.readouterr().err
