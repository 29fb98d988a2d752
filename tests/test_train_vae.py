"""training/train_vae.py on a tiny VAE: --freeze-encoder trains the decoder alone, so the latent
space (encoder weights and latent statistics) and the transformer fingerprint stay as they were."""

import json

import pytest
import torch

from pipeline.pipeline_t2v import TextToVideoPipeline
from pipeline.transformer import TRANSFORMER_SIZES, SpatioTemporalTransformer
from pipeline.vae import CausalVideoVAE
from training import train_dit, train_vae


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    from accelerate.state import AcceleratorState

    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def test_freeze_encoder_trains_the_decoder_only_and_keeps_the_latent_space(tiny_pipe, tmp_path, capsys):
    tiny_pipe.vae.register_to_config(latents_mean=[0.5] * tiny_pipe.vae.config.latent_channels, latents_std=[2.0] * tiny_pipe.vae.config.latent_channels)
    tiny_pipe.save_pretrained(tmp_path / "model")
    # fp16 like the bundled VAE, which the export writes back in fp16 bit for bit.
    CausalVideoVAE.from_pretrained(tmp_path / "model" / "vae").to(torch.float16).save_pretrained(tmp_path / "model" / "vae")
    before = CausalVideoVAE.from_pretrained(tmp_path / "model" / "vae")
    args = ["--run-dir", str(tmp_path / "run"), "--init-from", str(tmp_path / "model"), "--freeze-encoder", "--max-steps", "3",
            "--batch-size", "1", "--crop-size", "32", "--crop-frames", "5", "--buffer-clips", "4", "--refresh-per-step", "1",
            "--eval-clips", "1", "--mixed-precision", "no", "--log-every", "1", "--lr", "1e-2"]  # fmt: skip
    train_vae.main(train_vae.parse_args(args))
    train_vae.export_vae(tmp_path / "run", tmp_path / "model")
    after = CausalVideoVAE.from_pretrained(tmp_path / "model" / "vae")

    for name, tensor in before.encoder.state_dict().items():
        torch.testing.assert_close(after.encoder.state_dict()[name], tensor, msg=f"encoder weight {name} changed")
    assert any(not torch.equal(after.decoder.state_dict()[n], t) for n, t in before.decoder.state_dict().items())
    assert after.config.latents_mean == before.config.latents_mean and after.config.latents_std == before.config.latents_std
    # The transformer's guard looks at what makes latents, so it accepts the fine-tuned decoder.
    assert train_dit.vae_fingerprint(after) == train_dit.vae_fingerprint(before)
    assert '"exported"' in capsys.readouterr().out
    # The model card's record of what the weights went through.
    (run,) = json.loads((tmp_path / "model" / "vae" / "training.json").read_text())
    assert run["run"] == "run" and run["steps"] == 3 and run["args"]["freeze_encoder"] and run["hardware"]


def test_fingerprint_follows_the_encoder(tiny_pipe):
    vae = tiny_pipe.vae
    original = train_dit.vae_fingerprint(vae)
    with torch.no_grad():
        next(vae.encoder.parameters()).add_(1.0)
    assert train_dit.vae_fingerprint(vae) != original


def test_fingerprint_ignores_the_sign_of_zero(tiny_pipe):
    # fp16 underflow leaves -0.0 in a saved encoder; a frozen encoder's EMA writes it back as +0.0.
    vae = tiny_pipe.vae
    weight = next(vae.encoder.parameters())
    with torch.no_grad():
        weight.view(-1)[0] = -0.0
        signed = train_dit.vae_fingerprint(vae)
        weight.view(-1)[0] = 0.0
    assert train_dit.vae_fingerprint(vae) == signed


def test_freeze_encoder_needs_a_trained_encoder(tmp_path):
    with pytest.raises(ValueError, match="--freeze-encoder"):
        train_vae.main(train_vae.parse_args(["--run-dir", str(tmp_path / "run"), "--freeze-encoder", "--max-steps", "1"]))


