"""A strict stand-in for CuPy, so that the GPU code paths run (and are counted) on a machine without a GPU.

This module *is* the stand-in ``cupy`` module: ``install(monkeypatch)`` makes ``minidann.backend`` use it (and
``import cupy`` return it) for one test; ``python tests/cupy_standin.py -m MODULE ARGS`` or
``python tests/cupy_standin.py SCRIPT ARGS`` runs a program with it installed.

Its arrays are :class:`ndarray`, a wrapper around a NumPy array (not a subclass of numpy.ndarray), and it is as
strict as CuPy where CuPy is strict:

- ``np.asarray(a)`` / ``a.__array__()`` raise TypeError with CuPy's message; use ``a.get()`` or ``asnumpy(a)``;
- a host numpy.ndarray in an elementwise op, reduction or product with device arrays raises TypeError
  ("Unsupported type"), from either side (``a + host`` and ``host + a``);
- ``a * obj`` defers to ``obj.__rmul__`` only as CuPy's ``_should_use_rop`` does: when ``obj.__array_ufunc__`` is
  None, or (without ``__array_ufunc__``) when ``obj.__array_priority__`` is higher than CuPy's 100;
- elementwise results are C-contiguous; reductions and scalar indexing give 0-d device arrays, not scalars;
- integer-array indices out of range wrap around (CuPy's gather does not check bounds), as in ``take``;
- numpy functions called on device arrays dispatch here through ``__array_function__`` when this module has the
  function, else raise TypeError, as CuPy's do.

It counts, in :data:`counters`: ``launches`` (every elementwise op, reduction, product, copy, fill, gather and
scatter: what runs as a kernel or a device copy on a GPU), ``syncs`` (``float()``, ``int()``, ``bool()``,
``.item()``, ``.tolist()``, ``.get()``, ``asnumpy``, stream and device ``synchronize()``, boolean-mask indexing and
other ops whose output size depends on the data), ``h2d`` (host-to-device copies: ``asarray`` of host data, host
index arrays, ``.set()``) and ``d2h``.
"""

from __future__ import annotations

import builtins
import collections
import contextlib
import functools
import os
import runpy
import sys
import weakref

import numpy as np

__version__ = "13.0.0+standin"

_IMPLICIT = ("Implicit conversion to a NumPy array is not allowed. Please use `.get()` to construct a NumPy array "
             "explicitly.")


