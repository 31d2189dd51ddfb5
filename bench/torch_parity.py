#!/usr/bin/env python3
"""PyTorch's answers for tests/torch_parity.rs: a small MLP trained 128 steps with each optimizer.

    python3 bench/torch_parity.py [--out tests/fixtures/torch/mlp.safetensors]

Makes its own data and initial weights with fixed seeds (numpy for the data, torch's default
nn.Linear initialisation for the weights), trains the same model once per optimizer in float32
and again in float64, and writes one safetensors file with
  x [rows, 12] f32, labels [rows] i32,
  init.{j}.weight [in, out] and init.{j}.bias [out]   (dense layer j in wgnn's layout: W is
                                                      torch's weight transposed, y = x·W + b),
  {opt}.loss [128] (float32 run) and {opt}.loss64 [128] (float64 run, stored as f64),
  {opt}.{j}.weight, {opt}.{j}.bias                    (float32 run's final weights, wgnn layout),
(an optimizer's third value, where it has one, is clip_grad_norm_'s max_norm before every step),
and in the metadata each optimizer's float32-vs-float64 spread (max |Δloss|/loss, max |Δw|).
The model: Dense(12→16, relu) → Dense(16→16, tanh) → Dense(16→5), softmax cross-entropy (mean
over the batch), batches of 32 in order (no shuffle), 8 epochs over 512 rows = 128 steps.
The optimizers' names and hyper-parameters are those tests/torch_parity.rs builds in wgnn.

With --cnn it writes tests/fixtures/torch/cnn.safetensors instead: 8×8×1 images (channels last, as
wgnn takes them), Conv2d(1→4, 3×3, valid, no bias) → BatchNorm2d(4) → relu → MaxPool2d(2) → flatten →
Dense(36→3), batches of 16 in order, 16 epochs over 128 images = 128 steps, SGD with momentum and
Adam. The conversions: a wgnn kernel [kh, kw, cin, cout] is torch's [cout, cin, kh, kw] permuted
(2, 3, 1, 0); wgnn flattens [h, w, c] (channels last), so the torch model permutes NCHW to NHWC
before its flatten and the dense weight needs no reordering; batch norm normalises by the batch's
biased variance and keeps the unbiased one in running_var, in both. Every parameter is stored by
wgnn's name (init.layers.{i}.{slot}, {opt}.layers.{i}.{slot}), running statistics included.
Needs numpy, torch and safetensors (pip install torch numpy safetensors).
"""
import argparse
import math

import numpy as np
import torch
from safetensors.numpy import save_file
from torch import nn

ROWS, FEATURES, CLASSES, BATCH, EPOCHS = 512, 12, 5, 32, 8
STEPS = ROWS // BATCH * EPOCHS


def optimizers():
    """name -> (make(params) -> (optimizer, scheduler or None))."""
    sgd = torch.optim.SGD
    return {
        "sgd": lambda p: (sgd(p, lr=0.1), None),
        "sgd_momentum": lambda p: (sgd(p, lr=0.05, momentum=0.9), None),
        "sgd_nesterov": lambda p: (sgd(p, lr=0.05, momentum=0.9, nesterov=True), None),
        "sgd_weight_decay": lambda p: (sgd(p, lr=0.05, momentum=0.9, weight_decay=0.01), None),
        "adam": lambda p: (torch.optim.Adam(p, lr=2e-3, eps=1e-7), None),
        "adam_l2": lambda p: (torch.optim.Adam(p, lr=2e-3, eps=1e-7, weight_decay=1e-3), None),
        "adamw": lambda p: (torch.optim.AdamW(p, lr=2e-3, eps=1e-7, weight_decay=0.01), None),
        "rmsprop": lambda p: (torch.optim.RMSprop(p, lr=1e-3, alpha=0.9, eps=1e-7), None),
        "rmsprop_momentum": lambda p: (torch.optim.RMSprop(p, lr=1e-3, alpha=0.9, eps=1e-7, momentum=0.9), None),
        "adagrad": lambda p: (torch.optim.Adagrad(p, lr=0.05, initial_accumulator_value=0.1, eps=1e-7), None),
        "adagrad_torch_defaults": lambda p: (torch.optim.Adagrad(p, lr=0.05), None),
        "adadelta": lambda p: (torch.optim.Adadelta(p, lr=1.0, rho=0.95, eps=1e-6), None),
        "sgd_cosine": lambda p: cosine(sgd(p, lr=0.1, momentum=0.9)),
        # nanoGPT's configure_optimizers: weight decay on the 2-D tensors only, not the biases.
        "adamw_matrices": lambda p: (torch.optim.AdamW(matrices_decay(p, 0.1), lr=2e-3, eps=1e-7), None),
        "adamw_warmup_cosine": lambda p: warmup_cosine(torch.optim.AdamW(p, lr=2e-3, eps=1e-7, weight_decay=0.01)),
        # clip_grad_norm_ before every step (the third value: max_norm), Keras' global_clipnorm.
        "adamw_clip": lambda p: (torch.optim.AdamW(p, lr=2e-3, eps=1e-7, weight_decay=0.01), None, CLIP_NORM),
        "sgd_momentum_clip": lambda p: (sgd(p, lr=0.05, momentum=0.9), None, CLIP_NORM),
    }