def test_a_4x_vae_and_its_transformer_start_from_the_8x_ones(tiny_pipe):
    # Every layer but the dropped halving's convolutions carries over, and a token covers the same
    # pixels, so the new transformer keeps every block and learns only its patch embedding and output.
    vae_4x = train_vae.with_spatial_compression(tiny_pipe.vae, 4)
    assert vae_4x.spatial_compression_ratio == 4
    trained = tiny_pipe.vae.state_dict()
    shared = {name: weight for name, weight in vae_4x.state_dict().items() if name in trained}
    assert shared and all(torch.equal(weight, trained[name]) for name, weight in shared.items())
    assert len(shared) == len(vae_4x.state_dict())  # the dropped convolution leaves nothing untrained
    video = torch.rand(1, 3, 5, 32, 32) * 2 - 1
    assert vae_4x.encode(video).latent_dist.mode().shape[-2:] == (8, 8)

    old = tiny_pipe.transformer
    new = SpatioTemporalTransformer.from_config(old.config, patch_size=(1, 4, 4))
    report = train_dit.start_from_blocks(new, old)
    assert "patch_embed" in report and "final_layer.linear" in report
    for name, weight in new.blocks.state_dict().items():
        assert torch.equal(weight, old.blocks.state_dict()[name]), name
    with pytest.raises(ValueError, match="--transformer-size"):
        train_dit.main(train_dit.parse_args(["--run-dir", "unused", "--init-transformer", "assets/model"]))


def test_a_deeper_transformer_started_from_a_trained_one_predicts_what_it_did(tiny_pipe):
    # Growing by depth: the trained blocks carry over by name and the extra ones start with zero
    # adaLN gates, so they pass tokens through and training resumes from the trained function.
    old = tiny_pipe.transformer.eval()
    deeper = SpatioTemporalTransformer.from_config(old.config, num_layers=old.config.num_layers + 2).eval()
    report = train_dit.start_from_blocks(deeper, old)
    assert f"blocks.{old.config.num_layers}." in report and "patch_embed" not in report
    latents = torch.randn(1, old.config.in_channels, 2, 4, 4)
    timestep, text, pooled = torch.full((1, 2), 500.0), torch.randn(1, 3, old.config.text_dim), torch.randn(1, old.config.pooled_text_dim)
    with torch.no_grad():
        expected = old(latents, timestep, text, pooled, frame_rate=15.0).sample
        assert torch.allclose(deeper(latents, timestep, text, pooled, frame_rate=15.0).sample, expected)
    assert TRANSFORMER_SIZES["medium"].hidden_size == TRANSFORMER_SIZES["small"].hidden_size


def test_more_latent_channels_start_from_the_trained_vae_and_decode_as_it_did(tiny_pipe):
    # Room for detail the trained latent loses: the old channels keep their values and the decoder
    # reads the new ones through zero weights, so the grown VAE reconstructs exactly as before.
    trained = tiny_pipe.vae.eval()
    old = trained.config.latent_channels
    grown = train_vae.with_latent_channels(trained, 2 * old).eval()
    assert grown.config.latent_channels == 2 * old and grown.config.latents_mean is None
    video = torch.rand(1, 3, 5, 32, 32) * 2 - 1
    with torch.no_grad():
        latents = grown.encode(video).latent_dist.mode()
        torch.testing.assert_close(latents[:, :old], trained.encode(video).latent_dist.mode())
        assert latents[:, old:].abs().sum() > 0  # the new channels carry something from the start
        torch.testing.assert_close(grown.decode(latents).sample, trained.decode(latents[:, :old]).sample)
    with pytest.raises(ValueError, match="--latent-channels"):
        train_vae.with_latent_channels(trained, old)


@pytest.mark.parametrize("keeps_latent_space", [["--freeze-encoder"], ["--anchor-weight", "1"]])
def test_more_latent_channels_cannot_keep_the_old_latent_space(tiny_pipe, tmp_path, keeps_latent_space):
    tiny_pipe.save_pretrained(tmp_path / "model")
    args = ["--run-dir", str(tmp_path / "run"), "--init-from", str(tmp_path / "model"), "--latent-channels", "64", *keeps_latent_space]
    with pytest.raises(ValueError, match="--latent-channels .* --freeze-encoder or --anchor-weight"):
        train_vae.main(train_vae.parse_args(args))