class Counters:
    """What the device was asked to do since the last :meth:`reset`."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.launches = collections.Counter()  # op name -> kernels launched (or device copies)
        self.syncs = collections.Counter()  # what made the host wait -> how often
        self.h2d: list[tuple[tuple[int, ...], str]] = []  # (shape, dtype) of every host -> device copy
        self.d2h = 0
        self._paused = 0

    @property
    def n_launches(self) -> int:
        return builtins.sum(self.launches.values())

    @property
    def n_syncs(self) -> int:
        return builtins.sum(self.syncs.values())

    def launch(self, name: str) -> None:
        if not self._paused:
            self.launches[name] += 1

    def sync(self, name: str) -> None:
        if not self._paused:
            self.syncs[name] += 1

    @contextlib.contextmanager
    def one_launch(self, name: str):
        """Count everything inside as a single launch (a fused kernel)."""
        self.launch(name)
        self._paused += 1
        try:
            yield
        finally:
            self._paused -= 1


counters = Counters()
_live = weakref.WeakValueDictionary()  # id -> arrays that own device memory (for the memory pool's figures)


# ---- the array type -------------------------------------------------------------------------------------------

def _refuse_host(x):
    if isinstance(x, np.ndarray):
        raise TypeError(f"Unsupported type {type(x)}")
    return x


def _unwrap(x):
    """Device arrays -> their NumPy data; host arrays refused; scalars, dtypes, None and slices as they are."""
    if isinstance(x, ndarray):
        return x._a
    if isinstance(x, (list, tuple)):
        return type(x)(_unwrap(v) for v in x)
    return _refuse_host(x)


def _wrap(r):
    if isinstance(r, np.ndarray):
        return ndarray(r)
    if isinstance(r, np.generic):  # CuPy returns 0-d device arrays where NumPy returns scalars
        return ndarray(np.asarray(r))
    if isinstance(r, (list, tuple)):
        return type(r)(_wrap(v) for v in r)
    return r


def _arrays_in(args):
    for a in args:
        if isinstance(a, ndarray):
            yield a._a
        elif isinstance(a, np.ndarray):
            yield a
        elif isinstance(a, (list, tuple)):
            yield from _arrays_in(a)


def _launches_if_new(name, result, inputs) -> None:
    """One launch unless every array of ``result`` is a view of an input (reshape, transpose, broadcast_to...)."""
    outs = list(_arrays_in([result] if not isinstance(result, (list, tuple)) else result))
    ins = list(_arrays_in(inputs))
    if builtins.any(not builtins.any(np.may_share_memory(o, i) for i in ins) for o in outs) or not outs:
        counters.launch(name)


def _should_use_rop(x, y) -> bool:
    """CuPy's rule (cupy/_core/core.pyx) for handing ``x op y`` to ``y``'s reflected operator."""
    try:
        y_ufunc = y.__array_ufunc__
    except AttributeError:
        return getattr(x, "__array_priority__", 0) < getattr(y, "__array_priority__", 0)
    return y_ufunc is None


def _binop(ufunc, rname):
    def op(self, other):
        if not isinstance(other, ndarray) and _should_use_rop(self, other):
            return getattr(other, rname)(self)
        return _ufunc_call(ufunc, (self, other), {})

    def rop(self, other):
        return _ufunc_call(ufunc, (other, self), {})

    def iop(self, other):
        _ufunc_call(ufunc, (self, other), {"out": self})
        return self

    return op, rop, iop


class _Flags:
    def __init__(self, a):
        self.c_contiguous = a.flags.c_contiguous
        self.f_contiguous = a.flags.f_contiguous
        self.owndata = a.flags.owndata

    def __getitem__(self, key):
        return {"C_CONTIGUOUS": self.c_contiguous, "F_CONTIGUOUS": self.f_contiguous, "OWNDATA": self.owndata}[key]


class ndarray:  # noqa: N801 - CuPy's name
    """A device array of the stand-in: a NumPy array that the host may not read without a counted sync."""

    __slots__ = ("_a", "__weakref__")
    __array_priority__ = 100  # CuPy's

    def __init__(self, a, dtype=None):
        if not isinstance(a, np.ndarray):  # cupy.ndarray(shape, dtype): uninitialised memory
            a = np.empty(a, dtype=float if dtype is None else dtype)
        self._a = a
        if a.flags.owndata:
            _live[id(self)] = self

    # -- what CuPy refuses ---------------------------------------------------------------------------------
    def __array__(self, dtype=None, copy=None):
        raise TypeError(_IMPLICIT)

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        if method == "__call__":
            return _ufunc_call(ufunc, inputs, kwargs)
        if method == "reduce":
            return _Ufunc(ufunc).reduce(*inputs, **kwargs)
        return NotImplemented

    def __array_function__(self, func, types, args, kwargs):
        mod = sys.modules[__name__]
        for part in func.__module__.split(".")[1:]:
            mod = getattr(mod, part, None)
            if mod is None:
                return NotImplemented
        ours = getattr(mod, func.__name__, None)
        if ours is None or ours is func:
            return NotImplemented
        return ours(*args, **kwargs)

    # -- host syncs ----------------------------------------------------------------------------------------
    def get(self, stream=None, order="C", out=None):
        counters.sync("get")
        counters.d2h += 1
        return np.array(self._a, order=order)

    def set(self, arr, stream=None):
        _refuse_device(arr, "set")
        counters.h2d.append((np.shape(arr), str(np.asarray(arr).dtype)))
        self._a[...] = arr

    def item(self):
        counters.sync("item")
        return self._a.item()

    def tolist(self):
        counters.sync("tolist")
        return self._a.tolist()

    def __float__(self):
        counters.sync("float")
        return float(self._a)

    def __int__(self):
        counters.sync("int")
        return int(self._a)

    def __index__(self):
        counters.sync("index")
        return self._a.__index__()

    def __bool__(self):
        counters.sync("bool")
        return bool(self._a)

    def __complex__(self):
        counters.sync("complex")
        return complex(self._a)

    def __repr__(self):
        counters.sync("repr")
        return "array(" + np.array2string(self._a, separator=", ") + ")"

    __str__ = __repr__

    def __format__(self, spec):
        counters.sync("format")
        return format(self._a.item() if self._a.ndim == 0 else self._a, spec)

    # -- attributes ----------------------------------------------------------------------------------------
    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    strides = property(lambda self: self._a.strides)
    itemsize = property(lambda self: self._a.itemsize)
    nbytes = property(lambda self: self._a.nbytes)
    flags = property(lambda self: _Flags(self._a))
    device = property(lambda self: Device(0))
    T = property(lambda self: ndarray(self._a.T))

    @property
    def base(self):
        return None if self._a.base is None else ndarray(self._a.base)

    def __len__(self):
        return len(self._a)

    def __iter__(self):
        for i in range(len(self._a)):
            yield ndarray(self._a[i])

    # -- views (no launch) and copies ----------------------------------------------------------------------
    def reshape(self, *shape, order="C"):
        r = self._a.reshape(*shape, order=order)
        _launches_if_new("reshape", r, [self])
        return ndarray(r)

    def transpose(self, *axes):
        return ndarray(self._a.transpose(*axes))

    def swapaxes(self, a, b):
        return ndarray(self._a.swapaxes(a, b))

    def squeeze(self, axis=None):
        return ndarray(self._a.squeeze(axis))

    def view(self, dtype=None):
        return ndarray(self._a.view() if dtype is None else self._a.view(dtype))

    def ravel(self, order="C"):
        r = self._a.ravel(order)
        _launches_if_new("ravel", r, [self])
        return ndarray(r)

    def flatten(self, order="C"):
        counters.launch("copy")
        return ndarray(self._a.flatten(order))

    def copy(self, order="C"):
        counters.launch("copy")
        return ndarray(self._a.copy(order=order))

    def astype(self, dtype, order="K", casting=None, subok=None, copy=True):
        r = self._a.astype(dtype, order=order, copy=copy)
        if r is not self._a:
            counters.launch("astype")
            return ndarray(r)
        return self

    def fill(self, value):
        counters.launch("fill")
        self._a.fill(_refuse_host(value))

    # -- reductions ----------------------------------------------------------------------------------------
    def _reduce(name):  # noqa: N805 - a helper that builds methods
        def method(self, *args, **kwargs):
            counters.launch(name)
            return _wrap(getattr(self._a, name)(*_unwrap(args), **{k: _unwrap(v) for k, v in kwargs.items()}))

        method.__name__ = name
        return method

    sum = _reduce("sum")
    mean = _reduce("mean")
    max = _reduce("max")
    min = _reduce("min")
    argmax = _reduce("argmax")
    argmin = _reduce("argmin")
    all = _reduce("all")
    any = _reduce("any")
    prod = _reduce("prod")
    var = _reduce("var")
    std = _reduce("std")
    cumsum = _reduce("cumsum")
    clip = _reduce("clip")
    del _reduce

    def dot(self, other, out=None):
        return dot(self, other, out=out)

    def take(self, indices, axis=None, out=None):
        return take(self, indices, axis=axis, out=out)

    # -- indexing ------------------------------------------------------------------------------------------
    def __getitem__(self, key):
        key, fancy, mask = _index(key, self._a.shape)
        if mask:
            counters.sync("boolean mask")  # the output's size is known only once the device has counted
        r = self._a[key]
        if fancy or mask:
            counters.launch("gather")
        return _wrap(r)

    def __setitem__(self, key, value):
        key, fancy, _ = _index(key, self._a.shape)
        counters.launch("scatter" if fancy else "copy")
        self._a[key] = _unwrap(value)

    # -- operators -----------------------------------------------------------------------------------------
    __add__, __radd__, __iadd__ = _binop(np.add, "__radd__")
    __sub__, __rsub__, __isub__ = _binop(np.subtract, "__rsub__")
    __mul__, __rmul__, __imul__ = _binop(np.multiply, "__rmul__")
    __truediv__, __rtruediv__, __itruediv__ = _binop(np.true_divide, "__rtruediv__")
    __floordiv__, __rfloordiv__, __ifloordiv__ = _binop(np.floor_divide, "__rfloordiv__")
    __mod__, __rmod__, __imod__ = _binop(np.remainder, "__rmod__")
    __pow__, __rpow__, __ipow__ = _binop(np.power, "__rpow__")
    __and__, __rand__, __iand__ = _binop(np.bitwise_and, "__rand__")
    __or__, __ror__, __ior__ = _binop(np.bitwise_or, "__ror__")
    __xor__, __rxor__, __ixor__ = _binop(np.bitwise_xor, "__rxor__")
    __lshift__, __rlshift__, __ilshift__ = _binop(np.left_shift, "__rlshift__")
    __rshift__, __rrshift__, __irshift__ = _binop(np.right_shift, "__rrshift__")

    def __matmul__(self, other):
        if not isinstance(other, ndarray) and _should_use_rop(self, other):
            return other.__rmatmul__(self)
        return matmul(self, other)

    def __rmatmul__(self, other):
        return matmul(other, self)

    def __eq__(self, other):
        return _ufunc_call(np.equal, (self, other), {})

    def __ne__(self, other):
        return _ufunc_call(np.not_equal, (self, other), {})

    def __lt__(self, other):
        return _ufunc_call(np.less, (self, other), {})

    def __le__(self, other):
        return _ufunc_call(np.less_equal, (self, other), {})

    def __gt__(self, other):
        return _ufunc_call(np.greater, (self, other), {})

    def __ge__(self, other):
        return _ufunc_call(np.greater_equal, (self, other), {})

    __hash__ = None

    def __neg__(self):
        return _ufunc_call(np.negative, (self,), {})

    def __pos__(self):
        return _ufunc_call(np.positive, (self,), {})

    def __abs__(self):
        return _ufunc_call(np.absolute, (self,), {})

    def __invert__(self):
        return _ufunc_call(np.invert, (self,), {})


def _refuse_device(x, where):
    if isinstance(x, ndarray):
        raise TypeError(f"{where}: expected a host array, got a device array")


def _index(key, shape):
    """NumPy's key for a device-array index: device arrays unwrapped, host ones copied (counted), integer arrays
    wrapped modulo their axis length as CuPy's gather does. Returns (key, has integer arrays, has a boolean mask)."""
    parts = list(key) if isinstance(key, tuple) else [key]
    fancy = mask = False
    consumed = builtins.sum(0 if p is None or p is Ellipsis else
                   (np.ndim(p._a if isinstance(p, ndarray) else p) if _is_bool_index(p) else 1) for p in parts)
    axis, out = 0, []
    for p in parts:
        if isinstance(p, (np.ndarray, list)) and not isinstance(p, ndarray):
            counters.h2d.append((np.shape(p), str(np.asarray(p).dtype)))  # CuPy copies host index arrays over
            p = np.asarray(p)
        elif isinstance(p, ndarray):
            p = p._a
        if p is None:
            out.append(p)
        elif p is Ellipsis:
            out.append(p)
            axis += len(shape) - consumed
        elif isinstance(p, np.ndarray) and p.dtype == bool:
            mask = True
            out.append(p)
            axis += p.ndim
        elif isinstance(p, np.ndarray):
            fancy = True
            out.append(p % shape[axis] if p.size else p)  # out-of-range indices wrap, as in CuPy
            axis += 1
        else:
            out.append(p)
            axis += 1
    return (tuple(out) if isinstance(key, tuple) else out[0]), fancy, mask


