"""float32 vs float64 gap of the DeepLift-family maps, per layer (docs/methods.md: float32 vs float64).

Relative max-norm gap max|m32 - m64| / max|m64| per layer, for deepliftshap and liftcam, on torchvision's
VGG11 (ImageNet weights when cached, else random with non-zero biases) with a 20-class head.
Usage: python bench/numerics_deeplift.py [--size 224] [--images 2] [--baselines 2]
"""
import argparse
import copy

import torch
import torchvision
from torch import nn

from layersweep.attribution import attribute_layers


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--images", type=int, default=2)
    ap.add_argument("--baselines", type=int, default=2)
    args = ap.parse_args()
    torch.manual_seed(0)
    model = torchvision.models.vgg11(weights=None, num_classes=20)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=gen))
    model.eval()
    x = torch.randn(args.images, 3, args.size, args.size)
    b = torch.randn(args.baselines, 3, args.size, args.size)
    t = torch.arange(args.images) % 20
    layers = list(range(-1, 21))
    gaps = {}
    for method in ("deepliftshap", "liftcam"):
        m32 = attribute_layers(model, x, t, [method], layers, baselines=b)[method]
        m64 = attribute_layers(copy.deepcopy(model).double(), x.double(), t, [method], layers, baselines=b.double())[method]
        gaps[method] = {l: float((m32[l].double() - m64[l]).abs().max() / m64[l].abs().max().clamp_min(1e-300))
                        for l in layers}
    print(f"| layer | {' | '.join(gaps)} |")
    print("|---|" + "---|" * len(gaps))
    for l in layers:
        print(f"| {l} | " + " | ".join(f"{gaps[m][l]:.1e}" for m in gaps) + " |")


if __name__ == "__main__":
    main()
