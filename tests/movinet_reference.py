"""An independent MoViNet for import tests: numpy, channels-last, straight from TF-named weights.

Written from the semantics in shared/reference/architectures.md (not from mvcompile's IR), plus a
synthesiser of random checkpoints for any spec in the official TF naming (with Keras `_<n>` suffixes)
and in the PyTorch port's naming, holding the same values.
"""
from __future__ import annotations

import zlib

import numpy as np

EPS = 1e-3


# --- checkpoints ---------------------------------------------------------------------------------
def make_divisible(v: float, d: int = 8) -> int:
    new = max(d, int(v + d / 2) // d * d)
    return new + d if new < 0.9 * v else new


def synthesize(spec, conv_type: str, seed: int = 0) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(TF-named dict without suffixes, PyTorch-port state dict) with the same random values."""
    rng = np.random.default_rng(seed)
    tf: dict[str, np.ndarray] = {}
    pt: dict[str, np.ndarray] = {}
    two = conv_type == "2plus1d"

    def bn(unit: str, port: str, c: int, temporal: bool = False) -> None:
        vals = {"gamma": rng.uniform(0.5, 1.5, c), "beta": rng.normal(0, 0.1, c),
                "moving_mean": rng.normal(0, 0.1, c), "moving_variance": rng.uniform(0.5, 1.5, c)}
        scope = (f"{unit}/conv2d_temporal/bn_temporal" if temporal else f"{unit}/conv2d/bn") if two else \
            f"{unit}/{'bn_temporal' if temporal else 'bn'}"
        for k, v in vals.items():
            tf[f"{scope}/{k}:0"] = v.astype(np.float32)
        torch_names = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean", "moving_variance": "running_var"}
        for k, v in vals.items():
            pt[f"{port}.norm.{torch_names[k]}"] = v.astype(np.float32)
        pt[f"{port}.norm.num_batches_tracked"] = np.array(7, dtype=np.int64)

    def dense(unit: str, port: str, cin: int, cout: int, kernel=(1, 1, 1), bias: bool = False, norm: bool = True) -> None:
        kt, kh, kw = kernel
        k = rng.normal(0, np.sqrt(2.0 / (cin * kt * kh * kw)), (kt, kh, kw, cin, cout)).astype(np.float32)
        if two:
            tf[f"{unit}/conv2d/conv2d/kernel:0"] = k[0]
            pt[f"{port}.conv_1.conv2d.weight"] = k[0].transpose(3, 2, 0, 1)
        else:
            tf[f"{unit}/conv3d/kernel:0"] = k
            pt[f"{port}.conv_1.conv3d.weight"] = k.transpose(4, 3, 0, 1, 2)
        if bias:
            b = rng.normal(0, 0.1, cout).astype(np.float32)
            tf[f"{unit}/{'conv2d/conv2d' if two else 'conv3d'}/bias:0"] = b
            pt[f"{port}.conv_1.{'conv2d' if two else 'conv3d'}.bias"] = b
        if norm:
            bn(unit, f"{port}.conv_1", cout)

    def depthwise(unit: str, port: str, c: int, kernel) -> None:
        kt, kh, kw = kernel
        k = rng.normal(0, np.sqrt(2.0 / (kt * kh * kw)), (kt, kh, kw, 1, c)).astype(np.float32)
        if not two:
            tf[f"{unit}/conv3d/kernel:0"] = k
            pt[f"{port}.conv_1.conv3d.weight"] = k.transpose(4, 3, 0, 1, 2)
            bn(unit, f"{port}.conv_1", c)
            return
        spatial = k[:1].reshape(kh, kw, c, 1)
        tf[f"{unit}/conv2d/depthwise_conv2d/depthwise_kernel:0"] = spatial
        pt[f"{port}.conv_1.conv2d.weight"] = spatial.transpose(2, 3, 0, 1)
        bn(unit, f"{port}.conv_1", c)
        if kt > 1:
            temporal = rng.normal(0, np.sqrt(2.0 / kt), (kt, 1, c, 1)).astype(np.float32)
            tf[f"{unit}/conv2d_temporal/depthwise_conv2d/depthwise_kernel:0"] = temporal
            pt[f"{port}.conv_2.conv2d.weight"] = temporal.transpose(2, 3, 0, 1)
            bn(unit, f"{port}.conv_2", c, temporal=True)

    o = spec.options
    dense("stem/stem", "conv1", 3, spec.stem.filters, tuple(spec.stem.kernel))
    cin = spec.stem.filters
    for b, stage in enumerate(spec.stages):
        for li, layer in enumerate(stage.layers):
            u, p, e = f"block{b}_layer{li}/bneck", f"blocks.b{b}_l{li}", layer.expand
            dense(f"{u}/expansion", f"{p}.expand", cin, e)
            depthwise(f"{u}/feature", f"{p}.deep", e, tuple(layer.kernel))
            mult = 2 if o.se_type == "2plus3d" else 1
            hidden = make_divisible(0.25 * e * mult)
            dense(f"{u}/se/se_reduce", f"{p}.se.fc1", e * mult, hidden, bias=True, norm=False)
            dense(f"{u}/se/se_expand", f"{p}.se.fc2", hidden, e, bias=True, norm=False)
            if o.positional_encoding:
                tf[f"{u}/se/positional_encoding/rezero/scale:0"] = np.float32(rng.uniform(0.5, 1.0))
            dense(f"{u}/projection", f"{p}.project", e, stage.out)
            strided = list(layer.stride) != [1, 1, 1]
            if strided or cin != stage.out:
                dense(f"{u}/skip/skip_project", f"{p}.res.{1 if strided else 0}", cin, stage.out)
            scale = np.float32(rng.uniform(0.5, 1.0) * rng.choice([-1, 1]))
            tf[f"block{b}_layer{li}/scale:0"] = scale
            pt[f"{p}.alpha"] = np.array(scale)
            cin = stage.out
    dense("head/project", "conv7", cin, spec.head.project_filters)
    dense("classifier_head/head", "classifier.0", spec.head.project_filters, spec.head.classifier_width,
          bias=True, norm=False)
    dense("classifier_head/classifier", "classifier.3", spec.head.classifier_width, spec.num_classes,
          bias=True, norm=False)
    return {k: np.asarray(v, dtype=np.float32) for k, v in tf.items()}, pt


def keras_suffixed(tf: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The names a Keras process that built other layers first would give: `_<n>` on auto-named layers."""
    def rename(name: str) -> str:
        path, var = name.rsplit("/", 1)
        parts = path.split("/")
        n = zlib.crc32(path.encode()) % 5
        if parts[-1] in ("conv3d", "conv2d", "depthwise_conv2d", "conv3d_temporal") and n:
            parts[-1] = f"{parts[-1]}_{n}"
        parts = [f"{p}_1" if p == "classifier_head" else p for p in parts]
        return "/".join(parts + [var])
    return {rename(k): v for k, v in tf.items()}


def to_3d_2plus1d(tf: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A 2plus1d TF dict as the 3d_2plus1d training code names and shapes it (5-D Conv3D kernels)."""
    out = {}
    for name, v in tf.items():
        if name.endswith("/conv2d_temporal/depthwise_conv2d/depthwise_kernel:0"):  # [kt,1,C,1]
            out[name.replace("conv2d_temporal/depthwise_conv2d/depthwise_kernel", "conv3d_temporal/kernel")] = \
                v.transpose(0, 1, 3, 2)[:, :, None]
        elif name.endswith("/conv2d/depthwise_conv2d/depthwise_kernel:0"):  # [kh,kw,C,1]
            out[name.replace("conv2d/depthwise_conv2d/depthwise_kernel", "conv3d/kernel")] = v.transpose(0, 1, 3, 2)[None]
        elif "/conv2d/conv2d/" in name:
            out[name.replace("conv2d/conv2d", "conv3d")] = v[None] if v.ndim == 4 else v
        else:
            out[name.replace("/conv2d_temporal/", "/").replace("/conv2d/bn/", "/bn/")] = v
    return out


# --- the model -----------------------------------------------------------------------------------
def _act(x: np.ndarray, fn: str) -> np.ndarray:
    relu6 = lambda v: np.clip(v, 0, 6)  # noqa: E731
    return {"swish": lambda: x / (1 + np.exp(-x)), "sigmoid": lambda: 1 / (1 + np.exp(-x)),
            "hard_swish": lambda: x * relu6(x + 3) / 6, "hard_sigmoid": lambda: relu6(x + 3) * 0.16667}[fn]()


def _same(n: int, k: int, s: int) -> tuple[int, int]:
    total = max(k - ((n - 1) % s + 1), 0)
    return total // 2, total - total // 2


def _conv(x: np.ndarray, k: np.ndarray, stride: int, causal: bool, depthwise: bool) -> np.ndarray:
    """x [T,H,W,C], k [kt,kh,kw,in|1,out] (TF layout); TF SAME spatially; same or causal in time."""
    kt, kh, kw = k.shape[:3]
    t, h, w, _ = x.shape
    tp = (kt - 1, 0) if causal else ((kt - 1) // 2, kt - 1 - (kt - 1) // 2)
    hp, wp = _same(h, kh, stride), _same(w, kw, stride)
    xp = np.pad(x, (tp, hp, wp, (0, 0)))
    ho, wo = (h + sum(hp) - kh) // stride + 1, (w + sum(wp) - kw) // stride + 1
    out = np.zeros((t, ho, wo, k.shape[-1]), dtype=np.float64)
    for a in range(kt):
        for b in range(kh):
            for c in range(kw):
                patch = xp[a:a + t, b:b + stride * (ho - 1) + 1:stride, c:c + stride * (wo - 1) + 1:stride]
                out += patch * k[a, b, c, 0] if depthwise else patch @ k[a, b, c]
    return out


class Reference:
    """Runs a spec's model from TF-named weights (`3d` or `2plus1d` layout, no suffixes)."""

    def __init__(self, spec, w: dict[str, np.ndarray], causal: bool) -> None:
        self.s, self.w, self.causal = spec, {k: v.astype(np.float64) for k, v in w.items()}, causal
        self.two = spec.options.conv_type == "2plus1d"

    def bn(self, x: np.ndarray, scope: str) -> np.ndarray:
        g = lambda v: self.w[f"{scope}/{v}:0"]  # noqa: E731
        return (x - g("moving_mean")) / np.sqrt(g("moving_variance") + EPS) * g("gamma") + g("beta")

    def dense(self, x: np.ndarray, unit: str, stride: int = 1, act: str | None = None) -> np.ndarray:
        if self.two:
            y = _conv(x, self.w[f"{unit}/conv2d/conv2d/kernel:0"][None], stride, self.causal, False)
            y = self.bn(y, f"{unit}/conv2d/bn")
        else:
            y = self.bn(_conv(x, self.w[f"{unit}/conv3d/kernel:0"], stride, self.causal, False), f"{unit}/bn")
        return _act(y, act) if act else y

    def linear(self, x: np.ndarray, unit: str) -> np.ndarray:
        pre = f"{unit}/conv2d/conv2d" if self.two else f"{unit}/conv3d"
        k = self.w[f"{pre}/kernel:0"].reshape(x.shape[-1], -1)
        return x @ k + self.w[f"{pre}/bias:0"]

    def feature(self, x: np.ndarray, unit: str, kernel, stride: int) -> np.ndarray:
        a = self.s.options.activation
        if not self.two:
            return _act(self.bn(_conv(x, self.w[f"{unit}/conv3d/kernel:0"], stride, self.causal, True), f"{unit}/bn"), a)
        k = self.w[f"{unit}/conv2d/depthwise_conv2d/depthwise_kernel:0"]
        x = _act(self.bn(_conv(x, k.transpose(0, 1, 3, 2)[None], stride, self.causal, True), f"{unit}/conv2d/bn"), a)
        if kernel[0] == 1:
            return x
        kt = self.w[f"{unit}/conv2d_temporal/depthwise_conv2d/depthwise_kernel:0"]
        y = _conv(x, kt.transpose(0, 1, 3, 2)[:, :, None], 1, self.causal, True)
        return _act(self.bn(y, f"{unit}/conv2d_temporal/bn_temporal"), a)

    def temporal_mean(self, v: np.ndarray) -> np.ndarray:
        """[T,1,1,C] → per-frame cumulative means (causal) or the clip mean on every frame."""
        if self.causal:
            return np.cumsum(v, axis=0) / np.arange(1, len(v) + 1)[:, None, None, None]
        return np.broadcast_to(v.mean(axis=0, keepdims=True), v.shape)

    def se(self, x: np.ndarray, unit: str) -> np.ndarray:
        o = self.s.options
        space = x.mean(axis=(1, 2), keepdims=True)
        pooled = self.temporal_mean(space)
        if o.se_type == "2plus3d":
            pooled = np.concatenate([pooled, space], axis=-1)
        if o.positional_encoding:
            c = pooled.shape[-1]
            j = np.arange(c)
            angles = np.arange(len(x))[:, None] / 10000.0 ** (2 * (j // 2) / c)
            pe = np.concatenate([np.sin(angles[:, 0::2]), np.cos(angles[:, 1::2])], axis=1)
            pooled = pooled + self.w[f"{unit}/positional_encoding/rezero/scale:0"] * pe[:, None, None, :]
        h = _act(self.linear(pooled, f"{unit}/se_reduce"), o.activation)
        return x * _act(self.linear(h, f"{unit}/se_expand"), o.gating)

    def skip(self, x: np.ndarray, unit: str, out: int, stride: int) -> np.ndarray:
        if stride == 1 and x.shape[-1] == out:
            return x
        if stride != 1:
            total = _conv(x, np.ones((1, 3, 3, 1, x.shape[-1])), 2, False, True)  # zero padding: real cells only
            count = _conv(np.ones(x.shape[:3] + (1,)), np.ones((1, 3, 3, 1, 1)), 2, False, True)
            x = total / count
        return self.dense(x, f"{unit}/skip_project")

    def __call__(self, clip: np.ndarray) -> np.ndarray:
        """clip [T,H,W,3] → logits [classes] (causal: after the last frame)."""
        s, a = self.s, self.s.options.activation
        x = self.dense(clip.astype(np.float64), "stem/stem", s.stem.stride[1], a)
        for b, stage in enumerate(s.stages):
            for li, layer in enumerate(stage.layers):
                u = f"block{b}_layer{li}/bneck"
                y = self.dense(x, f"{u}/expansion", act=a)
                y = self.feature(y, f"{u}/feature", layer.kernel, layer.stride[1])
                y = self.se(y, f"{u}/se")
                y = self.dense(y, f"{u}/projection") * self.w[f"block{b}_layer{li}/scale:0"]
                x = self.skip(x, f"{u}/skip", stage.out, layer.stride[1]) + y
        x = self.dense(x, "head/project", act=a).mean(axis=(0, 1, 2))
        return self.linear(_act(self.linear(x, "classifier_head/head"), "swish"), "classifier_head/classifier")