def _is_bool_index(p):
    a = p._a if isinstance(p, ndarray) else p
    return isinstance(a, (np.ndarray, list)) and np.asarray(a).dtype == bool


# ---- ufuncs ---------------------------------------------------------------------------------------------------

def _ufunc_call(ufunc, inputs, kwargs):
    if not builtins.any(isinstance(x, ndarray) for x in inputs) and not isinstance(kwargs.get("out"), (ndarray, tuple)):
        raise TypeError(f"Unsupported type {type(inputs[0])}")
    for x in inputs:  # CuPy's kernels take device arrays and Python or NumPy scalars, nothing else
        if not isinstance(x, (ndarray, int, float, complex, np.generic)):
            raise TypeError(f"Unsupported type {type(x)}")
    args = [_unwrap(x) for x in inputs]
    out = kwargs.pop("out", None)
    if isinstance(out, tuple):
        out = out[0] if len(out) == 1 else out
    kw = {k: _unwrap(v) for k, v in kwargs.items()}
    counters.launch(ufunc.__name__)
    if out is not None:
        if not isinstance(out, ndarray):
            raise TypeError(f"out must be a cupy.ndarray, got {type(out)}")
        ufunc(*args, out=out._a, **kw)
        return out
    kw.setdefault("order", "C")  # CuPy's elementwise kernels write C-contiguous results
    return _wrap(ufunc(*args, **kw))