def test_spatial_compression_4_gives_a_finer_latent_and_the_transformer_4x4_patches(tiny_pipe, tmp_path):
    # A 4x VAE keeps an 8-pixel object over four latent cells; the new transformer on it takes 4x4
    # patches, so a token still covers 16x16 pixels and the token count of every bucket stays.
    assert train_vae.spatial_downsamples(8, levels=3) == (True, True, False)
    assert train_vae.spatial_downsamples(4, levels=3) == (True, False, False)
    with pytest.raises(ValueError, match="--spatial-compression"):
        train_vae.spatial_downsamples(32, levels=3)
    tiny_pipe.save_pretrained(tmp_path / "model")
    vae_args = ["--run-dir", str(tmp_path / "vae_run"), "--spatial-compression", "4", "--channels", "8", "16", "16",
                "--layers-per-block", "1", "--max-steps", "1", "--batch-size", "1", "--crop-size", "32", "--crop-frames", "5",
                "--buffer-clips", "4", "--refresh-per-step", "1", "--eval-clips", "1", "--mixed-precision", "no"]  # fmt: skip
    train_vae.main(train_vae.parse_args(vae_args))
    train_vae.export_vae(tmp_path / "vae_run", tmp_path / "model")
    assert CausalVideoVAE.from_pretrained(tmp_path / "model" / "vae").spatial_compression_ratio == 4

    dit_args = ["--model", str(tmp_path / "model"), "--run-dir", str(tmp_path / "dit_run"), "--transformer-size", "tiny",
                "--aspects", "16:9", "--durations", "1", "--fps", "8", "--batch-size", "1", "--max-steps", "1",
                "--sample-prompts", "0", "--mixed-precision", "no", "--init-transformer", str(tmp_path / "model")]  # fmt: skip
    train_dit.main(train_dit.parse_args(dit_args))
    checkpoint = torch.load(tmp_path / "dit_run" / "checkpoint.pt", weights_only=False)
    assert list(checkpoint["config"]["patch_size"]) == [1, 4, 4]
    train_dit.main(train_dit.parse_args(["--run-dir", str(tmp_path / "dit_run"), "--export", str(tmp_path / "model"), "--steps", "1"]))
    pipe = TextToVideoPipeline.from_pretrained(tmp_path / "model")
    pipe.set_progress_bar_config(disable=True)
    frames = pipe("a red ball", height=64, width=112, num_frames=5).frames
    assert frames.shape == (1, 5, 64, 112, 3)


def test_adversarial_critic_trains_and_resumes_with_the_run(tiny_pipe, tmp_path):
    tiny_pipe.save_pretrained(tmp_path / "model")
    args = ["--run-dir", str(tmp_path / "run"), "--init-from", str(tmp_path / "model"), "--adversarial-weight", "0.5",
            "--adversarial-start", "1", "--batch-size", "1", "--crop-size", "32", "--crop-frames", "5", "--buffer-clips", "4",
            "--refresh-per-step", "1", "--eval-clips", "1", "--mixed-precision", "no", "--log-every", "1"]  # fmt: skip
    train_vae.main(train_vae.parse_args([*args, "--max-steps", "2"]))
    first = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)
    logged = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert "critic" not in logged[0] and "critic" in logged[1] and "generator" in logged[1]  # joins at --adversarial-start
    train_vae.main(train_vae.parse_args([*args, "--max-steps", "3"]))
    second = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)
    assert second["step"] == 3
    changed = [not torch.equal(second["discriminator"][k], v) for k, v in first["discriminator"].items()]
    assert any(changed)  # the critic resumed and went on learning


def test_critic_scores_patches_of_every_frame():
    critic = train_vae.FrameDiscriminator()
    scores = critic(torch.rand(2, 3, 5, 64, 64))
    assert scores.shape[0] == 10 and scores.shape[1] == 1 and scores.shape[-1] > 1


def test_latent_noise_trains_the_decoder_on_noisy_latents(tiny_pipe, tmp_path):
    tiny_pipe.save_pretrained(tmp_path / "model")
    video = torch.rand(1, 3, 5, 32, 32) * 2 - 1
    vae = tiny_pipe.vae.eval()
    quiet, _ = vae(video, sample_posterior=False)
    noisy, _ = vae(video, sample_posterior=False, latent_noise=0.5)
    assert torch.equal(vae(video, sample_posterior=False, latent_noise=0.0)[0], quiet)
    assert not torch.allclose(noisy, quiet)
    args = ["--run-dir", str(tmp_path / "run"), "--init-from", str(tmp_path / "model"), "--freeze-encoder", "--latent-noise", "0.3",
            "--max-steps", "2", "--batch-size", "1", "--crop-size", "32", "--crop-frames", "5", "--buffer-clips", "4",
            "--refresh-per-step", "1", "--eval-clips", "1", "--mixed-precision", "no", "--log-every", "1"]  # fmt: skip
    train_vae.main(train_vae.parse_args(args))
    assert torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)["step"] == 2


