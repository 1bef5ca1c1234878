"""Train a classification or re-ID teacher (the recipe: hf_dis/recipes/train_teacher.py; `hf-dis train-teacher` is
the same). `python examples/train_teacher.py --help` lists every option. On two GPUs:

    accelerate launch --config_file examples/accelerate/multi_gpu.yaml --num_processes 2 \
        examples/train_teacher.py --task reid --dataset market1501 --data_dir /data/Market-1501-v15.09.15 \
        --model resnet50 --output_dir runs/market-resnet50
"""

from hf_dis.recipes.train_teacher import main

if __name__ == "__main__":
    main()
