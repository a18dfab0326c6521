"""What users drive: text → image pipelines (base → upsampler), inpainting, comic pages, outputs.

- `sampling.pipeline.TextToImage`: classifier-free-guided base stage + optional upsampler stage.
- `sampling.loading.load_models`: model folders, pipeline folders, OpenAI .pt files, bundled models.
- `sampling.settings.SamplerSettings`: sampler, steps, guidance, eta, temperature per stage.
- `sampling.inpaint`: image + mask → known pixels for each stage.
- `sampling.comic`: panel scripts → panels → lettered pages (`sampling.comic.book.make_comic`).
- `sampling.outputs`: PNGs with their parameters, sidecars, grids, atomic writes.
- `sampling.rerank`: optional CLIP rerank from local open_clip weights.
The command line (`python -m sampling generate | comic | inpaint`) is a thin layer in `sampling.commands`.
"""
