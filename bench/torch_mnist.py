#!/usr/bin/env python3
"""The mnist_gpu model in PyTorch (eager), for a side-by-side timing on the same GPU.

    python3 bench/torch_mnist.py [--epochs 20] [--batch-size 32] [--device cuda]

Same recipe as `cargo run --release --example mnist_gpu`: MNIST from assets/mnist.npz scaled by
1/255, Dense(784->64, relu) -> Dense(64->64, relu) -> Dense(64->10), softmax cross-entropy, Adam
(lr 1e-3, eps 1e-7 as Keras), batch 32, 20 epochs, shuffled each epoch, and the same validation
as mnist_gpu: the test set after every epoch (`--validation-split 0.1` holds out training rows
instead; `--train-rows N` trains on the first N rows, as mnist_gpu's flag). The whole data set is put on the device first (as wgnn does), so an epoch times the
training steps, not host-to-device copies. Prints seconds and samples/s per epoch and the test
accuracy. Needs numpy and torch.
"""
import argparse
import time

import numpy as np
import torch
from torch import nn


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="assets/mnist.npz")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--validation-split", type=float, default=0.0)
    p.add_argument("--train-rows", type=int, default=0, help="first N training rows (0: all)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()

    torch.manual_seed(args.seed)
    dev = torch.device(args.device)
    with np.load(args.data) as d:
        x_train = torch.tensor(d["x_train"].reshape(-1, 784), dtype=torch.float32) / 255.0
        y_train = torch.tensor(d["y_train"], dtype=torch.long)
        x_test = torch.tensor(d["x_test"].reshape(-1, 784), dtype=torch.float32) / 255.0
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

    model = nn.Sequential(nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10)).to(dev)
    for m in model:
        if isinstance(m, nn.Linear):  # Keras defaults, as wgnn: Glorot-uniform weights, zero biases
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr, eps=1e-7)
    loss_fn = nn.CrossEntropyLoss()
    print(f"device: {dev} ({torch.cuda.get_device_name(dev) if dev.type == 'cuda' else 'cpu'}), torch {torch.__version__}")

    def evaluate(x, y):
        model.eval()
        with torch.no_grad():
            logits = model(x)
            return loss_fn(logits, y).item(), (logits.argmax(1) == y).float().mean().item()

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
            # Accumulated on the device, read once per epoch (as wgnn does).
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