class _Ufunc:
    def __init__(self, ufunc):
        self._ufunc = ufunc
        self.__name__ = ufunc.__name__
        self.nin, self.nout = ufunc.nin, ufunc.nout

    def __call__(self, *inputs, **kwargs):
        return _ufunc_call(self._ufunc, inputs, kwargs)

    def reduce(self, a, axis=0, dtype=None, out=None, keepdims=False):
        counters.launch(self.__name__ + ".reduce")
        if out is not None:
            self._ufunc.reduce(_unwrap(a), axis=axis, dtype=dtype, out=out._a, keepdims=keepdims)
            return out
        return _wrap(self._ufunc.reduce(_unwrap(a), axis=axis, dtype=dtype, keepdims=keepdims))

    def at(self, a, indices, b=None):
        counters.launch(self.__name__ + ".at")
        key, _, _ = _index(indices, a.shape)
        self._ufunc.at(a._a, key, *(() if b is None else (_unwrap(b),)))

    def __repr__(self):
        return f"<ufunc '{self.__name__}' (stand-in)>"


# ---- module functions -----------------------------------------------------------------------------------------

def _host_to_device(a, dtype=None, order="K"):
    host = np.array(a, dtype=dtype, order=order)
    counters.h2d.append((host.shape, str(host.dtype)))
    return ndarray(host)


def asarray(a, dtype=None, order=None, *, blocking=False):
    if isinstance(a, ndarray):
        return a if dtype is None or np.dtype(dtype) == a.dtype else a.astype(dtype)
    return _host_to_device(a, dtype, order or "K")


def array(obj, dtype=None, copy=True, order="K", subok=False, ndmin=0, *, blocking=False):
    if isinstance(obj, ndarray):
        return obj.astype(obj.dtype if dtype is None else dtype, order=order, copy=copy)
    return _host_to_device(obj, dtype, order)


def asnumpy(a, stream=None, order="C", out=None, *, blocking=True):
    if isinstance(a, ndarray):
        return a.get(order=order)
    return np.asarray(a, order=order)


def get_array_module(*args):
    return sys.modules[__name__] if builtins.any(isinstance(a, ndarray) for a in args) else np


def ascontiguousarray(a, dtype=None):
    r = np.ascontiguousarray(_unwrap(a), dtype=dtype)
    if r is not a._a:
        counters.launch("ascontiguousarray")
    return ndarray(r)


def _new(np_func, launches: bool):
    @functools.wraps(np_func)
    def make(*args, **kwargs):
        r = np_func(*_unwrap(args), **{k: _unwrap(v) for k, v in kwargs.items()})
        if launches:
            counters.launch(np_func.__name__)
        return ndarray(r)

    return make


empty, empty_like = _new(np.empty, False), _new(np.empty_like, False)
zeros, zeros_like = _new(np.zeros, True), _new(np.zeros_like, True)  # (a memset: counted like a kernel)
ones, ones_like = _new(np.ones, True), _new(np.ones_like, True)
full, full_like = _new(np.full, True), _new(np.full_like, True)
arange, linspace, eye, identity = (_new(f, True) for f in (np.arange, np.linspace, np.eye, np.identity))


def _generic(np_func, syncs: bool = False):
    """A NumPy function on device arrays: host arrays refused, one launch unless the result is a view."""
    @functools.wraps(np_func)
    def run(*args, **kwargs):
        a, kw = _unwrap(args), {k: _unwrap(v) for k, v in kwargs.items()}
        out = kwargs.get("out")
        if syncs:
            counters.sync(np_func.__name__)
        r = np_func(*a, **kw)
        if out is not None:
            counters.launch(np_func.__name__)
            return out
        r = _wrap(r)
        _launches_if_new(np_func.__name__, r, list(args) + list(kwargs.values()))
        return r

    return run


# what CuPy offers of NumPy's functions (used through the generic wrapper above)
_GENERIC = """concatenate stack hstack vstack split array_split broadcast_to broadcast_arrays expand_dims squeeze
reshape transpose moveaxis swapaxes ravel where tile repeat flip pad cumsum sum mean amax amin max min argmax argmin
all any prod var std tensordot einsum outer inner vdot copy isclose allclose array_equal count_nonzero argsort sort
searchsorted diag trace atleast_1d atleast_2d atleast_3d roll rollaxis clip maximum_fill around round""".split()
_SYNCING = "nonzero unique argwhere flatnonzero".split()  # output size depends on the data: the host must wait
for _name in _GENERIC:
    if hasattr(np, _name):
        globals()[_name] = _generic(getattr(np, _name))
for _name in _SYNCING:
    globals()[_name] = _generic(getattr(np, _name), syncs=True)


def matmul(a, b, out=None):
    counters.launch("matmul")
    if out is not None:
        np.matmul(_unwrap(a), _unwrap(b), out=out._a)
        return out
    return _wrap(np.matmul(_unwrap(a), _unwrap(b)))


def dot(a, b, out=None):
    counters.launch("dot")
    if out is not None:
        np.dot(_unwrap(a), _unwrap(b), out=out._a)
        return out
    return _wrap(np.dot(_unwrap(a), _unwrap(b)))


def take(a, indices, axis=None, out=None, mode="wrap"):
    counters.launch("take")
    idx = _unwrap(indices) if isinstance(indices, ndarray) else np.asarray(indices)
    r = np.take(_unwrap(a), idx, axis=axis, mode="wrap")  # CuPy's take wraps out-of-range indices
    if out is not None:
        out._a[...] = r
        return out
    return _wrap(r)


def take_along_axis(a, indices, axis):
    counters.launch("take_along_axis")
    idx = _unwrap(indices)
    return _wrap(np.take_along_axis(_unwrap(a), idx % a.shape[axis], axis))


for _name in dir(np):
    if isinstance(getattr(np, _name), np.ufunc) and _name not in globals():
        globals()[_name] = _Ufunc(getattr(np, _name))
del _name

# dtypes and constants: NumPy's own objects, as in CuPy
for _dt in ("bool_ int8 int16 int32 int64 uint8 uint16 uint32 uint64 float16 float32 float64 complex64 complex128 "
            "intp dtype finfo iinfo integer floating number generic").split():
    globals()[_dt] = getattr(np, _dt)
newaxis, nan, inf, pi, e = np.newaxis, np.nan, np.inf, np.pi, np.e


def fuse(*args, **kwargs):
    """``cupy.fuse``: the function runs on the stand-in's arrays and counts as one launch."""
    def decorate(f):
        @functools.wraps(f)
        def fused(*a, **kw):
            with counters.one_launch("fuse:" + f.__name__):
                return f(*a, **kw)

        return fused

    return decorate(args[0]) if len(args) == 1 and callable(args[0]) and not kwargs else decorate


class _NoCudaC:
    def __init__(self, *args, **kwargs):
        raise NotImplementedError("the CuPy stand-in cannot compile CUDA C (ReductionKernel, RawKernel, "
                                  "RawModule): give the kernel a NumPy twin and test it where a GPU exists")


ReductionKernel = RawKernel = RawModule = _NoCudaC


def _params(spec: str) -> list[tuple[bool, str, str]]:
    """CuPy's parameter list, "raw T x, int32 K" -> [(raw, type, name), ...]."""
    out = []
    for part in spec.split(","):
        words = part.split()
        raw = words[0] == "raw"
        if len(words) != 2 + raw:
            raise ValueError(f"ElementwiseKernel: cannot read the parameter {part.strip()!r}")
        out.append((raw, words[-2], words[-1]))
    return out


