"""Distil a re-ID teacher with the BoT recipe, KD on the identity logits through DIS (the recipe:
hf_dis/recipes/distill_market1501.py; `hf-dis distill market1501` is the same). `--help` lists every option. On two
GPUs (each takes P = 16 identities x K = 4 images per step, no identity on both):

    accelerate launch --config_file examples/accelerate/multi_gpu.yaml --num_processes 2 \
        examples/distill_market1501.py --dataset market1501 --data_dir /data/Market-1501-v15.09.15 \
        --teacher_model runs/market-resnet50 --output_dir runs/market-resnet18-dis
"""

from hf_dis.recipes.distill_market1501 import main

if __name__ == "__main__":
    main()