@pytest.mark.parametrize("extra", [["--latent-noise", "0.3"], ["--latent-noise", "-1", "--freeze-encoder"]])
def test_latent_noise_needs_a_frozen_encoder_and_a_level_of_zero_or_more(tmp_path, extra):
    with pytest.raises(ValueError, match="--latent-noise"):
        train_vae.main(train_vae.parse_args(["--run-dir", str(tmp_path / "run"), "--max-steps", "1", *extra]))
    assert not (tmp_path / "run").exists()  # nothing half-made


def test_anchor_weight_trains_the_encoder_near_its_start_and_keeps_the_statistics(tiny_pipe, tmp_path, capsys):
    channels = tiny_pipe.vae.config.latent_channels
    tiny_pipe.vae.register_to_config(latents_mean=[0.5] * channels, latents_std=[2.0] * channels)
    tiny_pipe.save_pretrained(tmp_path / "model")
    before = CausalVideoVAE.from_pretrained(tmp_path / "model" / "vae")
    common = ["--run-dir", str(tmp_path / "run"), "--anchor-weight", "1", "--batch-size", "1", "--crop-size", "32",
              "--crop-frames", "5", "--buffer-clips", "4", "--refresh-per-step", "1", "--eval-clips", "1",
              "--mixed-precision", "no", "--log-every", "1", "--lr", "1e-2"]  # fmt: skip
    train_vae.main(train_vae.parse_args([*common, "--init-from", str(tmp_path / "model"), "--max-steps", "2"]))
    first = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)
    for name, tensor in before.encoder.state_dict().items():  # the anchor is the starting encoder, bit for bit
        torch.testing.assert_close(first["anchor_encoder"][name], tensor)
    train_vae.main(train_vae.parse_args([*common, "--max-steps", "3"]))  # resumes with the same anchor
    resumed = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)
    assert resumed["step"] == 3
    for name, tensor in first["anchor_encoder"].items():
        torch.testing.assert_close(resumed["anchor_encoder"][name], tensor)
    logged = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert all(record["drift"] >= 0 for record in logged if "drift" in record) and any("drift" in r for r in logged)

    train_vae.export_vae(tmp_path / "run", tmp_path / "model")
    after = CausalVideoVAE.from_pretrained(tmp_path / "model" / "vae")
    assert any(not torch.equal(after.encoder.state_dict()[n], t) for n, t in before.encoder.state_dict().items())
    # The transformer normalises with these: an anchored encoder keeps them rather than measuring anew.
    assert after.config.latents_mean == before.config.latents_mean and after.config.latents_std == before.config.latents_std
    assert '"exported"' in capsys.readouterr().out


@pytest.mark.parametrize(
    "extra",
    [
        ["--anchor-weight", "-1", "--init-from", "unused"],
        ["--anchor-weight", "1", "--freeze-encoder", "--init-from", "unused"],
        ["--anchor-weight", "1"],  # no encoder to stay near
    ],
)
def test_anchor_weight_needs_a_starting_encoder_that_trains(tmp_path, extra):
    with pytest.raises(ValueError, match="--anchor-weight"):
        train_vae.main(train_vae.parse_args(["--run-dir", str(tmp_path / "run"), "--max-steps", "1", *extra]))
    assert not (tmp_path / "run").exists()  # nothing half-made


def test_focus_shapes_fill_the_share_of_clips_asked_for():
    import numpy as np

    def share_with_a_star(focus_share: float) -> float:
        buffer = train_vae.ClipBuffer(0, 5, [15], np.random.default_rng(0), focus_shapes=["star"], focus_share=focus_share)
        return float(np.mean([any(obj.shape == "star" for obj in buffer.new_scene().objects) for _ in range(200)]))

    assert share_with_a_star(1.0) == 1.0
    assert share_with_a_star(0.0) < 0.6  # the world's own share (a quarter of the objects are stars)
    frames, mask = train_vae.ClipBuffer(0, 5, [15], np.random.default_rng(0), focus_shapes=["star"], focus_share=1.0)._new_clip()
    assert frames.shape[0] == 5 and mask.any()


@pytest.mark.parametrize("extra", [["--focus-share", "0.5"], ["--focus-share", "1.5", "--focus-shapes", "star"]])
def test_focus_share_needs_shapes_and_a_share_in_range(tmp_path, extra):
    with pytest.raises(ValueError, match="--focus-share"):
        train_vae.main(train_vae.parse_args(["--run-dir", str(tmp_path / "run"), "--max-steps", "1", *extra]))
    assert not (tmp_path / "run").exists()
