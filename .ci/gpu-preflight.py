"""The GPU machine's preflight, run by .ci/gpu-check: what would make every check fail for reasons outside the code.

Exit status 2: nothing can run on the GPU (CuPy does not import, a driver older than the CuPy wheel's CUDA, NVRTC
or cuBLAS missing); 1: a library the example or the benchmarks need is missing; 0: all present.
"""

import importlib
import sys

fatal, missing = [], []
try:
    import cupy
except Exception as e:  # not installed, or a broken CUDA install
    print(f"preflight: CuPy does not import ({type(e).__name__}: {e})")
    sys.exit(2)
rt = cupy.cuda.runtime
try:
    built, driver = rt.runtimeGetVersion(), rt.driverGetVersion()
    print(f"cupy {cupy.__version__}: built for CUDA {built // 1000}.{built % 1000 // 10}, the driver supports CUDA "
          f"{driver // 1000}.{driver % 1000 // 10}; {rt.getDeviceCount()} device(s)")
    if driver // 1000 < built // 1000:
        fatal.append(f"the driver (CUDA {driver // 1000}) is older than the CuPy wheel's CUDA {built // 1000}: "
                     "install the cupy-cuda wheel of the driver's CUDA major version, or a newer driver")
except Exception as e:
    fatal.append(f"CuPy cannot query the CUDA driver ({type(e).__name__}: {e})")
try:
    from cupy.cuda import nvrtc
    v = nvrtc.getVersion()
    print(f"NVRTC {v[0]}.{v[1]} loads")
except Exception as e:
    fatal.append(f"NVRTC (CuPy's kernel compiler) does not load ({type(e).__name__}: {e}); "
                 "fix: pip install 'cupy-cuda12x[ctk]' (or the cuda13x build you have)")
if not fatal:
    try:
        a = cupy.ones((2, 2), cupy.float32)
        assert float((a @ a + 1).sum()) == 12.0  # a cuBLAS product and an NVRTC-compiled kernel, waited for
        print("cuBLAS and a compiled kernel run")
    except Exception as e:
        fatal.append(f"cuBLAS or a compiled kernel fails ({type(e).__name__}: {e})")
    try:
        from minidann.backend import require_gpu
        require_gpu()
        print("minidann: CuPy computes on the GPU")
    except Exception as e:
        fatal.append(str(e))
for mod, why in (("skimage", "the example builds MNIST-M with it"), ("imageio", "the example reads BSDS500 with it"),
                 ("matplotlib", "the example draws its figures with it"), ("torch", "the benchmarks compare with it")):
    try:
        m = importlib.import_module(mod)
        extra = f", CUDA: {m.cuda.is_available()}" if mod == "torch" else ""
        print(f"{mod} {getattr(m, '__version__', '?')}{extra}")
        if mod == "torch" and not m.cuda.is_available():
            missing.append("torch has no CUDA: the benchmarks' PyTorch comparison will be skipped")
    except Exception as e:
        missing.append(f"{mod} does not import ({type(e).__name__}: {e}); {why}")
for f in fatal:
    print("preflight: FATAL:", f)
for m in missing:
    print("preflight: missing:", m)
sys.exit(2 if fatal else 1 if missing else 0)