# Below the MLP's gradient norm on most of its 128 steps, so that clipping is active (the script
# prints on how many).
CLIP_NORM = 0.25


def matrices_decay(params, weight_decay):
    params = list(params)
    return [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]


WARMUP, DECAY_END, MIN_LR = 16, 100, 2e-4


def warmup_cosine(opt):
    # nanoGPT's get_lr with it = k = t − 1 (as wgnn's LrSchedule::WarmupCosine: lr·(k+1)/W in the
    # warmup), as a factor of the base rate 2e-3: min_lr from update DECAY_END + 1 on.
    def factor(k):
        if k < WARMUP:
            return (k + 1) / WARMUP
        ratio = (min(k, DECAY_END) - WARMUP) / (DECAY_END - WARMUP)
        return (MIN_LR + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (2e-3 - MIN_LR)) / 2e-3
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


def cosine(opt):
    # Stepped after every update: update t uses eta_min + (lr − eta_min)(1 + cos(π(t−1)/T))/2.
    return opt, torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=STEPS, eta_min=1e-3)


def data():
    rng = np.random.default_rng(28)
    x = rng.uniform(-1.0, 1.0, size=(ROWS, FEATURES)).astype(np.float32)
    w = rng.uniform(-1.0, 1.0, size=(FEATURES, CLASSES))
    labels = np.argmax(x.astype(np.float64) @ w, axis=1).astype(np.int32)
    return x, labels


def initial_layers():
    torch.manual_seed(28)
    return [nn.Linear(FEATURES, 16), nn.Linear(16, 16), nn.Linear(16, CLASSES)]


def train(make, layers, x, labels, dtype):
    model = nn.Sequential(layers[0], nn.ReLU(), layers[1], nn.Tanh(), layers[2]).to(dtype)
    made = make(model.parameters())
    opt, sched = made[:2]
    clip = made[2] if len(made) > 2 else None
    clipped = 0
    xs = torch.from_numpy(x).to(dtype)
    ys = torch.from_numpy(labels).long()
    loss_fn = nn.CrossEntropyLoss()
    losses = []
    for _ in range(EPOCHS):
        for start in range(0, ROWS, BATCH):
            opt.zero_grad()
            loss = loss_fn(model(xs[start:start + BATCH]), ys[start:start + BATCH])
            loss.backward()
            if clip is not None:
                clipped += int(nn.utils.clip_grad_norm_(model.parameters(), clip) > clip)
            opt.step()
            if sched is not None:
                sched.step()
            losses.append(loss.item())
    if clip is not None and dtype == torch.float32:
        print(f"    clipped on {clipped} of {len(losses)} steps")
    return np.array(losses), [(l.weight.detach().double().numpy().T, l.bias.detach().double().numpy()) for l in
                              (model[0], model[2], model[4])]


CNN_ROWS, CNN_BATCH, CNN_EPOCHS, CNN_CLASSES = 128, 16, 16, 3


class ChannelsLastFlatten(nn.Module):
    def forward(self, x):
        return x.permute(0, 2, 3, 1).flatten(1)


def cnn_data():
    rng = np.random.default_rng(29)
    x = rng.uniform(-1.0, 1.0, size=(CNN_ROWS, 8, 8, 1)).astype(np.float32)
    w = rng.uniform(-1.0, 1.0, size=(64, CNN_CLASSES))
    labels = np.argmax(x.reshape(CNN_ROWS, 64).astype(np.float64) @ w, axis=1).astype(np.int32)
    return x, labels


def cnn_model():
    torch.manual_seed(29)
    # No convolution bias: batch norm removes it, so its exact gradient is 0 and Adam would turn
    # the rounding noise in its place into full steps (a 9e-3 float32-vs-float64 spread).
    return nn.Sequential(nn.Conv2d(1, 4, 3, bias=False), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
                         ChannelsLastFlatten(), nn.Linear(36, CNN_CLASSES))


def cnn_named(model):
    """Every tensor of the torch CNN by wgnn's parameter name, in wgnn's layout (f64)."""
    conv, bn, dense = model[0], model[1], model[5]
    as_np = lambda t: t.detach().double().numpy()  # noqa: E731
    return {
        "layers.0.weight": as_np(conv.weight).transpose(2, 3, 1, 0),
        "layers.1.gamma": as_np(bn.weight),
        "layers.1.beta": as_np(bn.bias),
        "layers.1.running_mean": as_np(bn.running_mean),
        "layers.1.running_var": as_np(bn.running_var),
        "layers.5.weight": as_np(dense.weight).T,
        "layers.5.bias": as_np(dense.bias),
    }


def cnn_optimizers():
    return {
        "sgd_momentum": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9),
        "adam": lambda p: torch.optim.Adam(p, lr=2e-3, eps=1e-7),
    }


