"""training/train_dit.py on a tiny model folder: a few steps train, a checkpoint resumes, the latent
cache is built once, export writes a loadable folder; and the loss follows the scheduler's convention."""

import json
import math

import numpy as np
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from safetensors.torch import load_file

from pipeline.pipeline_t2v import TextToVideoPipeline
from training import train_dit, world


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    """accelerate keeps one process-wide state, fixed by the first Accelerator (mixed precision
    included); a script's main runs once per process, these tests run it several times."""
    from accelerate.state import AcceleratorState

    yield
    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.fixture
def model_dir(tiny_pipe, tmp_path):
    tiny_pipe.save_pretrained(tmp_path / "model")
    return tmp_path / "model"


def train_args(model_dir, run_dir, *extra: str):
    """Two small buckets (64p 16:9 and 1:1, 1 s at 8 fps: 9 frames, 3 latent frames), fp32, tiny samples."""
    return train_dit.parse_args(
        ["--model", str(model_dir), "--run-dir", str(run_dir), "--aspects", "16:9", "1:1", "--durations", "1", "--fps", "8",
         "--batch-size", "2", "--warmup-steps", "1", "--log-every", "1", "--steps", "2", "--sample-prompts", "1",
         "--mixed-precision", "no", "--context-prob", "0.5", *extra]
    )  # fmt: skip


def log_lines(run_dir):
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]


def test_train_resume_and_export(model_dir, tmp_path):
    run_dir, out_dir = tmp_path / "run", tmp_path / "exported"

    train_dit.main(train_args(model_dir, run_dir, "--max-steps", "2"))
    first = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    assert first["step"] == 2 and set(first) >= {"model", "ema", "optimizer", "step", "args", "config", "vae"}
    assert (run_dir / "contact_sheet.png").stat().st_size > 0

    train_dit.main(train_args(model_dir, run_dir, "--max-steps", "4"))  # resumes at step 2
    second = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    lines = log_lines(run_dir)
    assert second["step"] == 4 and [line["step"] for line in lines] == [1, 2, 3, 4]
    assert all(math.isfinite(line["loss"]) and line["loss"] > 0 for line in lines)
    start = load_file(model_dir / "transformer" / "diffusion_pytorch_model.safetensors")
    assert any(not torch.equal(second["model"][name], start[name].float()) for name in start)  # it learned something

    train_dit.main(train_dit.parse_args(["--run-dir", str(run_dir), "--export", str(out_dir), "--steps", "7", "--guidance", "3.5", "--shift", "3.0"]))
    exported = TextToVideoPipeline.from_pretrained(out_dir)
    assert exported.config.default_num_inference_steps == 7 and exported.config.default_guidance_scale == 3.5
    assert exported.scheduler.config.shift == 3.0
    assert exported.unfamiliar_words("a red ball bouncing") == [] and exported.unfamiliar_words("a red dog") == ["dog"]  # the world's words
    weights = load_file(out_dir / "transformer" / "diffusion_pytorch_model.safetensors")
    assert all(w.dtype == torch.float16 for w in weights.values())
    for name, tensor in second["ema"].items():
        assert torch.equal(weights[name], tensor.half()), name
    exported.set_progress_bar_config(disable=True)
    frames = exported("a red ball", height=64, width=112, num_frames=5, num_inference_steps=1).frames
    assert frames.shape == (1, 5, 64, 112, 3) and np.isfinite(frames).all()


def test_latent_cache_is_built_once_and_trained_on(model_dir, tmp_path):
    run_dir = tmp_path / "run"
    cached = ("--cache-latents", "3", "--mixed-precision", "bf16")  # bf16 autocast on the CPU too

    train_dit.main(train_args(model_dir, run_dir, *cached, "--max-steps", "2"))
    files = sorted((run_dir / "latents").iterdir())
    assert [f.name for f in files] == ["16x9_1s_8fps.pt", "1x1_1s_8fps.pt"]
    data = torch.load(files[0], weights_only=True)
    assert data["latents"].shape == (3, 16, 3, 8, 14) and data["latents"].dtype == torch.float16
    assert len(json.loads(data["scenes"])) == 3
    assert all(math.isfinite(line["loss"]) for line in log_lines(run_dir))

    modified = [f.stat().st_mtime_ns for f in files]
    train_dit.main(train_args(model_dir, run_dir, *cached, "--max-steps", "3"))
    assert [f.stat().st_mtime_ns for f in files] == modified  # the cache was reused, not rebuilt
    assert torch.load(run_dir / "checkpoint.pt", weights_only=False)["step"] == 3


def test_focus_shapes_take_the_share_of_cached_draws_asked_for(tmp_path):
    scenes = [world.sample_scene(np.random.default_rng(seed)) for seed in range(60)]
    holds_star = np.array([scene.holds_shape(["star"]) for scene in scenes])

    def share_drawn_with_a_star(focus_shapes, focus_share) -> float:
        bucket = train_dit.Bucket("16:9", 1.0, 15, 64, 112, 17, (5, 16, 28), 4)
        cache = train_dit.LatentCache(tmp_path, [bucket], 60, "", (4, 4), focus_shapes, focus_share)
        # A clip's latent is its index, so a draw says which clips it took.
        cache.latents, cache.object_masks, cache.scenes = [torch.arange(60.0)[:, None]], [torch.zeros(60, 1)], [scenes]
        cache.clip_weights = [cache._focus_weights(scenes)]
        rng = np.random.default_rng(0)
        drawn = torch.cat([cache.sample(rng)[1][:, 0] for _ in range(500)]).long().numpy()
        return holds_star[drawn].mean()

    assert 0.2 < holds_star.mean() < 0.6
    assert abs(share_drawn_with_a_star([], 0.0) - holds_star.mean()) < 0.05  # uniform without focus
    assert abs(share_drawn_with_a_star(["star"], 0.8) - 0.8) < 0.05
    assert share_drawn_with_a_star(["star"], 1.0) > 0.99  # and a bucket with fewer stars than a batch still fills it


def test_focus_share_needs_shapes_a_cache_and_a_share_in_range(model_dir, tmp_path):
    for extra in (["--focus-share", "0.5", "--cache-latents", "3"], ["--focus-shapes", "star", "--focus-share", "0.5"], ["--focus-shapes", "star", "--focus-share", "2", "--cache-latents", "3"]):
        with pytest.raises(ValueError, match="--focus-share"):
            train_dit.main(train_args(model_dir, tmp_path / "run", *extra))


class RecordingModel(torch.nn.Module):
    """Stands in for the transformer: records its inputs and predicts zero velocity."""

    def __init__(self):
        super().__init__()
        self.bias = torch.nn.Parameter(torch.zeros(()))
        self.inputs = {}

    def forward(self, hidden_states, timestep, **kwargs):
        self.inputs = {"noisy": hidden_states, "timestep": timestep}
        return (torch.zeros_like(hidden_states) + self.bias,)


def test_loss_keeps_context_frames_clean_and_out_of_the_loss():
    torch.manual_seed(0)
    latents = torch.randn(6, 4, 8, 2, 2)  # (B, C, T, H, W)
    args = train_dit.parse_args(["--context-prob", "1.0"])
    model = RecordingModel()

    loss, parts = train_dit.flow_matching_loss(model, latents, None, None, None, None, args)

    noisy, timestep = model.inputs["noisy"], model.inputs["timestep"]
    assert timestep.shape == (6, 8)
    is_context = timestep == 0  # (B, T)
    context = is_context.sum(1)
    assert ((context >= 1) & (context <= 4)).all()  # every video has 1 to T / 2 clean frames ...
    assert (is_context == (torch.arange(8)[None] < context[:, None])).all()  # ... at its start
    assert parts["context_frames"] == pytest.approx(is_context.float().mean().item())
    mask = is_context[:, None, :, None, None].expand_as(latents)
    assert torch.equal(noisy[mask], latents[mask])  # context frames are the clean latents
    # Elsewhere one noise level per video; recover the noise from x_s = (1 - s) x0 + s noise.
    s = timestep / 1000
    assert torch.allclose(s.max(1).values[:, None].expand(6, 8)[~is_context], s[~is_context])
    s5 = s[:, None, :, None, None]
    noise = (noisy - (1 - s5) * latents) / s5.clamp(min=1e-6)
    target = noise - latents
    assert loss.item() == pytest.approx(target[~mask].pow(2).mean().item(), rel=1e-4)  # zero prediction: the loss is the target's power


