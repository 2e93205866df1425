"""Scenarios, recorded router probabilities and one replay, over libwdmoe."""
import copy
import ctypes
import json
import os
import tempfile

import numpy as np

from . import _lib
from ._lib import WdmoeError


class Probs:
    """Recorded router probabilities: [tokens, layers, experts] plus the model
    shape the emulator's compute model needs. Load a .wdpr file
    (`wdmoe generate --record-probs`) or build one from an array."""

    def __init__(self, handle):
        self._h = ctypes.c_void_p(handle)

    @classmethod
    def load(cls, path):
        out, err = ctypes.c_void_p(), _lib.errbuf()
        _lib.check(_lib.lib().wdmoe_probs_load(ctypes.byref(out), os.fsencode(path), err,
                                               len(err)), err)
        return cls(out.value)

    @classmethod
    def from_array(cls, probs, *, top_k, hidden, ffn):
        """probs: [tokens, layers, experts], each row a softmax (sums to 1). hidden,
        ffn: the MoE's hidden size and expert width (what is sent and computed)."""
        a = np.ascontiguousarray(probs, dtype=np.float32)
        if a.ndim != 3:
            raise WdmoeError(f"probabilities: expected [tokens, layers, experts], got shape "
                             f"{a.shape}")
        out, err = ctypes.c_void_p(), _lib.errbuf()
        _lib.check(_lib.lib().wdmoe_probs_create(
            ctypes.byref(out), a.shape[0], a.shape[1], a.shape[2], int(top_k), int(hidden),
            int(ffn), a.ctypes.data_as(_lib.c_float_p), err, len(err)), err)
        return cls(out.value)

    def __del__(self):
        if getattr(self, "_h", None) and _lib._lib is not None:
            _lib._lib.wdmoe_probs_free(self._h)
            self._h = None

    def dim(self, name):
        v = _lib.lib().wdmoe_probs_dim(self._h, name.encode())
        if v < 0:
            raise KeyError(name)
        return v

    @property
    def shape(self):
        """(tokens, layers, experts)"""
        return (self.dim("n_tokens"), self.dim("n_layers"), self.dim("n_experts"))

    @property
    def top_k(self):
        return self.dim("top_k")

    def __len__(self):
        return self.dim("n_tokens")

    def array(self):
        """A copy of the probabilities as a numpy array [tokens, layers, experts]."""
        n = int(np.prod(self.shape))
        if n == 0:
            return np.zeros(self.shape, dtype=np.float32)
        p = _lib.lib().wdmoe_probs_data(self._h)
        return np.ctypeslib.as_array(p, shape=(n,)).reshape(self.shape).copy()

    def save(self, path):
        """Write a .wdpr file (atomically)."""
        err = _lib.errbuf()
        _lib.check(_lib.lib().wdmoe_probs_save(self._h, os.fsencode(path), err, len(err)), err)

    def to_bytes(self):
        """The .wdpr file's bytes (how a sweep ships the probabilities to workers)."""
        with tempfile.TemporaryDirectory(prefix="wdmoe-") as d:
            p = os.path.join(d, "p.wdpr")
            self.save(p)
            with open(p, "rb") as f:
                return f.read()

    @classmethod
    def from_bytes(cls, data):
        with tempfile.TemporaryDirectory(prefix="wdmoe-") as d:
            p = os.path.join(d, "p.wdpr")
            with open(p, "wb") as f:
                f.write(data)
            return cls.load(p)

    def __reduce__(self):
        return (Probs.from_bytes, (self.to_bytes(),))

    def __repr__(self):
        t, l, e = self.shape
        return f"Probs(tokens={t}, layers={l}, experts={e}, top_k={self.top_k})"


def _set_path(d, key, value):
    """d with d[a][b]... = value for key "a.b..." (list items by index); a policy
    given as a name becomes {"name": ...} when a parameter is set."""
    parts = key.split(".")
    node = d
    for i, k in enumerate(parts[:-1]):
        if isinstance(node, list):
            node = node[int(k)]
            continue
        nxt = node.get(k)
        if nxt is None:
            nxt = node[k] = {}
        elif isinstance(nxt, str) and k == "policy" and i == 0:
            nxt = node[k] = {"name": nxt}
        elif not isinstance(nxt, (dict, list)):
            raise WdmoeError(f"scenario override {key!r}: {'.'.join(parts[:i + 1])} is "
                             f"{nxt!r}, not an object")
        node = nxt
    if isinstance(node, list):
        node[int(parts[-1])] = value
    else:
        node[parts[-1]] = value


class Scenario:
    """A scenario: its JSON (a dict you may change) and the file it came from
    (relative trace files resolve against that file's folder). The JSON is
    checked by libwdmoe when the scenario is used (or by check())."""

    def __init__(self, data, path):
        self.data = data
        self.path = os.path.abspath(path)

    @classmethod
    def load(cls, path):
        with open(path) as f:
            try:
                data = json.load(f)
            except json.JSONDecodeError as e:
                raise WdmoeError(f"{path}: {e}") from None
        return cls(data, path)

    @classmethod
    def coerce(cls, s):
        return s if isinstance(s, Scenario) else cls.load(s)

    @property
    def name(self):
        return self.data.get("name") or os.path.splitext(os.path.basename(self.path))[0]

    def override(self, overrides=None, **kw):
        """A copy with keys set by dotted path: {"policy.gamma": 1.1,
        "radio.bandwidth_hz": 20e6, "devices.0.distance_m": 300}."""
        d = copy.deepcopy(self.data)
        for k, v in {**(overrides or {}), **kw}.items():
            _set_path(d, k, v)
        return Scenario(d, self.path)

    def handle(self):
        """A libwdmoe scenario (freed with the returned object)."""
        return _ScenarioHandle(json.dumps(self.data), self.path)

    def check(self):
        """Raise WdmoeError (the key path and what is wrong) when libwdmoe refuses it."""
        self.handle()
        return self

    def __repr__(self):
        return f"Scenario({self.name!r}, {self.path!r})"