def cnn_main(out):
    x, labels = cnn_data()
    init = cnn_model()
    tensors = {"x": x, "labels": labels}
    tensors.update({f"init.{k}": np.ascontiguousarray(v, dtype=np.float32) for k, v in cnn_named(init).items()})
    metadata = {"torch": torch.__version__, "steps": str(CNN_ROWS // CNN_BATCH * CNN_EPOCHS)}
    xs = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
    ys = torch.from_numpy(labels).long()
    for name, make in cnn_optimizers().items():
        runs = {}
        for dtype in (torch.float32, torch.float64):
            model = cnn_model().to(dtype)
            model.load_state_dict(init.state_dict())
            model.train()
            opt = make(model.parameters())
            losses = []
            for _ in range(CNN_EPOCHS):
                for start in range(0, CNN_ROWS, CNN_BATCH):
                    opt.zero_grad()
                    loss = nn.functional.cross_entropy(model(xs[start:start + CNN_BATCH].to(dtype)),
                                                       ys[start:start + CNN_BATCH])
                    loss.backward()
                    opt.step()
                    losses.append(loss.item())
            runs[dtype] = (np.array(losses), cnn_named(model))
        (l32, p32), (l64, p64) = runs[torch.float32], runs[torch.float64]
        tensors[f"{name}.loss"] = l32.astype(np.float32)
        tensors[f"{name}.loss64"] = l64
        for k, v in p32.items():
            tensors[f"{name}.{k}"] = np.ascontiguousarray(v, dtype=np.float32)
            tensors[f"{name}.{k}.f64"] = np.ascontiguousarray(p64[k])
        loss_spread = float(np.max(np.abs(l32 - l64) / np.abs(l64)))
        w_spread = max(float(np.max(np.abs(p32[k] - p64[k]))) for k in p32)
        for k in p32:
            print(f"    {k:22s} float32 vs float64: {float(np.max(np.abs(p32[k] - p64[k]))):.2e}")
        worst = int(np.argmax(np.abs(l32 - l64) / np.abs(l64)))
        print(f"    worst loss step {worst}: {l32[worst]:.6f} vs {l64[worst]:.6f}")
        metadata[f"{name}.spread"] = f"loss {loss_spread:.2e} weights {w_spread:.2e}"
        print(f"cnn {name:14s} loss {l32[0]:.4f} -> {l32[-1]:.4f}   float32 vs float64: "
              f"loss {loss_spread:.2e} relative, weights {w_spread:.2e}")
    save_file(tensors, out, metadata=metadata)
    print(f"wrote {out}")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=None, help="default tests/fixtures/torch/mlp.safetensors (cnn.safetensors)")
    p.add_argument("--cnn", action="store_true", help="the CNN's fixture instead of the MLP's")
    args = p.parse_args()
    if args.cnn:
        return cnn_main(args.out or "tests/fixtures/torch/cnn.safetensors")
    args.out = args.out or "tests/fixtures/torch/mlp.safetensors"
    x, labels = data()
    tensors = {"x": x, "labels": labels}
    init = initial_layers()
    for j, layer in enumerate(init):
        tensors[f"init.{j}.weight"] = layer.weight.detach().numpy().T.copy()
        tensors[f"init.{j}.bias"] = layer.bias.detach().numpy().copy()
    metadata = {"torch": torch.__version__, "steps": str(STEPS)}
    for name, make in optimizers().items():
        fresh = lambda: [nn.Linear(l.in_features, l.out_features) for l in init]  # noqa: E731
        runs = {}
        for dtype in (torch.float32, torch.float64):
            layers = fresh()
            with torch.no_grad():
                for new, old in zip(layers, init):
                    new.weight.copy_(old.weight)
                    new.bias.copy_(old.bias)
            runs[dtype] = train(make, layers, x, labels, dtype)
        (l32, w32), (l64, w64) = runs[torch.float32], runs[torch.float64]
        tensors[f"{name}.loss"] = l32.astype(np.float32)
        tensors[f"{name}.loss64"] = l64
        for j, (w, b) in enumerate(w32):
            tensors[f"{name}.{j}.weight"] = np.ascontiguousarray(w, dtype=np.float32)
            tensors[f"{name}.{j}.bias"] = np.ascontiguousarray(b, dtype=np.float32)
        loss_spread = float(np.max(np.abs(l32 - l64) / np.abs(l64)))
        w_spread = max(float(np.max(np.abs(a - b))) for (wa, ba), (wb, bb) in zip(w32, w64)
                       for a, b in ((wa, wb), (ba, bb)))
        metadata[f"{name}.spread"] = f"loss {loss_spread:.2e} weights {w_spread:.2e}"
        print(f"{name:18s} loss {l32[0]:.4f} -> {l32[-1]:.4f}   float32 vs float64: "
              f"loss {loss_spread:.2e} relative, weights {w_spread:.2e}")
        assert math.isfinite(l32[-1])
    save_file(tensors, args.out, metadata=metadata)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
