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
    # the ratio is of the unrounded medians, rounded to 0.001; the rows show them rounded to 0.01 ms
    assert ratio["ratio"] == pytest.approx(md_row["ms_per_step"] / torch_row["ms_per_step"], rel=0.02, abs=6e-4)
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


def test_launches_counts_kernels_memsets_and_copies_per_step_from_a_profiler_trace():
    from minidann.bench.launches import device_work_per_step

    trace = ([{"ph": "X", "cat": "kernel", "name": "minidann_relu_grad"}] * 10
             + [{"ph": "X", "cat": "kernel", "name": "cupy_add"}] * 4
             + [{"ph": "X", "cat": "gpu_memset", "name": "Memset (Device)"}] * 2
             + [{"ph": "X", "cat": "gpu_memcpy", "name": "Memcpy HtoD (Pageable -> Device)"}] * 2
             + [{"ph": "X", "cat": "cpu_op", "name": "aten::mm"}, {"ph": "X", "cat": "cuda_runtime",
                                                                    "name": "cudaLaunchKernel"},
                {"ph": "s", "cat": "kernel", "name": "flow"}])  # (not work the GPU ran)
    row = device_work_per_step(trace, steps=2, top=1)
    assert row == {"kernels": 7.0, "memsets": 1.0, "copies": 1.0, "top_kernels": [["minidann_relu_grad", 5.0]]}


def test_launches_needs_a_gpu(capsys):
    from minidann.bench.launches import launch_counts

    assert bench.main(["--launches", "--steps", "1"]) == 2
    assert "--launches counts what a GPU runs: use it with --device gpu" in capsys.readouterr().err
    with pytest.raises(ValueError, match="--device gpu"):
        launch_counts("cpu", 8)


def test_launches_without_torch_says_so(monkeypatch):
    from minidann.bench.launches import launch_counts

    monkeypatch.setitem(sys.modules, "torch", None)  # not importable
    assert "torch is not importable" in launch_counts("gpu", 8)[0]["note"]


def test_launches_with_a_torch_without_cuda_says_so(monkeypatch):
    from minidann.bench.launches import launch_counts

    torch = pytest.importorskip("torch")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert "torch has no CUDA here" in launch_counts("gpu", 8)[0]["note"]


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
    assert "a batch size divisible by 4 in dann mode" in captured.err
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
    # as two halves of the batch (minidann.fast.parallel), so each op sees 2 of the 4 images
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
    monkeypatch.setattr(bench.memory, "EXAMPLE", tmp_path / "missing.py")
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


# -- the layers of kernels --------------------------------------------------------------------------------------


@pytest.fixture
def conv_calls(monkeypatch):
    """Which conv2d ran, and under which switch: [(layer whose conv2d was called, active_kernels() then), ...]."""
    import minidann.fast.conv
    import minidann.functions
    from minidann.dispatch import active_kernels

    calls = []
    for layer, module in (("reference", minidann.functions), ("fast", minidann.fast.conv)):
        def counted(*args, _conv=module.conv2d, _layer=layer, **kwargs):
            calls.append((_layer, active_kernels()))
            return _conv(*args, **kwargs)

        monkeypatch.setattr(module, "conv2d", counted)  # dispatch.conv2d looks it up at every call
    return calls


def test_kernels_both_times_reference_and_fast_in_one_run_with_their_ratio(capsys, conv_calls):
    rows = run_bench(capsys, "--batch-size", "4", "--steps", "2", "--no-memory", "--kernels", "both",
                     "--threads", "2")
    md_rows = [r for r in rows if r.get("impl") == "minidann"]
    assert [(r["kernels"], r["threads"]) for r in md_rows] == [("reference", 1), ("fast", 2)]
    ref, fast = md_rows
    (summary,) = [r for r in rows if "summary" in r]
    assert summary["threads"] == 2 and "fast/torch" not in summary  # no --compare-torch
    assert summary["reference/fast"] == pytest.approx(ref["ms_per_step"] / fast["ms_per_step"], rel=0.02, abs=6e-4)
    # the reference row ran the reference conv2d, the fast row the fast one, never the other way round
    assert {layer for layer, _ in conv_calls} == {"reference", "fast"}
    assert all(layer == active for layer, active in conv_calls)


def test_the_reference_step_sets_its_kernels_whatever_is_active(conv_calls):
    import minidann

    step, _ = bench.minidann_step("cpu", 4, kernels_name="reference")
    with minidann.kernels("fast"):  # as when the fast step ran just before it
        step()
        assert minidann.active_kernels() == "fast"  # and it puts the switch back
    assert conv_calls and {layer for layer, _ in conv_calls} == {"reference"}


def test_kernels_both_with_compare_torch_puts_both_ratios_in_one_row(capsys):
    pytest.importorskip("torch")
    rows = run_bench(capsys, "--batch-size", "4", "--steps", "2", "--no-memory", "--kernels", "both",
                     "--threads", "1", "--compare-torch")
    ms = {(r["impl"], r.get("kernels")): r["ms_per_step"] for r in rows if "impl" in r}
    (summary,) = [r for r in rows if "summary" in r]
    assert summary["reference/fast"] == pytest.approx(ms["minidann", "reference"] / ms["minidann", "fast"],
                                                      rel=0.02, abs=6e-4)  # (ratios are rounded to 0.001)
    assert summary["fast/torch"] == pytest.approx(ms["minidann", "fast"] / ms["torch", None], rel=0.02, abs=6e-4)
    assert {(r["kernels"], r["threads"]) for r in rows if "ratio" in r} == {("reference", 1), ("fast", 1)}


