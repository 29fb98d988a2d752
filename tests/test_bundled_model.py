"""The bundled model in assets/model loads offline from safetensors and makes a video on the CPU."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.generate import DEFAULT_MODEL_DIR, load_pipeline, model_name


@pytest.fixture(scope="module")
def bundled():
    return load_pipeline(DEFAULT_MODEL_DIR, device="cpu")


def test_folder_holds_only_safetensors_weights_under_60_mb():
    files = [p for p in Path(DEFAULT_MODEL_DIR).rglob("*") if p.is_file()]
    assert not [p for p in files if p.suffix in (".bin", ".pt", ".pth", ".ckpt", ".pkl")]
    weights = [p for p in files if p.suffix == ".safetensors"]
    assert {p.parent.name for p in weights} == {"vae", "transformer"}  # MiniLM comes from its package
    assert sum(p.stat().st_size for p in weights) < 60 * 2**20
    index = json.loads((Path(DEFAULT_MODEL_DIR) / "model_index.json").read_text())
    assert index["text_encoder"] == ["pipeline.text_encoder", "MiniLMTextEncoder"]


def test_bundled_model_generates_a_video_and_a_seed_repeats_it(bundled):
    assert model_name(bundled) == "ling-small"
    kwargs = dict(height=64, width=112, num_frames=15, frame_rate=15, num_inference_steps=3)
    first = bundled("a red ball bouncing on a black background", generator=torch.Generator().manual_seed(3), **kwargs).frames
    again = bundled("a red ball bouncing on a black background", generator=torch.Generator().manual_seed(3), **kwargs).frames
    assert first.shape == (1, 15, 64, 112, 3)
    assert np.isfinite(first).all() and first.min() >= 0 and first.max() <= 1
    np.testing.assert_array_equal(first, again)


def test_bundled_model_knows_every_word_of_the_eval_prompts_and_the_studios_examples(bundled):
    from eval.__main__ import build_prompt_sets
    from ui.handlers import EXAMPLE_PROMPTS

    for prompt_set in build_prompt_sets(quick=False):
        for prompt in prompt_set.prompts:
            assert bundled.unfamiliar_words(prompt) == [], prompt
    for prompt in EXAMPLE_PROMPTS:
        assert bundled.unfamiliar_words(prompt) == [], prompt
    assert bundled.unfamiliar_words("a purple cat jumping over a red ball") == ["cat", "jumping"]