class ElementwiseKernel:
    """``cupy.ElementwiseKernel`` for the fused ops of minidann.fast.fused: the stand-in cannot run CUDA C, so a
    call runs the op's NumPy twin (found by the kernel's name) as one launch.

    As strict as CuPy about its arguments: one per parameter; arrays on the device; the arrays of one type
    placeholder (T, S) of one dtype, and every placeholder given by some array (a scalar binds none: CuPy casts
    it to its parameter's type); an array of a named dtype (uint8, ...) of that dtype; the non-raw arrays of one
    shape (the loop runs over it). Outputs must be given (minidann always passes them).
    """

    def __init__(self, in_params, out_params, operation, name="kernel", **kwargs):
        from minidann.fast.fused import FUSED

        if name not in FUSED:
            raise NotImplementedError(f"the CuPy stand-in cannot compile CUDA C: kernel {name!r} has no NumPy "
                                      "twin in minidann.fast.fused")
        self.params = _params(in_params) + _params(out_params)
        self.n_in, self.name, self.twin = len(_params(in_params)), name, FUSED[name].twin

    def __call__(self, *args):
        if len(args) != len(self.params):
            raise TypeError(f"{self.name}: expected {len(self.params)} arguments (outputs included), got {len(args)}")
        placeholders, shapes = {}, set()
        for (raw, typ, pname), a in zip(self.params, args, strict=True):
            if isinstance(a, np.ndarray):
                raise TypeError(f"Unsupported type {type(a)} for {self.name} argument {pname}")
            if isinstance(a, ndarray):
                dtype = a.dtype
                if not raw:
                    shapes.add(a.shape)
            elif isinstance(a, (np.generic, int, float, bool)):
                dtype = a.dtype if isinstance(a, np.generic) else None
            else:
                raise TypeError(f"Unsupported type {type(a)} for {self.name} argument {pname}")
            if not isinstance(a, ndarray):
                continue  # a scalar binds no type: CuPy casts it to its parameter's type
            if len(typ) == 1:  # a type placeholder
                if placeholders.setdefault(typ, dtype) != dtype:
                    raise TypeError(f"{self.name}: argument {pname} is {dtype}, but {typ} is already "
                                    f"{placeholders[typ]}")
            elif dtype != np.dtype(typ):
                raise TypeError(f"{self.name}: argument {pname} must be {typ}, got {dtype}")
        unbound = {typ for _, typ, _ in self.params if len(typ) == 1} - set(placeholders)
        if unbound:
            raise TypeError(f"{self.name}: no array gives the type of {sorted(unbound)}")
        if len(shapes) > 1:
            raise ValueError(f"{self.name}: the non-raw arrays differ in shape: {sorted(shapes)}")
        for (_, _, pname), a in zip(self.params[self.n_in:], args[self.n_in:], strict=True):
            if not isinstance(a, ndarray):
                raise TypeError(f"{self.name}: output {pname} must be a device array")
        with counters.one_launch(self.name):
            self.twin(*[_unwrap(a) for a in args])
        outputs = args[self.n_in:]
        return outputs[0] if len(outputs) == 1 else outputs


class _StrideTricks:
    @staticmethod
    def as_strided(x, shape=None, strides=None):
        if not isinstance(x, ndarray):
            raise TypeError(f"Unsupported type {type(x)}")
        return ndarray(np.lib.stride_tricks.as_strided(x._a, shape=shape, strides=strides))


class lib:  # noqa: N801 - cupy.lib
    stride_tricks = _StrideTricks


# ---- cupy.cuda ------------------------------------------------------------------------------------------------

class _CUDARuntimeError(RuntimeError):
    pass


class _Runtime:
    CUDARuntimeError = _CUDARuntimeError
    device_count = 1

    @classmethod
    def getDeviceCount(cls):  # noqa: N802 - CuPy's names
        return cls.device_count

    @staticmethod
    def runtimeGetVersion():  # noqa: N802
        return 12080

    @staticmethod
    def driverGetVersion():  # noqa: N802
        return 12080

    @staticmethod
    def getDeviceProperties(i):  # noqa: N802
        return {"name": b"CuPy stand-in (NumPy on the CPU)", "totalGlobalMem": 16 * 2**30, "major": 9, "minor": 0,
                "multiProcessorCount": 1}

    @staticmethod
    def deviceSynchronize():  # noqa: N802
        counters.sync("deviceSynchronize")