def test_velocity_target_is_what_the_scheduler_integrates():
    """x_s = (1 - s) x0 + s noise at timestep 1000 s, velocity noise - x0: one Euler step of diffusers'
    FlowMatchEulerDiscreteScheduler with the true velocity lands exactly on x at the next sigma."""
    scheduler = FlowMatchEulerDiscreteScheduler(shift=2.0)
    scheduler.set_timesteps(4)
    x0, noise = torch.randn(2, 3), torch.randn(2, 3)
    sigma, sigma_next = scheduler.sigmas[1], scheduler.sigmas[2]
    assert scheduler.timesteps[1] == pytest.approx(1000 * sigma)
    scheduler._step_index = 1
    stepped = scheduler.step(noise - x0, scheduler.timesteps[1], (1 - sigma) * x0 + sigma * noise, return_dict=False)[0]
    torch.testing.assert_close(stepped, (1 - sigma_next) * x0 + sigma_next * noise)


def test_buckets_keep_tokens_per_batch_near_the_reference(tiny_vae):
    args = train_dit.parse_args(["--batch-size", "8"])
    buckets = {b.name: b for b in train_dit.make_buckets(tiny_vae, (1, 2, 2), args)}

    assert len(buckets) == 6 * 4 * 5  # aspects x durations x frame rates
    reference = buckets["16x9_2s_15fps"]
    assert (reference.num_frames, reference.latent_shape, reference.batch_size) == (33, (9, 8, 14), 8)
    assert (reference.height, reference.width) == (64, 112)
    longest = buckets["16x9_4s_30fps"]  # 120 frames -> 121 rendered, 31 latent frames
    assert longest.num_frames == 121 and longest.batch_size == 2
    for bucket in buckets.values():
        assert (bucket.num_frames - 1) % 4 == 0


def test_latent_object_mask_follows_the_causal_vae_grouping():
    masks = np.zeros((9, 16, 24), bool)  # 1 + 4 * 2 frames -> 3 latent frames of 2 x 3 latents at 8x
    masks[0, 0, 0] = True  # frame 0 alone makes latent frame 0
    masks[3, 9, 17] = True  # frames 1-4 make latent frame 1
    masks[8, 15, 23] = True  # frames 5-8 make latent frame 2
    latent = train_dit.latent_object_mask(masks, temporal_ratio=4, spatial_ratio=8)
    assert latent.shape == (1, 3, 2, 3)
    expected = np.zeros((3, 2, 3), np.float32)
    expected[0, 0, 0] = expected[1, 1, 2] = expected[2, 1, 2] = 1
    assert np.array_equal(latent[0], expected)


def replayed_noise_level_and_noise(seed, latents, args):
    """The noise level and noise flow_matching_loss drew for one video after torch.manual_seed(seed)
    (no context): the model predicts 0, so its error is the noise itself, to weight by hand."""
    torch.manual_seed(seed)
    sigma = torch.sigmoid(args.logit_mean + args.logit_std * torch.randn(1)).item()
    torch.randint(1, 2, (1,)), torch.rand(1)  # the draws before the noise: context length, context or not
    return sigma, torch.randn_like(latents)


