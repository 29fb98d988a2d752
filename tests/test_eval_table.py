"""`python -m eval` end to end on a tiny model folder: every row of the table is there and is a
number in range, and the same model gives the same table twice (fixed prompts, fixed seeds)."""

import json

import numpy as np
import pytest

from eval.__main__ import build_prompt_sets, main, parse_args
from training import world


def test_prompt_sets_are_fixed_and_respect_the_held_out_split():
    from training.world import is_held_out

    first, second = build_prompt_sets(quick=True), build_prompt_sets(quick=True)
    assert [s.prompts for s in first] == [s.prompts for s in second]
    sets = {s.name: s for s in first}
    assert set(sets) == {"seen", "held_out", "paraphrased", "two_objects", "three_objects"}
    assert all(any(is_held_out(o) for o in scene.objects) for scene in sets["held_out"].scenes)
    assert not any(is_held_out(o) for scene in sets["seen"].scenes for o in scene.objects)
    assert all(len(scene.objects) == 2 for scene in sets["two_objects"].scenes)



def test_another_noise_draw_keeps_the_prompts_and_changes_only_the_noise():
    from eval.__main__ import EVAL_SEED, noise_seed

    # Draw 0 is the table every earlier eval printed: its seeds must not move.
    assert [noise_seed(offset) for offset in (0, 15, 100, 203)] == [EVAL_SEED, EVAL_SEED + 15, EVAL_SEED + 100, EVAL_SEED + 203]
    offsets = [*range(40), *range(100, 104), *range(200, 210)]  # prompts, aspect scenes, continuations
    draws = [{noise_seed(offset, draw) for offset in offsets} for draw in (0, 1, 2)]
    assert all(len(seeds) == len(offsets) for seeds in draws)
    assert not (draws[0] & draws[1]) and not (draws[1] & draws[2]) and not (draws[0] & draws[2])
    assert parse_args(["--noise-draw", "3"]).noise_draw == 3 and parse_args([]).noise_draw == 0


@pytest.mark.parametrize("value", ["-1", "1000", "10000000000"])
def test_noise_draw_out_of_range_names_the_option(value, capsys):
    with pytest.raises(SystemExit):
        parse_args(["--noise-draw", value])
    assert "--noise-draw must be an integer from 0 to 999" in capsys.readouterr().err

def test_travel_counts_normal_speed_straight_movers_along_their_path():
    from eval.__main__ import FPS, normal_speed_travel
    from eval.analyzer import analyze, match
    from pipeline import presets
    from training import world

    height, width = presets.resolution("16:9", "fast")
    num_frames = presets.num_frames(2.0, FPS)

    def travel(*objects):
        scene = world.Scene(objects, background="black")
        analysis = analyze(world.render(scene, height, width, num_frames, FPS).frames, FPS)
        return normal_speed_travel(analysis, match(analysis, scene), scene)

    # 0.35 frame heights a second for (num_frames - 1) / FPS seconds, reflections included.
    expected = 0.35 * (num_frames - 1) / FPS
    for motion in ("right", "up"):
        (moved,) = travel(world.ObjectSpec("red", "circle", motion=motion))
        assert moved == pytest.approx(expected, abs=0.12), motion
    # Slow, quick and still objects are not what the bar is about.
    assert travel(world.ObjectSpec("red", "circle", motion="left", speed="slowly"), world.ObjectSpec("blue", "square")) == []


def test_vae_only_measures_a_vae_folder_with_no_transformer(tmp_path, capsys):
    # A new latent space is judged before any transformer is trained on it: the folder holds a VAE alone.
    import torch
    from pipeline.vae import CausalVideoVAE

    torch.manual_seed(0)
    CausalVideoVAE(block_out_channels=(8, 16, 16), layers_per_block=1).save_pretrained(tmp_path / "next" / "vae")
    report = main(parse_args(["--model", str(tmp_path / "next"), "--vae-only", "--vae-clips", "2", "--json", str(tmp_path / "vae.json")]))
    printed = capsys.readouterr().out
    assert "8x space" in printed and "| psnr_objects |" in printed and "| analyzer_shape |" in printed
    assert set(report) >= {"psnr", "psnr_objects", "analyzer_colour", "analyzer_shape", "analyzer_motion"}
    per_shape = [key for key in report if key.startswith("analyzer_shape_of_")]
    assert per_shape and all(0 <= report[key] <= 1 for key in per_shape)
    assert json.loads((tmp_path / "vae.json").read_text()) == report


