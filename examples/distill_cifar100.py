"""Distil a CIFAR-100 teacher with the KD literature's recipe and the sampler of choice (the recipe:
hf_dis/recipes/distill_cifar100.py; `hf-dis distill cifar100` is the same). `--help` lists every option. On a GPU:

    accelerate launch --config_file examples/accelerate/one_gpu_bf16.yaml examples/distill_cifar100.py \
        --dataset cifar100 --teacher_model runs/c100-resnet50 --student resnet18 --output_dir runs/c100-resnet18-dis
"""

from hf_dis.recipes.distill_cifar100 import main

if __name__ == "__main__":
    main()