def test_object_weight_counts_object_latents_more():
    torch.manual_seed(0)
    latents = torch.zeros(1, 4, 2, 2, 2)
    object_mask = torch.zeros(1, 1, 2, 2, 2)
    object_mask[..., 0, 0] = 1  # a quarter of the latents cover an object
    model = RecordingModel()
    args = train_dit.parse_args(["--context-prob", "0", "--object-weight", "3"])
    torch.manual_seed(1)
    loss, _ = train_dit.flow_matching_loss(model, latents, None, None, None, None, args, object_mask)
    _, noise = replayed_noise_level_and_noise(1, latents, args)
    weight = 1 + 3 * object_mask
    assert loss.item() == pytest.approx(((noise**2) * weight).sum().item() / (weight.sum().item() * 4), rel=1e-5)


def test_object_weight_fade_keeps_the_extra_weight_to_low_noise_levels():
    """With --object-weight-fade F the object latents weigh 1 + w (1 - sigma)**F: near pure noise,
    where a weight that depends on the target would bias the layout, objects count as background."""
    latents = torch.zeros(1, 4, 2, 2, 2)
    object_mask = torch.zeros(1, 1, 2, 2, 2)
    object_mask[..., 0, 0] = 1
    args = train_dit.parse_args(["--context-prob", "0", "--object-weight", "3", "--object-weight-fade", "2"])
    torch.manual_seed(1)
    loss, _ = train_dit.flow_matching_loss(RecordingModel(), latents, None, None, None, None, args, object_mask)
    sigma, noise = replayed_noise_level_and_noise(1, latents, args)
    weight = 1 + 3 * (1 - sigma) ** 2 * object_mask
    assert 0 < sigma < 1
    assert loss.item() == pytest.approx(((noise**2) * weight).sum().item() / (weight.sum().item() * 4), rel=1e-5)
    with pytest.raises(ValueError, match="--object-weight-fade"):
        train_dit.main(train_dit.parse_args(["--object-weight-fade", "-1", "--run-dir", "/nonexistent/run"]))


def test_object_weight_max_sigma_drops_the_extra_weight_only_above_it():
    """With --object-weight-max-sigma S the object latents weigh 1 + w at noise levels up to S and 1
    above it: the layout steps are unbiased and the middle levels keep the whole weight."""
    latents = torch.zeros(1, 4, 2, 2, 2)
    object_mask = torch.zeros(1, 1, 2, 2, 2)
    object_mask[..., 0, 0] = 1
    args = train_dit.parse_args(["--context-prob", "0", "--object-weight", "3"])
    sigma, noise = replayed_noise_level_and_noise(1, latents, args)
    for max_sigma, extra in ((min(1.0, sigma + 0.01), 3), (sigma - 0.01, 0)):
        args = train_dit.parse_args(["--context-prob", "0", "--object-weight", "3", "--object-weight-max-sigma", str(max_sigma)])
        torch.manual_seed(1)
        loss, _ = train_dit.flow_matching_loss(RecordingModel(), latents, None, None, None, None, args, object_mask)
        weight = 1 + extra * object_mask
        assert loss.item() == pytest.approx(((noise**2) * weight).sum().item() / (weight.sum().item() * 4), rel=1e-5)
    with pytest.raises(ValueError, match="--object-weight-max-sigma"):
        train_dit.main(train_dit.parse_args(["--object-weight-max-sigma", "0", "--run-dir", "/nonexistent/run"]))


def test_temporal_weight_scores_frame_to_frame_changes_of_the_clean_prediction():
    """A prediction whose error is the same in every frame moves the velocity loss but not the
    temporal term; one whose error alternates from frame to frame moves both."""
    torch.manual_seed(0)
    latents = torch.randn(2, 4, 6, 2, 2)
    args = train_dit.parse_args(["--context-prob", "0", "--object-weight", "0", "--temporal-weight", "2"])

    class OffsetModel(torch.nn.Module):
        def __init__(self, offset):
            super().__init__()
            self.offset = offset  # (T,) added to the true velocity

        def forward(self, hidden_states, timestep, **kwargs):
            s = (timestep / 1000)[:, None, :, None, None]
            noise = (hidden_states - (1 - s) * latents) / s
            return (noise - latents + self.offset[None, None, :, None, None],)

    steady, parts = train_dit.flow_matching_loss(OffsetModel(torch.full((6,), 0.5)), latents, None, None, None, None, args)
    assert parts["temporal"] == pytest.approx(0.0, abs=1e-6)
    assert steady.item() == pytest.approx(0.25, rel=1e-4)  # the velocity error alone

    alternating = torch.tensor([0.5, -0.5] * 3)
    loss, parts = train_dit.flow_matching_loss(OffsetModel(alternating), latents, None, None, None, None, args)
    assert parts["temporal"] > 0.01
    assert loss.item() == pytest.approx(0.25 + 2 * parts["temporal"], rel=1e-4)
    assert "temporal" not in train_dit.flow_matching_loss(OffsetModel(alternating), latents, None, None, None, None, train_dit.parse_args([]))[1]