@pytest.mark.slow  # about a minute: ~20 generations and their analysis on a tiny model
def test_eval_prints_the_whole_table(tmp_path, capsys):

    import torch
    from pipeline.pipeline_t2v import TextToVideoPipeline
    from pipeline.transformer import transformer_from_size
    from pipeline.vae import CausalVideoVAE

    torch.manual_seed(0)
    pipe = TextToVideoPipeline.from_components(CausalVideoVAE(block_out_channels=(8, 16, 16), layers_per_block=1), transformer_from_size("tiny"))
    pipe.save_pretrained(tmp_path / "model")
    report_path = tmp_path / "report.json"
    report = main(parse_args(["--model", str(tmp_path / "model"), "--quick", "--json", str(report_path)]))

    printed = capsys.readouterr().out
    for row in ("seen", "held_out", "paraphrased", "two_objects", "three_objects", "psnr_objects", "seconds_per_video", "analyzer_colour"):
        assert row in printed
    for row in ("count", "shape_9:16", "elongation_1:1", "continuation_motion", "analyzer_on_true_second_second_colour", "travel_normal_speed_2s_true_clips"):
        assert row in printed
    # The analyzer reads true world clips well even from their second second alone, so the
    # continuation rows measure the model, not the analyzer.
    assert report["analyzer_on_true_second_second_colour"] >= 0.75
    assert json.loads(report_path.read_text())["sets"] == report["sets"]
    # Each video is listed with what its prompt asked for and what the analyzer saw, in world.py's words.
    assert report["videos"].keys() == report["sets"].keys()
    for videos in report["videos"].values():
        for video in videos:
            assert len(video["wanted"]) == len(video["match"]["objects"]) >= 1
            assert all(obj["motion"] in world.MOTIONS for obj in video["wanted"] + video["found"])
    for scores in report["sets"].values():
        assert all(0.0 <= value <= 1.0 for value in scores.values())
    assert report["seconds_per_video"] > 0 and report["psnr"] > 0


def test_sweep_scores_the_chosen_sets_and_draws(tiny_pipe, tmp_path, capsys):
    from eval import sweep

    tiny_pipe.save_pretrained(tmp_path / "model")
    args = ["--model", str(tmp_path / "model"), "--steps", "1", "--guidance", "1", "--shift", "2", "--sets", "two_objects"]
    rows = sweep.main(sweep.parse_args(args + ["--first-draw", "3", "--json", str(tmp_path / "sweep.json")]))
    assert "4 videos a setting (two_objects; noise draws 3-3)" in capsys.readouterr().out  # the quick half of 8 prompts
    assert json.loads((tmp_path / "sweep.json").read_text())["noise_draws"] == [3]
    # A video counts for "all colours" only when every object has its colour: never more than the share of objects in theirs.
    assert 0.0 <= rows[0]["all_colours"] <= rows[0]["colour"]
    assert sweep.main(sweep.parse_args(args + ["--first-draw", "3"]))[0]["colour"] == rows[0]["colour"]  # seeded by the draw


def test_sweep_scores_a_multistep_solver_on_the_same_flow(tiny_pipe, tmp_path, capsys):
    from eval import sweep

    tiny_pipe.save_pretrained(tmp_path / "model")
    args = ["--model", str(tmp_path / "model"), "--steps", "2", "--guidance", "1", "--shift", "3", "--sets", "two_objects", "--solver", "unipc"]
    [row] = sweep.main(sweep.parse_args(args))
    assert row["solver"] == "unipc" and 0.0 <= row["score"] <= 1.0
    assert "| unipc | 2 | 1 |" in capsys.readouterr().out
    # Every solver walks the folder's flow at the asked shift: its sigmas run from pure noise to 0.
    euler = tiny_pipe.scheduler.config
    for solver in sweep.SOLVERS:
        scheduler = sweep.make_scheduler(solver, euler, 3.0)
        scheduler.set_timesteps(4)
        assert float(scheduler.sigmas[0]) == pytest.approx(1.0, abs=0.01) and float(scheduler.sigmas[-1]) == 0.0


@pytest.mark.parametrize(
    "option", [["--first-draw", "-1"], ["--first-draw", "999", "--noise-draws", "2"], ["--sets", "everything"], ["--solver", "heun"]]
)
def test_sweep_options_out_of_range_name_the_option(option, capsys):
    from eval import sweep

    with pytest.raises(SystemExit):
        sweep.parse_args(option)
    assert option[0] in capsys.readouterr().err