def test_reference_kernels_refuse_two_threads(capsys):
    assert bench.main(["--kernels", "reference", "--threads", "2", "--steps", "1", "--no-memory"]) == 2
    captured = capsys.readouterr()
    assert "train on the whole batch in one forward and one backward pass, on one thread" in captured.err
    assert captured.out == ""


def test_reference_kernels_alone_get_one_thread_by_default(capsys, conv_calls):
    rows = run_bench(capsys, "--batch-size", "4", "--steps", "1", "--no-memory", "--kernels", "reference")
    assert [(r["kernels"], r["threads"]) for r in rows if "impl" in r] == [("reference", 1)]
    assert {layer for layer, _ in conv_calls} == {"reference"}


def test_ops_get_a_row_per_layer_of_kernels(capsys):
    rows = run_bench(capsys, "--batch-size", "2", "--steps", "1", "--no-memory", "--ops", "--repeats", "1",
                     "--kernels", "both")
    ops = [r for r in rows if "op" in r]
    conv = [r["kernels"] for r in ops if r["op"].startswith("conv2d 32->48")]
    assert conv == ["reference", "fast"] and all(r["ms_per_call"] > 0 for r in ops)
    assert [r["kernels"] for r in ops if r["op"].startswith("linear")] == ["one for both"]


# -- separate-process A/B pairs ---------------------------------------------------------------------------------


def test_ab_pairs_rotate_the_order_and_take_the_median_of_the_pairs_ratios(monkeypatch):
    from minidann.bench import pairs

    ran = []

    def fake_child(impl, device, batch, steps, threads=1, kernels_name="fast", malloc="auto"):
        ran.append(impl)
        return {"impl": impl, "ms_per_step": next(ms) if impl == "minidann" else 20.0}

    monkeypatch.setattr(pairs, "run_child", fake_child)
    monkeypatch.setattr(pairs, "torch_importable", lambda: True)
    ms = iter([30.0, 25.0, 40.0])  # minidann's child in pairs 1-3; torch's takes 20 ms in each
    rows = pairs.ab_pairs("cpu", 4, 2, 3, threads=(2,))
    assert ran == ["minidann", "torch", "torch", "minidann", "minidann", "torch"]  # who goes first alternates
    assert [r["ratio"] for r in rows if "ratio" in r] == [1.5, 1.25, 2.0]
    (last,) = [r for r in rows if "median_ratio" in r]
    assert (last["median_ratio"], last["ab_pairs"], last["ratios"]) == (1.5, 3, [1.5, 1.25, 2.0])


def test_ab_pairs_without_torch_run_minidann_alone_and_say_why(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # as if torch were not installed
    rows = bench.ab_pairs("cpu", 4, 2, 1, threads=(2,))
    (child,) = [r for r in rows if "impl" in r]
    assert child["impl"] == "minidann" and "error" not in child, child
    assert (child["kernels"], child["threads"], child["steps"], child["malloc"]) == ("fast", 2, 2, "tuned")
    assert child["ms_per_step"] > 0 and child["peak_rss_mb"] > 30 and child["torch_imported"] is False
    assert any("torch is not importable" in r.get("note", "") for r in rows)
    assert not any("ratio" in r or "median_ratio" in r for r in rows)


def test_ab_pairs_time_each_library_alone_in_its_own_process(capsys):
    pytest.importorskip("torch")
    rows = run_bench(capsys, "--ab-pairs", "1", "--steps", "2", "--batch-size", "4", "--threads", "1")
    md, tc = [r for r in rows if "impl" in r]
    assert (md["impl"], tc["impl"]) == ("minidann", "torch") and "error" not in md and "error" not in tc, rows
    assert md["torch_imported"] is False and tc["torch_imported"] is True  # each process holds one library
    assert (md["malloc"], tc["malloc"]) == ("tuned", "default")  # each as it trains: minidann's fast loop tunes
    (pair,) = [r for r in rows if "ratio" in r]
    assert pair["ratio"] == pytest.approx(md["ms_per_step"] / tc["ms_per_step"], rel=0.01, abs=6e-4)
    (last,) = [r for r in rows if "median_ratio" in r]
    assert last["median_ratio"] == pair["ratio"] and last["ab_pairs"] == 1


def test_ab_pairs_must_be_a_count(capsys):
    with pytest.raises(SystemExit) as info:
        bench.main(["--ab-pairs", "-1"])
    assert info.value.code == 2 and "--ab-pairs must be at least 1" in capsys.readouterr().err


def test_pairs_malloc_gives_every_child_the_same_setting(monkeypatch, capsys):
    from minidann.bench import pairs

    asked = []

    def fake_child(impl, device, batch, steps, threads=1, kernels_name="fast", malloc="auto"):
        asked.append((impl, malloc))
        return {"impl": impl, "ms_per_step": 10.0}

    monkeypatch.setattr(pairs, "run_child", fake_child)
    monkeypatch.setattr(pairs, "torch_importable", lambda: True)
    run_bench(capsys, "--ab-pairs", "1", "--steps", "1", "--pairs-malloc", "tuned")
    assert asked == [("minidann", "tuned"), ("torch", "tuned")]
    asked.clear()
    run_bench(capsys, "--ab-pairs", "1", "--steps", "1")
    assert asked == [("minidann", "auto"), ("torch", "auto")]  # each child decides: as it trains