def test_frame_noise_prob_draws_a_noise_level_per_latent_frame():
    torch.manual_seed(0)
    latents = torch.randn(64, 4, 6, 2, 2)
    model = RecordingModel()
    train_dit.flow_matching_loss(model, latents, None, None, None, None, train_dit.parse_args(["--context-prob", "0"]))
    assert (model.inputs["timestep"] == model.inputs["timestep"][:, :1]).all()  # off: one level per video

    args = train_dit.parse_args(["--context-prob", "0", "--frame-noise-prob", "0.5"])
    train_dit.flow_matching_loss(model, latents, None, None, None, None, args)
    timestep = model.inputs["timestep"]
    per_frame = (timestep != timestep[:, :1]).any(1)  # videos whose frames differ
    assert 16 <= per_frame.sum() <= 48  # about half of them
    assert ((timestep > 0) & (timestep < 1000)).all()

    args = train_dit.parse_args(["--context-prob", "1", "--frame-noise-prob", "1"])
    train_dit.flow_matching_loss(model, latents, None, None, None, None, args)
    timestep = model.inputs["timestep"]
    assert (timestep[:, 0] == 0).all()  # context frames stay clean
    assert (timestep[:, -1] > 0).all()


def test_a_refiner_added_to_a_trained_transformer_trains_alone(model_dir, tmp_path):
    # --refiner-channels grows the folder's transformer by a refiner; --train-refiner-only then
    # leaves every transformer weight as it was and trains the refiner alone.
    run_dir = tmp_path / "run"
    grow = ("--transformer-size", "tiny", "--init-transformer", str(model_dir), "--refiner-channels", "4")
    train_dit.main(train_args(model_dir, run_dir, *grow, "--train-refiner-only", "--max-steps", "2", "--lr", "1e-2"))
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    assert checkpoint["config"]["refiner_channels"] == 4
    start = load_file(model_dir / "transformer" / "diffusion_pytorch_model.safetensors")
    for name, tensor in start.items():
        assert torch.equal(checkpoint["model"][name], tensor.float()), name
    refiner = {name: w for name, w in checkpoint["model"].items() if name.startswith("refiner.")}
    assert refiner and refiner["refiner.net.4.weight"].abs().max() > 0  # its zero last layer learned

    with pytest.raises(ValueError, match="--train-refiner-only"):
        train_dit.main(train_args(model_dir, tmp_path / "other", "--train-refiner-only", "--max-steps", "1"))


def test_frame_position_grows_a_trained_transformer_and_needs_a_size(model_dir, tmp_path):
    # --frame-position gives the folder's transformer its place-in-the-frame embedding: every trained
    # weight is copied, and the new projection (zero at the start) learns.
    run_dir = tmp_path / "run"
    grow = ("--transformer-size", "tiny", "--init-transformer", str(model_dir), "--frame-position")
    train_dit.main(train_args(model_dir, run_dir, *grow, "--max-steps", "2", "--lr", "1e-2"))
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    assert checkpoint["config"]["frame_position_embedding"] is True
    assert checkpoint["model"]["frame_position.proj.weight"].abs().max() > 0
    groups = checkpoint["optimizer"]["param_groups"]
    assert [group["lr_scale"] for group in groups] == [1.0, 10.0]  # the new projection learns faster
    assert groups[1]["lr"] == pytest.approx(10 * groups[0]["lr"])

    with pytest.raises(ValueError, match="--frame-position"):
        train_dit.main(train_args(model_dir, tmp_path / "other", "--frame-position", "--max-steps", "1"))
    assert not (tmp_path / "other").exists()


