"""The GLIDE model core and the trainer that fine-tunes it.

Where you stand: the middle of the data flow (shards -> trainer -> model folder -> sampler). This package owns
everything about the model itself, so the trainer and `sampling` share one implementation:

- `finetune.model`: the text-conditioned ADM UNet, its text transformer, the upsampler and inpainting variants,
  presets, and the option limits every config is checked against (`finetune.model.limits`).
- `finetune.diffusion`: Gaussian diffusion (schedules, the hybrid loss) and the samplers (ancestral, DDIM,
  DPM-Solver++), with classifier-free guidance.
- `finetune.tokenizers`: CLIP and GPT-2 BPE (GPT-2's files ship with the package).
- `finetune.model_folder`: model folders (config.json + safetensors + tokenizer + provenance) and OpenAI `.pt`
  files, read with `weights_only=True`; `finetune.convert` turns one into the other.
- `finetune.hub`: OpenAI's released GLIDE weights by name, fetched once, verified, cached.
- `finetune.bundled_models`: the small models that ship with the package (their weights live in
  `finetune/bundled_weights/`).
- `finetune.train`: the Accelerate trainer (`python -m finetune train`).
- `finetune.commands`: the subcommands of `python -m finetune` (train, convert, fetch, cache), one module each.

It may import `data_pipeline` (the trainer reads its shards) and never imports `sampling`
(`tests/test_layering.py` checks).
"""