@pytest.mark.slow  # about a minute: the sweep's 2 settings x 13 prompts x 2 noise draws and the card's 8 videos
def test_sweep_and_model_card(tmp_path, capsys):
    import torch

    from eval import model_card, sweep
    from pipeline.pipeline_t2v import TextToVideoPipeline
    from pipeline.transformer import transformer_from_size
    from pipeline.vae import CausalVideoVAE

    torch.manual_seed(0)
    pipe = TextToVideoPipeline.from_components(CausalVideoVAE(block_out_channels=(8, 16, 16), layers_per_block=1), transformer_from_size("tiny"))
    pipe.save_pretrained(tmp_path / "model")

    rows = sweep.main(sweep.parse_args(["--model", str(tmp_path / "model"), "--steps", "2", "--guidance", "1", "3", "--shift", "2", "--noise-draws", "2"]))
    assert [(row["steps"], row["guidance"]) for row in rows] == [(2, 1.0), (2, 3.0)]
    assert all(0.0 <= row["score"] <= 1.0 and row["seconds_per_video"] > 0 and "travel" in row for row in rows)
    printed = capsys.readouterr().out
    assert "26 videos a setting" in printed and "best: --steps 2" in printed

    # As `python -m eval --json` writes it: the draw and the per-video lists beside the measures.
    report = {"model": "tiny", "noise_draw": 1, "sets": {"seen": {"colour": 0.5}}, "seconds_per_video": 1.0, "videos": {"seen": [{"prompt": "p"}]}}
    (tmp_path / "eval.json").write_text(json.dumps(report))
    model_card.main(model_card.parse_args(["--model", str(tmp_path / "model"), "--eval-json", str(tmp_path / "eval.json")]))
    card = (tmp_path / "model" / "MODEL_CARD.md").read_text()
    for text in ("## Eval", "noise draw 1", "| seen | 50%", "| seconds_per_video | 1 |", "![contact sheet](contact_sheet.png)", "a purple star moving left", "no training.json"):
        assert text in card
    assert "videos" not in card
    from PIL import Image

    sheet = Image.open(tmp_path / "model" / "contact_sheet.png")
    assert sheet.height >= 8 * 64  # eight rows of 64p frames (shown at 2x)


def test_denoise_measures_each_noise_level_and_the_sampler_tail(tiny_pipe, tmp_path, capsys):
    from eval import denoise

    tiny_pipe.save_pretrained(tmp_path / "model")
    args = ["--model", str(tmp_path / "model"), "--clips", "1", "--tail-steps", "2", "--json", str(tmp_path / "denoise.json")]
    report = denoise.main(denoise.parse_args(args))
    assert [row["sigma"] for row in report["levels"]] == list(denoise.NOISE_LEVELS)
    for row in report["levels"]:
        assert row["x0_error"] >= 0 and row["removed"] == pytest.approx(1 - row["x0_error"] / row["sigma"])
        assert row["object_mass"] > 0
    assert [row["steps"] for row in report["sampler_tail"]] == [2, 1]  # the last two sigmas, each carried to 0
    assert all(0 <= row["high_frequency"] <= row["left"] + 1e-6 for row in report["sampler_tail"])
    assert "| sigma | velocity error | x0 error | removed | object mass |" in capsys.readouterr().out
    assert json.loads((tmp_path / "denoise.json").read_text()) == report
    assert denoise.main(denoise.parse_args(args))["levels"] == report["levels"]  # seeded clips and noise


def test_background_frames_see_through_the_objects_to_a_gradient():
    from eval.denoise import background_frames

    rows = np.linspace(0, 200, 8).astype(np.uint8)  # a vertical gradient, as the sky and sunset
    frames = np.broadcast_to(rows[None, None, :, None, None], (1, 2, 8, 6, 3)).copy()
    masks = np.zeros(frames.shape[:4], bool)
    frames[0, :, 2:5, 1:3] = 255  # an object over three rows
    masks[0, :, 2:5, 1:3] = True
    expected = np.broadcast_to(rows.astype(np.float32)[None, None, :, None, None], frames.shape)
    assert np.array_equal(background_frames(frames, masks), expected)


@pytest.mark.parametrize("option", ["--clips", "--tail-steps", "--objects"])
def test_denoise_rejects_a_count_below_one_naming_the_option(option):
    from eval import denoise

    with pytest.raises(ValueError, match=option):
        denoise.main(denoise.parse_args(["--model", "unused", option, "0"]))
