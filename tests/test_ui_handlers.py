"""The studio's handlers against a tiny pipeline: recipes from controls, messages, runs and their
folders, Stop, restoring controls, seed comparison, cleanup. No server, no browser."""

import dataclasses
import os
import time
import warnings
from pathlib import Path

import gradio as gr
import numpy as np
import pytest

from pipeline.export import read_recipe, read_video
from pipeline.recipe import MAX_PROMPT_CHARS, MAX_SEED, Recipe
from ui.handlers import CONTROL_FIELDS, RunSlot, Studio, gallery_items, parse_seed, parse_seeds, recipe_controls, recipe_text
from ui.runs import RUN_NAME, StudioSettings, clean_old_runs

# Small and quick: 1 second at 8 fps is 8 frames (3 latent frames) of 64x64 on the tiny model.
FAST = dict(prompt="a red ball bouncing on a black background", negative_prompt="", aspect="1:1", duration=1.0, quality="fast", steps=3, guidance=5.0, fps=8)


def controls(**changes) -> list:
    values = {**FAST, "seed": "7", **changes}
    return [values[name] for name in CONTROL_FIELDS]


@pytest.fixture(autouse=True)
def gradio_cache(tmp_path, monkeypatch):
    """Gradio copies every file a component is given into its cache; keep those copies in tmp_path."""
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio-cache"))


@pytest.fixture
def studio(tiny_pipe, tmp_path) -> Studio:
    return Studio(tiny_pipe, StudioSettings(output_dir=tmp_path / "outputs", keep_hours=24))


def run_folders(studio: Studio) -> list[Path]:
    return sorted(studio.settings.output_dir.iterdir()) if studio.settings.output_dir.exists() else []


def drain(generator) -> list:
    return list(generator)


# --- recipes from the controls -----------------------------------------------------------------------


def test_build_recipe_reads_every_control(studio):
    # Sliders and number boxes send floats; the seed box sends text (63 bits do not fit a JS number).
    recipe = studio.build_recipe("  a red ball  ", "blur", "9:16", 2.5, "fast", str(MAX_SEED), 12.0, 4.5, 15.0)
    assert recipe == Recipe(
        prompt="a red ball", negative_prompt="blur", aspect="9:16", duration=2.5, fps=15, seed=MAX_SEED, steps=12,
        guidance=4.5, quality="fast", model=studio.model,
    )  # fmt: skip
    assert isinstance(recipe.steps, int) and isinstance(recipe.fps, int)


def test_default_recipe_takes_the_models_sampling_defaults(studio, tiny_pipe):
    defaults = studio.default_recipe()
    assert defaults.steps == tiny_pipe.config.default_num_inference_steps
    assert defaults.guidance == tiny_pipe.config.default_guidance_scale


@pytest.mark.parametrize(
    "changes, field",
    [
        (dict(prompt="   "), "prompt is empty"),
        (dict(prompt="x" * (MAX_PROMPT_CHARS + 1)), "prompt is"),
        (dict(duration=20.0), "duration"),
        (dict(duration=None), "duration"),
        (dict(seed="-1"), "seed"),
        (dict(seed="lucky"), "seed"),
        (dict(seed=str(MAX_SEED + 1)), "seed"),
        (dict(steps=0), "steps"),
        (dict(steps=2.5), "steps"),
        (dict(guidance=30.0), "guidance"),
        (dict(fps=7), "fps"),
        (dict(aspect="2:1"), "aspect"),
        (dict(quality="ultra"), "quality"),
    ],
)
def test_a_bad_control_is_answered_with_a_message_naming_it(studio, changes, field):
    with pytest.raises(gr.Error) as caught:
        studio.generate(*controls(**changes), RunSlot())
    assert field in caught.value.message
    with pytest.raises(gr.Error, match=field):
        next(studio.create(*controls(**changes), RunSlot(), []))
    assert run_folders(studio) == []  # nothing ran


def test_seed_parsing():
    assert parse_seed(" 42 ") == 42 and parse_seed(42) == 42 and parse_seed(42.0) == 42
    for bad in ("", "4.5", "1e3", True, None, 4.5):
        with pytest.raises(ValueError, match="seed must be a whole number"):
            parse_seed(bad)
    assert parse_seeds("1, 2;3 4") == [1, 2, 3, 4] and parse_seeds([5, "6"]) == [5, 6]
    with pytest.raises(ValueError, match="2 to 4 seeds"):
        parse_seeds("1")
    with pytest.raises(ValueError, match="2 to 4 seeds"):
        parse_seeds("1 2 3 4 5")
    with pytest.raises(ValueError, match="7 is given twice"):
        parse_seeds("7, 8, 7")