def test_self_conditioning_grows_a_trained_transformer_and_needs_a_size(model_dir, tmp_path):
    # --self-conditioning gives the folder's transformer its previous-estimate input: every trained
    # weight is copied, and the new embedding (zero at the start) learns from the first passes.
    run_dir = tmp_path / "run"
    grow = ("--transformer-size", "tiny", "--init-transformer", str(model_dir), "--self-conditioning", "--self-condition-prob", "0.9")
    train_dit.main(train_args(model_dir, run_dir, *grow, "--max-steps", "2", "--lr", "1e-2"))
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    assert checkpoint["config"]["self_conditioning"] is True
    assert checkpoint["model"]["self_condition_embed.weight"].abs().max() > 0
    assert [group["lr_scale"] for group in checkpoint["optimizer"]["param_groups"]] == [1.0, 10.0]  # the new embedding learns faster

    with pytest.raises(ValueError, match="--self-conditioning"):
        train_dit.main(train_args(model_dir, tmp_path / "other", "--self-conditioning", "--max-steps", "1"))
    with pytest.raises(ValueError, match="--self-condition-prob"):
        train_dit.main(train_args(model_dir, tmp_path / "other", *grow[:-1], "1.5", "--max-steps", "1"))
    assert not (tmp_path / "other").exists()


def test_noise_frame_correlation_trains_and_exports_the_shared_noise(model_dir, tmp_path):
    # The loss draws noise whose latent frames share the asked-for part of its variance ...
    torch.manual_seed(0)
    model = RecordingModel()
    args = train_dit.parse_args(["--context-prob", "0", "--noise-frame-correlation", "0.5"])
    latents = torch.zeros(32, 4, 6, 8, 8)  # clean latents of zero: the noisy input is sigma * noise
    train_dit.flow_matching_loss(model, latents, None, None, None, None, args)
    noise = model.inputs["noisy"] / (model.inputs["timestep"][:, None, :, None, None] / 1000)
    first, last = noise[:, :, 0].flatten(), noise[:, :, -1].flatten()
    assert torch.corrcoef(torch.stack([first, last]))[0, 1].item() == pytest.approx(0.5, abs=0.06)

    # ... a resumed run keeps it, the export tells the pipeline to sample from that noise, and a run
    # from that folder keeps it.
    run_dir, out_dir = tmp_path / "run", tmp_path / "exported"
    train_dit.main(train_args(model_dir, run_dir, "--noise-frame-correlation", "0.5", "--max-steps", "1"))
    train_dit.main(train_args(model_dir, run_dir, "--max-steps", "2"))  # resumed without the flag: the run's noise, not the folder's
    assert torch.load(run_dir / "checkpoint.pt", weights_only=False)["args"]["noise_frame_correlation"] == 0.5
    train_dit.main(train_dit.parse_args(["--run-dir", str(run_dir), "--export", str(out_dir)]))
    assert TextToVideoPipeline.from_pretrained(out_dir).config.noise_frame_correlation == 0.5
    assert TextToVideoPipeline.from_pretrained(model_dir).config.noise_frame_correlation == 0.0
    train_dit.main(train_args(out_dir, tmp_path / "again", "--max-steps", "1"))
    assert torch.load(tmp_path / "again" / "checkpoint.pt", weights_only=False)["args"]["noise_frame_correlation"] == 0.5

    with pytest.raises(ValueError, match="--noise-frame-correlation"):
        train_dit.main(train_args(model_dir, tmp_path / "other", "--noise-frame-correlation", "1", "--max-steps", "1"))
    assert not (tmp_path / "other").exists()
