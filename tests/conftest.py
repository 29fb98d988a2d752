"""Shared fixtures: tiny seeded model components, and MiniLM loaded once per session.

torch and the pipeline are imported inside the fixtures, so tests that use none of them (UI, world,
export) do not pay for loading them.
"""

import os

import pytest

# One intra-op thread. This box has 2 cores shared with other jobs; with 2 OpenMP threads on busy
# cores every small conv3d waits at a barrier for a descheduled thread and the tiny VAE decodes
# ~100x slower (3.5 s instead of 30 ms). A user's own setting wins. Set before torch is imported.
os.environ.setdefault("OMP_NUM_THREADS", "1")

TINY_VAE_CONFIG = dict(block_out_channels=(8, 16, 16), layers_per_block=1)  # 8x space, 4x time, 16 latent channels


def make_tiny_vae(seed: int = 0):
    import torch

    from pipeline.vae import CausalVideoVAE

    torch.manual_seed(seed)
    return CausalVideoVAE(**TINY_VAE_CONFIG).eval()


def make_tiny_transformer(seed: int = 0, noise_std: float = 0.05):
    """transformer_from_size("tiny") with its zero-initialised weights (adaLN-zero gates, the final
    layer, cross-attention outputs, biases) nudged by seeded noise: as initialised it predicts exactly
    zero, which would make every output test pass trivially."""
    import torch

    from pipeline.transformer import transformer_from_size

    torch.manual_seed(seed)
    model = transformer_from_size("tiny")
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for parameter in model.parameters():
            if not parameter.any():
                parameter.add_(noise_std * torch.randn(parameter.shape, generator=generator))
    return model.eval()


@pytest.fixture
def tiny_vae():
    return make_tiny_vae()


@pytest.fixture
def tiny_transformer():
    return make_tiny_transformer()


@pytest.fixture(scope="session")
def text_encoder():
    # The real MiniLM (~1 s to load): frozen, so one instance serves every test.
    from pipeline.text_encoder import MiniLMTextEncoder

    return MiniLMTextEncoder()


@pytest.fixture(scope="session")
def tokenizer():
    from pipeline.text_encoder import load_tokenizer

    return load_tokenizer()


@pytest.fixture
def tiny_pipe(text_encoder, tokenizer):
    """A fresh pipeline (own prompt cache and scheduler state) around tiny seeded models."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    from pipeline.pipeline_t2v import TextToVideoPipeline

    pipe = TextToVideoPipeline(
        vae=make_tiny_vae(),
        transformer=make_tiny_transformer(),
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=2.0),  # what from_components uses
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe
