"""The `model.arch` names of each family (layersweep/models/ has their adapters), importable without torch:
the config check runs when Snakemake parses the workflow."""
FAMILIES = {
    "vgg": ("vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn"),
    "resnet": ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152"),
    "densenet": ("densenet121", "densenet161", "densenet169", "densenet201"),
    "mobilenet": ("mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large"),
    "efficientnet": ("efficientnet_b0", "efficientnet_b1", "efficientnet_b2", "efficientnet_b3"),
    "convnext": ("convnext_tiny", "convnext_small", "convnext_base"),
    "regnet": ("regnet_y_400mf", "regnet_y_800mf", "regnet_x_400mf"),
    "vit": ("vit_b_16", "vit_b_32", "vit_tiny"),  # vit_tiny: built by the adapter (demo and tests)
    "swin": ("swin_t", "swin_s", "swin_v2_t"),
}
ARCH_NAMES = tuple(a for archs in FAMILIES.values() for a in archs)