class Stream:
    null = None

    def __init__(self, non_blocking=False):
        pass

    def synchronize(self):
        counters.sync("stream.synchronize")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    use = __enter__


Stream.null = Stream()


class Event:
    def __init__(self, *args, **kwargs):
        pass

    def record(self, stream=None):
        pass

    def synchronize(self):
        counters.sync("event.synchronize")


def _elapsed_time(start, end):
    return 0.0


class Device:
    def __init__(self, device=None):
        self.id = 0 if device is None else int(device)

    compute_capability = "90"

    def synchronize(self):
        counters.sync("device.synchronize")

    def use(self):
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    @property
    def mem_info(self):
        return (16 * 2**30 - _used_bytes(), 16 * 2**30)


def _used_bytes():
    return builtins.sum(a._a.nbytes for a in list(_live.values()))


class MemoryPool:
    def __init__(self):
        self._total = 0

    def used_bytes(self):
        return _used_bytes()

    def total_bytes(self):
        self._total = builtins.max(self._total, _used_bytes())
        return self._total

    def free_bytes(self):
        return self.total_bytes() - self.used_bytes()

    def free_all_blocks(self, stream=None):
        self._total = _used_bytes()

    def n_free_blocks(self):
        return 0

    def set_limit(self, size=None, fraction=None):
        pass

    def get_limit(self):
        return 0


class PinnedMemoryPool(MemoryPool):
    pass


_pool, _pinned_pool = MemoryPool(), PinnedMemoryPool()


def get_default_memory_pool():
    return _pool


def get_default_pinned_memory_pool():
    return _pinned_pool


class cuda:  # noqa: N801 - cupy.cuda
    runtime = _Runtime
    Device = Device
    Stream = Stream
    Event = Event
    MemoryPool = MemoryPool
    PinnedMemoryPool = PinnedMemoryPool
    get_elapsed_time = staticmethod(_elapsed_time)

    @staticmethod
    def get_current_stream(device=None):
        return Stream.null

    @staticmethod
    def is_available():
        return _Runtime.device_count > 0

    @staticmethod
    def get_device_id():
        return 0


# ---- installing it ----------------------------------------------------------------------------------------

def install(monkeypatch) -> Counters:
    """For one test: minidann's backend (and ``import cupy``) use this stand-in. Returns the counters, reset."""
    from minidann import backend

    this = sys.modules[__name__]
    monkeypatch.setitem(sys.modules, "cupy", this)
    monkeypatch.setattr(backend, "_cupy", this)
    monkeypatch.setattr(backend, "_cupy_error", None)
    monkeypatch.setattr(backend, "_kernel_error", None)
    counters.reset()
    return counters


def install_globally() -> None:
    """For a whole process (the programs run by ``python tests/cupy_standin.py ...``)."""
    from minidann import backend

    this = sys.modules[__name__]
    sys.modules["cupy"] = this
    backend._cupy, backend._cupy_error, backend._kernel_error = this, None, None


def main(argv: list[str]) -> None:
    """``python tests/cupy_standin.py -m MODULE ARGS...`` or ``python tests/cupy_standin.py SCRIPT ARGS...``.

    With MINIDANN_STANDIN_REPORT=path, the counters are written there as JSON when the program ends.
    """
    if not argv:
        raise SystemExit("usage: python tests/cupy_standin.py (-m MODULE | SCRIPT) [ARGS...]")
    install_globally()
    report = os.environ.get("MINIDANN_STANDIN_REPORT")
    if report:
        import atexit
        import json

        atexit.register(lambda: open(report, "w").write(json.dumps(
            {"launches": counters.n_launches, "syncs": dict(counters.syncs), "h2d": len(counters.h2d)})))
    if argv[0] == "-m":
        sys.argv = [argv[1], *argv[2:]]
        runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = list(argv)
        runpy.run_path(argv[0], run_name="__main__")


if __name__ == "__main__":
    # run as a script this file is __main__, which runpy replaces: the stand-in is the module imported by name
    # (the script's folder, tests/, is first on sys.path)
    import cupy_standin

    cupy_standin.main(sys.argv[1:])
