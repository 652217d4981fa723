"""One head-training epoch on cached fc7 features against one epoch that runs the frozen network forward.

Both epochs see the same crops, batch size and optimiser; the only difference is where the head's input comes
from. Prints seconds per epoch and the ratio. Random weights and random crops: the cost does not depend on them.
"""
import argparse
import time

import numpy as np
import torch
from torch import nn

from layersweep.model import build_vgg11, frozen_features, trainable_part
from layersweep.preprocess import to_model_input


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--crops", type=int, default=128)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, (args.crops, args.size, args.size, 3), dtype=np.uint8)
    labels = torch.as_tensor(rng.integers(0, 20, args.crops))
    model = build_vgg11("random", seed=0)
    head = trainable_part(model, "head")
    loss_fn = nn.CrossEntropyLoss()

    t0 = time.perf_counter()
    feats = torch.as_tensor(frozen_features(model, crops, "head", batch_size=args.batch_size, device="cpu",
                                            progress=False))
    t_cache = time.perf_counter() - t0

    def epoch(inputs_of):
        opt = torch.optim.Adam(head.parameters(), lr=1e-3)
        t0 = time.perf_counter()
        for start in range(0, args.crops, args.batch_size):
            sl = slice(start, start + args.batch_size)
            opt.zero_grad()
            loss_fn(head(inputs_of(sl)), labels[sl]).backward()
            opt.step()
        return time.perf_counter() - t0

    def through_network(sl):
        with torch.no_grad():  # frozen: no gradients below the head, as a careful hand-written loop would do
            x = to_model_input(crops[sl])
            return model.classifier[:-1](torch.flatten(model.avgpool(model.features(x)), 1))

    t_cached = min(epoch(lambda sl: feats[sl]) for _ in range(5))
    t_forward = epoch(through_network)
    print(f"crops={args.crops} size={args.size} batch={args.batch_size} threads={args.threads}")
    print(f"caching fc7 once:                 {t_cache:8.3f} s")
    print(f"epoch on cached features:         {t_cached:8.4f} s")
    print(f"epoch through the frozen network: {t_forward:8.3f} s")
    print(f"ratio (network / cached):         {t_forward / t_cached:8.0f}x")


if __name__ == "__main__":
    main()
