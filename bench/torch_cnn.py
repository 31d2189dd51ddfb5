#!/usr/bin/env python3
"""The cnn_mnist model in PyTorch (eager), for a side-by-side timing on the same machine or GPU.

    python3 bench/torch_cnn.py [--epochs N] [--batch-size N] [--filters 16,32] [--device cuda|cpu]

Same recipe as `cargo run --release --example cnn_mnist` (its defaults are this script's):
MNIST from assets/mnist.npz scaled by 1/255 as 28x28x1 images, Conv2D(f1, 3x3, no bias) ->
BatchNorm -> relu -> MaxPool(2) -> Conv2D(f2, 3x3, no bias) -> BatchNorm -> relu -> MaxPool(2)
-> Flatten -> Dense(128, relu) -> Dropout(0.25) -> Dense(10), softmax cross-entropy, Adam (eps
1e-7 as Keras) from lr 2e-3 down a cosine to 0 over the run, batch 64, 5 epochs,
Glorot-uniform weights and zero biases, BatchNorm momentum 0.1 and eps 1e-5, shuffled each
epoch, the test set as validation data after every epoch (`--validation-split 0.1` holds out
training rows instead; `--train-rows N` trains on the first N rows). The whole data set is put on
the device first (as wgnn does), so an epoch times the training steps. Prints seconds and
samples/s per epoch and the test accuracy. On a CPU, `--threads 2` matches the 2-core machine.
Needs numpy and torch.
"""
import argparse
import time

import numpy as np
import torch
from torch import nn


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="assets/mnist.npz")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--filters", default="16,32")
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--dropout", type=float, default=0.25)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--validation-split", type=float, default=0.0)
    p.add_argument("--train-rows", type=int, default=0, help="first N training rows (0: all)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    f1, f2 = (int(f) for f in args.filters.split(","))
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    torch.manual_seed(args.seed)
    dev = torch.device(args.device)
    with np.load(args.data) as d:
        # NCHW for PyTorch's convolutions; wgnn keeps images channels-last, the same values.
        x_train = torch.tensor(d["x_train"].reshape(-1, 1, 28, 28), dtype=torch.float32) / 255.0
        y_train = torch.tensor(d["y_train"], dtype=torch.long)
        x_test = torch.tensor(d["x_test"].reshape(-1, 1, 28, 28), dtype=torch.float32) / 255.0
        y_test = torch.tensor(d["y_test"], dtype=torch.long)
    if args.train_rows > 0:
        x_train, y_train = x_train[: args.train_rows], y_train[: args.train_rows]
    x_test, y_test = x_test.to(dev), y_test.to(dev)
    if args.validation_split > 0:
        perm = torch.randperm(len(x_train), generator=torch.Generator().manual_seed(args.seed))
        n_val = int(len(x_train) * args.validation_split)
        val_idx, train_idx = perm[:n_val], perm[n_val:]
        x_val, y_val = x_train[val_idx].to(dev), y_train[val_idx].to(dev)
        x_tr, y_tr = x_train[train_idx].to(dev), y_train[train_idx].to(dev)
    else:
        x_val, y_val = x_test, y_test
        x_tr, y_tr = x_train.to(dev), y_train.to(dev)

    model = nn.Sequential(
        nn.Conv2d(1, f1, 3, bias=False), nn.BatchNorm2d(f1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(f1, f2, 3, bias=False), nn.BatchNorm2d(f2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(f2 * 5 * 5, args.hidden), nn.ReLU(), nn.Dropout(args.dropout),
        nn.Linear(args.hidden, 10),
    ).to(dev)
    for m in model:
        if isinstance(m, (nn.Linear, nn.Conv2d)):  # Keras defaults, as wgnn
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr, eps=1e-7)
    steps = args.epochs * -(-len(x_tr) // args.batch_size)  # updates in the run, as wgnn's cosine
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps, eta_min=0.0)
    loss_fn = nn.CrossEntropyLoss()
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    print(f"device: {dev} ({name}), torch {torch.__version__}")

    def evaluate(x, y):
        model.eval()
        loss, correct = 0.0, 0
        with torch.no_grad():
            for i in range(0, len(x), 2048):
                logits = model(x[i : i + 2048])
                loss += loss_fn(logits, y[i : i + 2048]).item() * len(logits)
                correct += (logits.argmax(1) == y[i : i + 2048]).sum().item()
        return loss / len(x), correct / len(x)

    n = len(x_tr)
    total = 0.0
    for epoch in range(1, args.epochs + 1):
        model.train()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        order = torch.randperm(n, device=dev)
        loss_sum = torch.zeros((), device=dev)
        correct = torch.zeros((), device=dev)
        for i in range(0, n, args.batch_size):
            idx = order[i : i + args.batch_size]
            xb, yb = x_tr[idx], y_tr[idx]
            logits = model(xb)
            loss = loss_fn(logits, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += loss.detach() * len(idx)
            correct += (logits.argmax(1) == yb).sum()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        total += seconds
        val_loss, val_acc = evaluate(x_val, y_val)
        print(
            f"epoch {epoch:>3}  loss {loss_sum.item() / n:.4f}  acc {correct.item() / n:.4f}  "
            f"val loss {val_loss:.4f}  val acc {val_acc:.4f}  {seconds:.2f} s  {n / seconds:.0f} samples/s"
        )
    test_loss, test_acc = evaluate(x_test, y_test)
    print(f"trained {args.epochs} epochs in {total:.1f} s; test loss {test_loss:.4f}  test accuracy {test_acc * 100:.2f}%")


if __name__ == "__main__":
    main()
