"""ctypes bindings of libwdmoe (emulation/wdmoe.h in the wdmoe repository)."""
import ctypes
import ctypes.util
import os
import sys
from pathlib import Path

API_VERSION = 1  # the WDMOE_API_VERSION these bindings need (at least)


class WdmoeError(ValueError):
    """An error reported by libwdmoe: one line naming the file and what is wrong."""


c_float_p = ctypes.POINTER(ctypes.c_float)
c_double_p = ctypes.POINTER(ctypes.c_double)
c_int_p = ctypes.POINTER(ctypes.c_int)
c_uchar_p = ctypes.POINTER(ctypes.c_ubyte)

# int fn(void *user, int layer, int n_tokens, int n_experts, int top_k, const float *probs,
#        const double *tau, const unsigned char *available, int *n, int *expert)
POLICY_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_int,
                             ctypes.c_int, ctypes.c_int, c_float_p, c_double_p, c_uchar_p,
                             c_int_p, c_int_p)


def _candidates():
    env = os.environ.get("WDMOE_LIBRARY")
    if env:
        return [env]
    out = []
    found = ctypes.util.find_library("wdmoe")
    if found:
        out.append(found)
    for prefix in dict.fromkeys([sys.prefix, "/usr/local", "/usr"]):
        for libdir in ("lib", "lib64", "lib/x86_64-linux-gnu", "lib/aarch64-linux-gnu"):
            out.append(os.path.join(prefix, libdir, "libwdmoe.so"))
    # an editable install (pip install -e) from a checkout built into ./build
    out.append(str(Path(__file__).resolve().parents[3] / "build" / "libwdmoe.so"))
    return out


def _declare(lib):
    S, P, R = ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p
    pp = ctypes.POINTER(ctypes.c_void_p)
    cs, sz, ci, cl = ctypes.c_char_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_long
    sig = {
        "wdmoe_api_version": (ci, []),
        "wdmoe_version": (cs, []),
        "wdmoe_free": (None, [ctypes.c_void_p]),
        "wdmoe_scenario_load": (ci, [pp, cs, cs, sz]),
        "wdmoe_scenario_parse": (ci, [pp, cs, cs, cs, sz]),
        "wdmoe_scenario_free": (None, [S]),
        "wdmoe_scenario_name": (cs, [S]),
        "wdmoe_scenario_policy": (cs, [S]),
        "wdmoe_scenario_n_devices": (ci, [S]),
        "wdmoe_probs_load": (ci, [pp, cs, cs, sz]),
        "wdmoe_probs_create": (ci, [pp, cl, ci, ci, ci, ci, ci, c_float_p, cs, sz]),
        "wdmoe_probs_save": (ci, [P, cs, cs, sz]),
        "wdmoe_probs_free": (None, [P]),
        "wdmoe_probs_dim": (cl, [P, cs]),
        "wdmoe_probs_data": (c_float_p, [P]),
        "wdmoe_replay": (ci, [pp, S, P, cs, cl, cs, sz]),
        "wdmoe_replay_fn": (ci, [pp, S, P, cs, POLICY_FN, ctypes.c_void_p, cl, cs, sz]),
        "wdmoe_result_free": (None, [R]),
        "wdmoe_result_get": (ci, [R, cs, c_double_p]),
        "wdmoe_result_name": (cs, [R, ci]),
        "wdmoe_result_latencies": (cl, [R, c_double_p, cl]),
        "wdmoe_result_json": (ctypes.c_void_p, [R]),
    }
    for name, (res, args) in sig.items():
        f = getattr(lib, name)
        f.restype, f.argtypes = res, args
    return lib


_lib = None


def lib():
    """libwdmoe, loaded once per process: $WDMOE_LIBRARY, else the system's
    library path (after `cmake --install`), else ./build of an editable checkout."""
    global _lib
    if _lib is not None:
        return _lib
    tried = []
    for path in _candidates():
        try:
            handle = ctypes.CDLL(path)
        except OSError as e:
            tried.append(f"{path} ({e})")
            continue
        if not hasattr(handle, "wdmoe_api_version"):
            tried.append(f"{path} (not libwdmoe)")
            continue
        v = handle.wdmoe_api_version()
        if v < API_VERSION:
            raise WdmoeError(f"{path}: libwdmoe API version {v}, this package needs {API_VERSION} "
                             "or newer: rebuild wdmoe")
        _lib = _declare(handle)
        return _lib
    raise WdmoeError("libwdmoe not found: build it (cmake --build build) and set "
                     "WDMOE_LIBRARY=/path/to/build/libwdmoe.so, or install it (cmake --install "
                     "build). Tried: " + "; ".join(tried))


def errbuf():
    return ctypes.create_string_buffer(1024)


def check(rc, err):
    if rc:
        raise WdmoeError(err.value.decode(errors="replace") or "libwdmoe: unknown error")
