"""Write a freshly initialised model folder (diffusers layout, fp16 safetensors).

    python -m training.init_model --out assets/model --transformer-size small

The training scripts start from such a folder; until they have run, it is what the studio loads.
"""

import argparse

import torch

from pipeline.transformer import TRANSFORMER_SIZES, transformer_from_size
from pipeline.vae import CausalVideoVAE


def copy_matching_weights(model: torch.nn.Module, source: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Load into `model` every weight of `source` with the same name and shape; return what was copied.

    How a model of a changed layout (another VAE compression, another transformer patch) starts
    from a trained one instead of from noise.
    """
    target = model.state_dict()
    kept = {name: weight for name, weight in source.state_dict().items() if name in target and target[name].shape == weight.shape}
    model.load_state_dict(kept, strict=False)
    return kept


def save_fp16(pipe, out_dir: str) -> None:
    """Save a pipeline with its trained parts in fp16 (half the bytes; loading upcasts to fp32)."""
    pipe.vae.to(torch.float16)
    pipe.transformer.to(torch.float16)
    try:
        pipe.save_pretrained(out_dir, safe_serialization=True)
    finally:
        pipe.vae.to(torch.float32)
        pipe.transformer.to(torch.float32)


def main(args: argparse.Namespace) -> None:
    from pipeline.pipeline_t2v import TextToVideoPipeline

    torch.manual_seed(args.seed)
    vae = CausalVideoVAE()
    transformer = transformer_from_size(args.transformer_size, in_channels=vae.config.latent_channels)
    pipe = TextToVideoPipeline.from_components(vae, transformer)
    save_fp16(pipe, args.out)
    print(f"wrote a randomly initialised model to {args.out}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="assets/model")
    parser.add_argument("--transformer-size", choices=list(TRANSFORMER_SIZES), default="small")
    parser.add_argument("--seed", type=int, default=0)
    main(parser.parse_args())
