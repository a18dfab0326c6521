"""Does a base model use the position words of its captions? (A diagnostic, not part of CI.)

Rendered scenes of the model's synthetic world are noised to a few levels; the model predicts the clean image once
with the scene's own caption and once with the same caption naming another position. A model that reads position
words predicts better with the true caption at high noise, where the layout is decided (ratio wrong/true above 1);
one that ignores them gives the same error for both (ratio 1.000). The subject placement of `sampling.placement`
exists because the bundled base gives 1.000 at every level.

    python bench/position_words.py                                    # the bundled base
    python bench/position_words.py --model runs/x/base --weights runs/x/checkpoints/step-00001000/model.safetensors
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/quality.py, also when loaded from elsewhere

from quality import resolve_world  # noqa: E402

from data_pipeline.synthetic import canonical_caption, render, sample_attributes, sample_rng  # noqa: E402
from data_pipeline.synthetic.world import POSITIONS  # noqa: E402
from finetune.bundled_models import bundled_model_path  # noqa: E402
from finetune.diffusion.gaussian_diffusion import diffusion_from_options  # noqa: E402
from finetune.model_folder import load_model_folder  # noqa: E402

LEVELS = (950, 850, 700, 500, 300)  # of the 1000-step process


def other_position(position: str, k: int) -> str:
    names = list(POSITIONS)
    return names[(names.index(position) + 1 + k % (len(names) - 1)) % len(names)]


def x0_errors(model, tokenizer, diffusion, x0: torch.Tensor, captions: list[str], noise, level: int) -> float:
    t = torch.full((len(x0),), level)
    xt = diffusion.q_sample(x0, t, noise)
    tokens, mask = tokenizer.encode(captions)
    eps = diffusion.call_model(model, xt, t, {"tokens": tokens, "mask": mask})[:, :3]
    pred = diffusion.predict_xstart_from_eps(xt, t, eps).clamp(-1, 1)
    return float(((pred - x0) ** 2).mean())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None, help="a base model folder (default: the bundled base)")
    parser.add_argument("--weights", type=Path, default=None, help="a trainer checkpoint's model.safetensors instead")
    parser.add_argument("--samples", type=int, default=48, help="scenes (default: 48)")
    parser.add_argument("--seed", type=int, default=123, help="seed of the scenes and the noise")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    args = parser.parse_args(argv)
    if not 1 <= args.samples <= 1024:
        parser.error("--samples must be between 1 and 1024")
    torch.set_num_threads(args.threads)
    folder = args.model or bundled_model_path("base")
    loaded = load_model_folder(folder)
    model = loaded.model
    if args.weights is not None:
        from safetensors.torch import load_file

        model.load_state_dict({k: v.float() for k, v in load_file(args.weights).items()})
    diffusion = diffusion_from_options(model.options)
    world = resolve_world(Path(folder), None)
    size = model.options["image_size"]
    scenes = [sample_attributes(world, sample_rng(args.seed, i)) for i in range(args.samples)]
    x0 = torch.stack([torch.from_numpy(render(s, size)).permute(2, 0, 1).float() / 127.5 - 1 for s in scenes])
    name_size = len(world.sizes) > 1
    true = [canonical_caption(s, name_size=name_size) for s in scenes]
    wrong = [
        canonical_caption({**s, "position": other_position(s["position"], k)}, name_size=name_size)
        for k, s in enumerate(scenes)
    ]
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(args.seed))
    print(f"{folder}{' + ' + str(args.weights) if args.weights else ''}: {args.samples} scenes at {size} px")
    print("| t | x0 error, true position | x0 error, another position | ratio |\n|---|---|---|---|")
    rows = []
    with torch.no_grad():
        for level in LEVELS:
            right = x0_errors(model, loaded.tokenizer, diffusion, x0, true, noise, level)
            other = x0_errors(model, loaded.tokenizer, diffusion, x0, wrong, noise, level)
            rows.append({"t": level, "true": right, "other": other, "ratio": other / right})
            print(f"| {level} | {right:.4f} | {other:.4f} | {other / right:.3f} |")
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