def test_words_the_model_never_read_are_warned_about_and_the_run_goes_ahead(studio):
    studio.pipe.register_to_config(prompt_vocabulary=["a", "red", "ball", "bouncing", "on", "black", "background"])
    with pytest.warns(UserWarning, match="never read 'cat', 'jumping' in its training captions"):
        *_, last = drain(studio.create(*controls(prompt="a red cat jumping on a black background"), RunSlot(), []))
    assert "Done" in last[1]
    fields = [FAST[name] if name != "seed" else "4, 5" for name in CONTROL_FIELDS]
    fields[CONTROL_FIELDS.index("prompt")] = "a red dog"
    with pytest.warns(UserWarning, match="never read 'dog'"):
        *_, last = drain(studio.compare_stream(*fields, RunSlot(), []))
    assert "Done" in last[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        drain(studio.create(*controls(), RunSlot(), []))  # every word known: nothing to say


def test_seed_lock_dice_and_buttons(studio):
    slot = RunSlot()
    seed, _, generate, stop, compare, compare_stop = studio.begin(*controls(seed="123"), False, slot)
    assert seed != "123" and 0 <= int(seed) <= MAX_SEED  # unlocked: a fresh seed every run
    assert slot.control is not None  # Stop works even while the run waits in the queue
    assert generate.interactive is False and compare.interactive is False
    assert stop.interactive is True and compare_stop.interactive is True
    assert studio.begin(*controls(seed="123"), True, slot)[0] == "123"  # locked: kept
    assert studio.begin(*controls(seed=""), True, slot)[0] != ""  # locked but empty: drawn
    dice_seed, locked = studio.new_seed()
    assert locked is True and 0 <= int(dice_seed) <= MAX_SEED
    generate, stop, *_ = studio.end(slot)
    assert generate.interactive is True and stop.interactive is False and slot.control is None
    *buttons, progress = studio.end_after_error(slot)
    assert buttons[0].interactive is True and "failed" in progress


def test_a_mistake_is_answered_before_the_run_is_queued(studio):
    slot = RunSlot()
    with pytest.raises(gr.Error, match="guidance must be between"):
        studio.begin(*controls(guidance=99.0), True, slot)
    assert slot.control is None  # nothing changed: the buttons stay as they were
    fields = [FAST[name] if name != "seed" else "4, 4" for name in CONTROL_FIELDS]
    with pytest.raises(gr.Error, match="given twice"):
        studio.begin_compare(*fields, 2, slot)
    assert slot.control is None


# --- runs ----------------------------------------------------------------------------------------------


def test_generate_writes_the_video_and_recipe_in_a_folder_of_its_own(studio):
    video, text = studio.generate(*controls(), RunSlot())
    video, recipe = Path(video), Recipe.from_json(text)
    assert video.name == "ling-7.mp4" and video.parent.parent == studio.settings.output_dir
    assert RUN_NAME.match(video.parent.name)
    assert sorted(p.name for p in video.parent.iterdir()) == ["ling-7.json", "ling-7.mp4"]
    assert recipe.seed == 7 and recipe == read_recipe(video) == read_recipe(video.with_suffix(".json"))
    frames, fps = read_video(video)
    assert frames.shape == (8, 64, 64, 3) and fps == 8
    # The same seed again: a second folder, nothing overwritten.
    second, _ = studio.generate(*controls(), RunSlot())
    assert Path(second).parent != video.parent and len(run_folders(studio)) == 2


def test_an_empty_seed_in_the_api_draws_one(studio):
    _, text = studio.generate(*controls(seed=""), RunSlot())
    assert 0 <= Recipe.from_json(text).seed <= MAX_SEED


def test_create_streams_previews_and_progress_then_the_result(studio):
    updates = drain(studio.create(*controls(steps=4), RunSlot(), []))
    *steps, final = updates
    assert steps, "at least one live update before the result"
    for preview, progress, *rest in steps:
        assert preview.dtype == np.uint8 and preview.ndim == 3 and preview.shape[0] == 64  # a strip of frames
        assert "Step " in progress and " of 4" in progress
        assert all(value == gr.skip() for value in rest)
    preview, progress, video, info, recipe, download, history, gallery = final
    assert "Done" in progress
    assert Path(video).is_file() and "Seed 7" in info and Recipe.from_json(recipe).seed == 7
    assert download.interactive and download.value["orig_name"] == "ling-7.mp4"
    assert history == [{"video": video, "recipe": Recipe.from_json(recipe).to_dict()}] and gallery == gallery_items(history)
    # The next run goes on top of the history.
    *_, (_, _, video2, _, _, _, history2, _) = drain(studio.create(*controls(seed="8"), RunSlot(), history))
    assert [entry["video"] for entry in history2] == [video2, video]
    assert studio.show_history_item(history2, gr.SelectData(None, {"index": 1, "value": None}))[0] == video


def test_previews_change_as_the_video_is_denoised(studio, monkeypatch):
    strips = []
    original = studio.previewer.strips

    def record(latents, *args):
        result = original(latents, *args)
        strips.append(result[0])
        return result

    monkeypatch.setattr(studio.previewer, "strips", record)
    drain(studio.create(*controls(steps=4), RunSlot(), []))
    assert len(strips) == 4  # one per step
    assert any(not np.array_equal(a, b) for a, b in zip(strips, strips[1:]))


def test_stop_ends_the_run_within_one_step_and_leaves_no_file(studio, monkeypatch):
    slot = RunSlot()
    slot.prepare()
    calls = []
    original = studio.previewer.strips

    def stop_at_step_3(latents, *args):  # runs in the worker, inside the step callback
        calls.append(1)
        if len(calls) == 3:
            studio.stop(slot)
        return original(latents, *args)

    monkeypatch.setattr(studio.previewer, "strips", stop_at_step_3)
    *_, last = drain(studio.create(*controls(steps=10), slot, []))
    assert len(calls) == 3  # no step ran after the one during which Stop was pressed
    assert "Stopped" in last[1] and all(value == gr.skip() for value in last[2:])
    assert run_folders(studio) == []  # no video, no partial file, not even an empty folder
    monkeypatch.setattr(studio.previewer, "strips", original)
    video, _ = studio.generate(*controls(), RunSlot())  # the next run works
    assert Path(video).is_file()


def test_stop_while_decoding_leaves_no_file(studio, tiny_pipe, monkeypatch):
    slot = RunSlot()
    slot.prepare()
    original = tiny_pipe.iter_decode

    def stop_during_decode(*args, **kwargs):
        for chunk in original(*args, **kwargs):
            studio.stop(slot)  # the denoising is over: only the pipeline's interrupt reaches the decoder
            yield chunk

    monkeypatch.setattr(tiny_pipe, "iter_decode", stop_during_decode)
    *_, last = drain(studio.create(*controls(), slot, []))
    assert "Stopped" in last[1]
    assert run_folders(studio) == []


def test_the_api_says_when_a_run_was_stopped(studio):
    slot = RunSlot()
    slot.prepare().request_stop()
    with pytest.raises(gr.Error, match="stopped before it finished; no video was saved"):
        studio.generate(*controls(), slot)


def test_stop_pressed_while_waiting_in_the_queue_skips_the_run(studio):
    slot = RunSlot()
    studio.begin(*controls(), True, slot)
    studio.stop(slot)
    *_, last = drain(studio.create(*controls(), slot, []))
    assert "Stopped" in last[1] and run_folders(studio) == []


# --- restoring controls --------------------------------------------------------------------------------


def _every_field_changed(studio) -> Recipe:
    return Recipe(
        prompt="a small white star spinning against a navy background", negative_prompt="blurry", aspect="21:9",
        duration=1.5, fps=12, seed=2**62 + 3, steps=4, guidance=7.5, quality="fast", model=studio.model,
    )  # fmt: skip


def test_reuse_recipe_restores_every_control(studio):
    recipe = _every_field_changed(studio)
    *values, lock, tabs = studio.apply_recipe(recipe_text(recipe))  # what the page's recipe box holds
    assert values == list(recipe_controls(recipe)) and lock is True and tabs.selected == "create"
    assert values[CONTROL_FIELDS.index("seed")] == str(2**62 + 3)  # text: a browser would round a number
    assert studio.build_recipe(*values) == recipe  # the controls make the very same recipe again
    assert studio.apply_recipe(recipe.to_dict())[:-1] == studio.apply_recipe(recipe_text(recipe))[:-1]
    with pytest.raises(gr.Error, match="no recipe yet"):
        studio.apply_recipe(None)


def test_load_recipe_from_a_video_or_its_json_restores_every_control(studio):
    video, recipe = studio.generate(*controls(prompt="a blue square moving right over a sky background", seed="99"), RunSlot())
    for path in (video, Path(video).with_suffix(".json")):
        loaded = studio.load_recipe(str(path))
        assert loaded == recipe
        *values, lock, _ = studio.apply_recipe(loaded)
        assert recipe_text(studio.build_recipe(*values)) == recipe and lock is True


def test_load_recipe_answers_a_foreign_file_in_words(studio, tmp_path):
    foreign = tmp_path / "notes.json"
    foreign.write_text('{"hello": 1}')
    with pytest.raises(gr.Error) as caught:
        studio.load_recipe(str(foreign))
    assert "notes.json is not a Ling Studio video or recipe" in caught.value.message
    junk = tmp_path / "clip.mp4"
    junk.write_bytes(b"not a video")
    with pytest.raises(gr.Error, match="clip.mp4 is not a Ling Studio video or recipe"):
        studio.load_recipe(str(junk))
    with pytest.raises(gr.Error, match="Drop an MP4"):
        studio.load_recipe(None)


def test_a_recipe_from_another_model_is_restored_with_a_warning(studio):
    recipe = dataclasses.replace(_every_field_changed(studio), model="someone-elses-model")
    with pytest.warns(UserWarning, match="someone-elses-model"):
        values = studio.apply_recipe(recipe.to_dict())
    assert values[0] == recipe.prompt


# --- compare -------------------------------------------------------------------------------------------


def test_compare_two_seeds_gives_each_seeds_own_video(studio):
    fields = [FAST[name] if name != "seed" else "11, 12" for name in CONTROL_FIELDS]
    videos, recipes = studio.compare(*fields, RunSlot())
    assert [Recipe.from_json(r).seed for r in recipes] == [11, 12]
    assert len({Path(v).parent for v in videos}) == 1  # one run, one folder
    batch = [read_video(v)[0] for v in videos]
    assert not np.array_equal(batch[0], batch[1])
    for seed, frames in zip((11, 12), batch):
        single, _ = studio.generate(*controls(seed=str(seed)), RunSlot())
        assert np.array_equal(read_video(single)[0], frames)  # the batch changed nothing


def test_compare_stream_fills_one_slot_per_seed_and_use_this_seed_goes_to_create(studio):
    fields = [FAST[name] if name != "seed" else "21 22 23" for name in CONTROL_FIELDS]
    *steps, final = drain(studio.compare_stream(*fields, RunSlot(), []))
    previews = steps[-1][4:8]
    assert [p.visible for p in previews] == [True, True, True, False]
    assert all(p.value is not None for p in previews[:3])
    progress, compared, history, gallery, *slots = final
    videos, buttons = slots[4:8], slots[8:12]
    assert [v.visible for v in videos] == [True, True, True, False] and [b.visible for b in buttons] == [True, True, True, False]
    assert [v.label for v in videos[:3]] == ["Seed 21", "Seed 22", "Seed 23"]
    assert [r["seed"] for r in compared] == [21, 22, 23] and len(history) == 3
    *values, lock, tabs = studio.use_seed(1, compared)
    assert values[CONTROL_FIELDS.index("seed")] == "22" and lock is True and tabs.selected == "create"
    assert studio.build_recipe(*values).to_dict() == compared[1]


def test_compare_needs_two_to_four_different_seeds(studio):
    for seeds, message in (("5", "2 to 4 seeds"), ("1 2 3 4 5", "2 to 4 seeds"), ("3, 3", "given twice")):
        fields = [FAST[name] if name != "seed" else seeds for name in CONTROL_FIELDS]
        with pytest.raises(gr.Error, match=message):
            studio.compare(*fields, RunSlot())
    assert len(studio.draw_seeds(3).split(", ")) == 3
    fields = [FAST[name] if name != "seed" else "" for name in CONTROL_FIELDS]
    seeds, *_ = studio.begin_compare(*fields, 2, RunSlot())
    assert len(parse_seeds(seeds)) == 2


# --- cleanup -------------------------------------------------------------------------------------------


def test_old_runs_are_cleaned_up_and_nothing_else(tmp_path):
    out = tmp_path / "outputs"
    old, fresh = out / "20200101-000000-0badc0de", out / "20200101-000001-00c0ffee"
    keep_mine = out / "my-notes"
    for folder in (old, fresh, keep_mine):
        folder.mkdir(parents=True)
        (folder / "ling-1.mp4").write_bytes(b"x")
    two_days_ago = time.time() - 48 * 3600
    os.utime(old, (two_days_ago, two_days_ago))
    os.utime(keep_mine, (two_days_ago, two_days_ago))
    assert clean_old_runs(out, keep_hours=24) == [old]
    assert not old.exists() and fresh.exists() and keep_mine.exists()
    assert clean_old_runs(tmp_path / "missing", 1) == []


def test_each_run_cleans_up_old_runs_first(studio):
    old = studio.settings.output_dir / "20200101-000000-0badc0de"
    old.mkdir(parents=True)
    os.utime(old, (0, 0))
    studio.generate(*controls(), RunSlot())
    assert not old.exists() and len(run_folders(studio)) == 1