class _ScenarioHandle:
    def __init__(self, text, path):
        out, err = ctypes.c_void_p(), _lib.errbuf()
        _lib.check(_lib.lib().wdmoe_scenario_parse(ctypes.byref(out), text.encode(),
                                                   os.fsencode(path), err, len(err)), err)
        self.h = ctypes.c_void_p(out.value)

    @property
    def policy(self):
        return _lib.lib().wdmoe_scenario_policy(self.h).decode()

    def __del__(self):
        if getattr(self, "h", None) and _lib._lib is not None:
            _lib._lib.wdmoe_scenario_free(self.h)
            self.h = None


class Result:
    """One replay: .metrics (every number of the summary, by its JSON name, e.g.
    decode.mean_s: time per output token, decode.p95_s, prefill.mean_s: time to
    first token, decode.experts_per_token; docs/results.md), .latencies (time per
    output token of every decode step, numpy), .json (the run as `wdmoe replay` writes it)."""

    def __init__(self, handle):
        L = _lib.lib()
        try:
            self.metrics = {}
            v = ctypes.c_double()
            i = 0
            while True:
                name = L.wdmoe_result_name(handle, i)
                if name is None:
                    break
                L.wdmoe_result_get(handle, name, ctypes.byref(v))
                self.metrics[name.decode()] = v.value
                i += 1
            n = L.wdmoe_result_latencies(handle, None, 0)
            self.latencies = np.zeros(n, dtype=np.float64)
            if n:
                L.wdmoe_result_latencies(handle, self.latencies.ctypes.data_as(_lib.c_double_p),
                                         n)
            p = L.wdmoe_result_json(handle)
            if not p:
                raise MemoryError("libwdmoe: out of memory")
            try:
                self.json = json.loads(ctypes.string_at(p).decode())
            finally:
                L.wdmoe_free(p)
        finally:
            L.wdmoe_result_free(handle)
        for k in ("tokens", "forwards", "steps"):
            self.metrics[k] = int(self.metrics[k])
        self.scenario = self.json["scenario"]
        self.policy = self.json["policy"]

    def __getitem__(self, name):
        return self.metrics[name]

    def __repr__(self):
        m = self.metrics
        return (f"Result({self.scenario!r}, {self.policy!r}, tokens={m['tokens']}, "
                f"mean={m['decode.mean_s'] * 1e3:.4f} ms, p95={m['decode.p95_s'] * 1e3:.4f} "
                f"ms, experts/token={m['decode.experts_per_token']:.3f})")


def _policy_trampoline(fn, errors):
    """The C callback around a Python policy fn(p, tau, available, top_k) ->
    expert ids, called once per token (p: [experts] float32, tau: [experts]
    seconds, inf when unreachable; available: [experts] bool)."""

    def cb(user, layer, n_tokens, n_experts, top_k, probs, tau, avail, n, expert):
        try:
            P = np.ctypeslib.as_array(probs, shape=(n_tokens, n_experts))
            tau_a = np.ctypeslib.as_array(tau, shape=(n_experts,)).copy()
            av = np.ctypeslib.as_array(avail, shape=(n_experts,)).astype(bool)
            for t in range(n_tokens):
                chosen = [int(e) for e in fn(P[t].copy(), tau_a, av, top_k)]
                if len(chosen) > n_experts:
                    raise WdmoeError(f"policy chose {len(chosen)} experts of {n_experts}")
                n[t] = len(chosen)
                for j, e in enumerate(chosen):
                    expert[t * n_experts + j] = e
            return 0
        except BaseException as e:  # noqa: B902 (re-raised by replay)
            errors.append(e)
            return 1

    return _lib.POLICY_FN(cb)


def replay(probs, scenario, policy=None, tokens=None, name=None):
    """Replay recorded router probabilities through a scenario.

    probs: Probs or a .wdpr path; scenario: Scenario or a JSON path.
    policy: a built-in policy name (topk, wdmoe, wlr-drop, dynamic, fastest),
    None for the scenario's own, or a Python function
    fn(p, tau, available, top_k) -> expert ids (slower; for prototyping).
    tokens: replay only the first N tokens. name: the label of a Python policy
    (default: its function name). Returns a Result."""
    pr = probs if isinstance(probs, Probs) else Probs.load(probs)
    sc = Scenario.coerce(scenario).handle()
    out, err = ctypes.c_void_p(), _lib.errbuf()
    n_tok = int(tokens or 0)
    L = _lib.lib()
    if callable(policy):
        label = name or getattr(policy, "__name__", "python")
        errors = []
        cb = _policy_trampoline(policy, errors)
        rc = L.wdmoe_replay_fn(ctypes.byref(out), sc.h, pr._h, label.encode(), cb, None, n_tok,
                               err, len(err))
        if errors:
            raise errors[0]
    else:
        rc = L.wdmoe_replay(ctypes.byref(out), sc.h, pr._h,
                            policy.encode() if policy else None, n_tok, err, len(err))
    _lib.check(rc, err)
    return Result(out.value)


def version():
    """(wdmoe release, libwdmoe API version) of the library in use."""
    L = _lib.lib()
    return L.wdmoe_version().decode(), L.wdmoe_api_version()
