"""Ready-made training recipes: the code behind `examples/*.py` and the `hf-dis` command.

- `train_teacher`: train a classification or re-ID teacher (timm name or transformers model).
- `distill_cifar100`: the CIFAR-100 KD recipe of the literature (240 epochs, SGD 0.05, T = 4, CE 0.1 / KD 0.9).
- `distill_market1501`: BoT-style re-ID distillation (256 x 128, P = 16 x K = 4, triplet, Adam 3.5e-4 with warm-up).
- `evaluate`: evaluate a saved model.
- `render_glyphs`: render a glyph task once and save it, for machines without the fonts (`--data_dir`).
- `cache_teacher`: run a teacher once over a training set and save its logits (`distill cifar100 --teacher_cache`).

Each has `main(argv)` reading its options with `HfArgumentParser` from flags or from one YAML/JSON file, runs with
`python` or `accelerate launch`, and writes the last epoch's metrics as JSON next to its checkpoints. Each takes
`--dataset glyphs` (rendered characters, no download) so that it runs end to end on any machine.
"""
