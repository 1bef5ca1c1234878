"""Tiny models and data for the tests: transformers classifiers from configs (random weights, no download), and
seeded random images."""

import torch
import transformers

TINY_VIT = dict(
    image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=24
)


def tiny_hf(model_type: str, num_labels: int = 13):
    """Tiny transformers classifiers from configs (random weights, no download)."""
    configs = {
        "resnet": lambda: transformers.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1]),
        "regnet": lambda: transformers.RegNetConfig(
            embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], groups_width=8
        ),
        "convnext": lambda: transformers.ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2),
        "convnextv2": lambda: transformers.ConvNextV2Config(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2),
        "swin": lambda: transformers.SwinConfig(
            image_size=32, patch_size=4, embed_dim=8, depths=[1, 1], num_heads=[1, 2], window_size=4
        ),
        "swinv2": lambda: transformers.Swinv2Config(
            image_size=32, patch_size=4, embed_dim=8, depths=[1, 1], num_heads=[1, 2], window_size=4
        ),
        "mobilenet_v2": lambda: transformers.MobileNetV2Config(
            image_size=32, depth_multiplier=0.35, classifier_dropout_prob=0.5
        ),
        "efficientnet": lambda: transformers.EfficientNetConfig(
            image_size=32, width_coefficient=0.1, depth_coefficient=0.1, hidden_dim=128, dropout_rate=0.5
        ),
        "vit": lambda: transformers.ViTConfig(**TINY_VIT),
        "deit": lambda: transformers.DeiTConfig(**TINY_VIT),
    }
    config = configs[model_type]()
    config.num_labels = num_labels
    torch.manual_seed(0)
    if model_type == "deit":  # the Auto class maps DeiT to its two-headed variant
        return transformers.DeiTForImageClassification(config).eval()
    return transformers.AutoModelForImageClassification.from_config(config).eval()


NUM_CLASSES = 20


class RandomImages(torch.utils.data.Dataset):
    """Seeded 32 px images with labels (or without, for label-free distillation)."""

    def __init__(self, size: int = 16, seed: int = 0, with_labels: bool = True, num_classes: int = NUM_CLASSES) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.images = torch.randn(size, 3, 32, 32, generator=generator)
        self.labels = torch.randint(num_classes, (size,), generator=generator)
        self.with_labels = with_labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict:
        item = {"pixel_values": self.images[index]}
        if self.with_labels:
            item["labels"] = self.labels[index]
        return item
