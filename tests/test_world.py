"""The procedural world: sampling, physics, rendering and captions (training/world.py)."""

import numpy as np
import pytest

from pipeline import presets
from pipeline.recipe import prompt_words
from training import world
from training.world import ObjectSpec, Scene


def _scenes(seed: int, count: int, **kwargs) -> list[Scene]:
    rng = np.random.default_rng(seed)
    return [world.sample_scene(rng, **kwargs) for _ in range(count)]


# --- sampling ------------------------------------------------------------------------------------


def test_same_seed_same_clip():
    first = world.sample_clip(7, "16:9", duration=1.0)
    second = world.sample_clip(7, "16:9", duration=1.0)
    assert first[0] == second[0] and first[1] == second[1]
    np.testing.assert_array_equal(first[2].frames, second[2].frames)
    assert world.sample_clip(8, "16:9", duration=1.0)[0] != first[0]


def test_training_scenes_never_hold_out_combinations():
    scenes = _scenes(0, 2000)
    assert not any(world.is_held_out(obj) for scene in scenes for obj in scene.objects)
    # ...while every attribute still shows up, and each object count
    objects = [obj for scene in scenes for obj in scene.objects]
    assert {obj.colour for obj in objects} == set(world.COLOURS)
    assert {obj.shape for obj in objects} == set(world.SHAPES)
    assert {obj.motion for obj in objects} == set(world.MOTIONS)
    assert {len(scene.objects) for scene in scenes} == {1, 2, 3}
    assert any(scene.background_to for scene in scenes) and any(obj.colour_to for obj in objects)


def test_held_out_scenes_always_hold_one_and_cover_every_rule():
    scenes = _scenes(1, 300, held_out=True)
    assert all(any(world.is_held_out(obj) for obj in scene.objects) for scene in scenes)
    held = [obj for scene in scenes for obj in scene.objects if world.is_held_out(obj)]
    assert any(obj.colour == "purple" and obj.shape == "star" for obj in held)
    assert any(obj.colour == "yellow" and obj.shape == "triangle" for obj in held)
    assert any(obj.shape == "square" and obj.motion == "circle" for obj in held)
    assert any(obj.shape == "triangle" and obj.motion == "bouncing" for obj in held)
    assert any(obj.colour == "green" and obj.motion == "shrinking" for obj in held)


@pytest.mark.parametrize(
    "obj, held",
    [
        (ObjectSpec("purple", "star"), True),
        (ObjectSpec("red", "star", colour_to="purple"), True),  # turning purple counts too
        (ObjectSpec("yellow", "triangle", motion="left"), True),
        (ObjectSpec("red", "square", motion="circle"), True),
        (ObjectSpec("red", "triangle", motion="bouncing"), True),
        (ObjectSpec("green", "circle", motion="shrinking"), True),
        (ObjectSpec("purple", "square"), False),
        (ObjectSpec("yellow", "star"), False),
        (ObjectSpec("green", "circle", motion="growing"), False),
        (ObjectSpec("red", "square", motion="bouncing"), False),
    ],
)
def test_is_held_out(obj, held):
    assert world.is_held_out(obj) is held


def test_invalid_specs_say_which_field():
    with pytest.raises(ValueError, match="colour"):
        ObjectSpec("teal", "circle")
    with pytest.raises(ValueError, match="spinning"):
        ObjectSpec("red", "circle", motion="spinning")
    with pytest.raises(ValueError, match="objects"):
        Scene(())
    with pytest.raises(ValueError, match="num_objects"):
        world.sample_scene(np.random.default_rng(0), num_objects=4)


# --- physics -------------------------------------------------------------------------------------


def test_objects_stay_inside_the_frame():
    # Long clips at a low frame rate: many reflections, bounces and collisions, little work.
    for aspect_name in presets.ASPECT_RATIOS:
        height, width = presets.resolution(aspect_name, "fast")
        for scene in _scenes(2, 25, num_objects=3):
            traj = world.simulate(scene, width / height, num_frames=48, fps=8)
            for i, obj in enumerate(scene.objects):
                for t in range(48):
                    left, right, top, bottom = world.extents(obj.shape, traj.size[t, i], traj.angle[t, i])
                    assert traj.x[t, i] + left >= -1e-6 and traj.x[t, i] + right <= width / height + 1e-6
                    assert traj.y[t, i] + top >= -1e-6 and traj.y[t, i] + bottom <= 1 + 1e-6


def test_bouncing_falls_faster_and_faster_then_rebounds_lower():
    ball = ObjectSpec("red", "circle", "medium", "bouncing", start=(0.5, 0.0))
    fps = 30
    y = world.simulate(Scene((ball,)), 1.0, num_frames=90, fps=fps).y[:, 0]
    bottom = int(np.argmax(y))
    falling = np.diff(y[:bottom])
    assert np.all(np.diff(falling) > 0)  # accelerates downward
    np.testing.assert_allclose(np.diff(y[:10], 2) * fps**2, world.GRAVITY, rtol=0.05)
    assert y[bottom + 3] < y[bottom]  # on its way up again
    assert y[bottom:].min() > y[0] + 0.05  # keeps only 85% of its speed: does not reach its start


def test_movers_keep_their_speed_and_reflect():
    mover = ObjectSpec("blue", "square", "small", "right", "quickly", start=(0.0, 0.5))
    fps = 15
    x = world.simulate(Scene((mover,)), 16 / 9, num_frames=60, fps=fps).x[:, 0]
    np.testing.assert_allclose(np.diff(x[:10]) * fps, world.SPEEDS["quickly"], rtol=1e-6)
    assert x.argmax() < 59 and x[-1] < x.max()  # reached the right edge and came back


def test_growing_spinning_and_circling_follow_their_rules():
    scene = Scene(
        (
            ObjectSpec("red", "square", "small", "growing", start=(0.1, 0.1)),
            ObjectSpec("blue", "star", "small", "spinning", start=(0.9, 0.1)),
            ObjectSpec("white", "circle", "small", "circle", start=(0.5, 0.9)),
        )
    )
    fps = 10
    traj = world.simulate(scene, 2.0, num_frames=41, fps=fps)
    np.testing.assert_allclose(traj.size[10, 0] / traj.size[0, 0], world.GROWTH_PER_SECOND)
    np.testing.assert_allclose(traj.size[40, 0] / traj.size[0, 0], world.MAX_GROWTH)  # capped
    np.testing.assert_allclose(traj.angle[10, 1], world.SPIN_RATE)  # half a turn per second
    x, y = traj.x[:30, 2], traj.y[:30, 2]  # one turn takes 3 s
    np.testing.assert_allclose(np.hypot(x - x.mean(), y - y.mean()), world.ORBIT_RADIUS, rtol=1e-6)
    np.testing.assert_allclose(traj.x[30, 2], traj.x[0, 2], atol=1e-9)


# --- rendering -----------------------------------------------------------------------------------


@pytest.mark.parametrize("aspect", list(presets.ASPECT_RATIOS))
def test_every_aspect_bucket_renders(aspect):
    scene, _, clip = world.sample_clip(3, aspect, "fast", duration=1.0, fps=12)
    height, width = presets.resolution(aspect, "fast")
    frames = presets.num_frames(1.0, 12)
    assert clip.frames.shape == (frames, height, width, 3) and clip.frames.dtype == np.uint8
    assert clip.object_masks.shape == (frames, height, width) and clip.object_masks.dtype == bool
    n = len(scene.objects)
    assert clip.centres.shape == (frames, n, 2) and clip.sizes.shape == (frames, n)
    assert clip.angles.shape == (frames, n) and clip.colours.shape == (frames, n, 3)


def test_render_draws_the_palette_and_the_gradient():
    scene = Scene((ObjectSpec("pink", "circle", "large", "still", start=(0.5, 0.5)),), "sunset")
    clip = world.render(scene, 64, 112, 2, 15)
    frame = clip.frames[0]
    np.testing.assert_array_equal(frame[0, 0], world.BACKGROUNDS["sunset"][0])  # top row
    np.testing.assert_array_equal(frame[-1, 0], world.BACKGROUNDS["sunset"][1])  # bottom row
    np.testing.assert_array_equal(frame[32, 56], world.COLOURS["pink"])  # the centre of the disc
    np.testing.assert_allclose(clip.centres[0, 0], (56, 32))
    radius = world.SIZES["large"] * 64 / 2
    assert abs(clip.object_masks[0].sum() - np.pi * radius**2) < 2 * np.pi * radius  # the right size
    assert clip.object_masks[0, 32, 56] and not clip.object_masks[0, 2, 2]
    # antialiased: edge pixels are partly covered, so they are neither pink nor background
    partly = clip.object_masks[0] & (frame != world.COLOURS["pink"]).any(-1)
    assert 10 < partly.sum() < 2 * np.pi * radius


def test_fades_and_colour_changes_reach_their_end():
    scene = Scene((ObjectSpec("red", "circle", "large", colour_to="blue"),), "sky", "navy")
    clip = world.render(scene, 64, 64, 9, 8)
    np.testing.assert_array_equal(clip.frames[-1, 0, 0], world.BACKGROUNDS["navy"][0])
    np.testing.assert_array_equal(clip.frames[0, 32, 32], world.COLOURS["red"])
    np.testing.assert_array_equal(clip.frames[-1, 32, 32], world.COLOURS["blue"])


# --- captions ------------------------------------------------------------------------------------


def test_captions_name_every_object():
    rng = np.random.default_rng(4)
    for scene in _scenes(4, 300):
        text = world.caption(scene, rng).lower()
        for obj in scene.objects:
            assert obj.colour in text
            assert any(word in text for word in world.SHAPE_WORDS[obj.shape])
            if obj.colour_to:
                assert obj.colour_to in text
        canonical = world.describe(scene)
        assert canonical == world.describe(scene)
        assert all(f"{obj.colour} {obj.shape}" in canonical for obj in scene.objects)
        assert f"{scene.background} background" in canonical


def test_caption_vocabulary_holds_every_word_the_captions_use():
    vocabulary = world.caption_vocabulary()
    assert vocabulary == sorted(set(vocabulary)) == world.caption_vocabulary()  # sorted, once each, the same every time
    tables = [world.SHAPE_WORDS, world.SIZE_WORDS, world.SPEED_WORDS, world.BACKGROUND_WORDS]
    phrases = [phrase for table in tables for options in table.values() for phrase in options]
    phrases += [phrase for pairs in world.MOTION_WORDS.values() for pair in pairs for phrase in pair]
    phrases += [*world.COLOURS, *world.FADE_NAMES.values(), *world.CANONICAL_MOTIONS.values()]
    words = {word for phrase in phrases for word in phrase.split()}
    assert words <= set(vocabulary)
    rng = np.random.default_rng(6)
    for scene in _scenes(6, 200, held_out=True):  # held-out scenes combine words the captions used
        assert set(prompt_words(world.caption(scene, rng))) <= set(vocabulary)


def test_captions_vary_and_some_are_empty():
    scene = Scene((ObjectSpec("red", "circle", "small", "left", "quickly"),), "sky", "navy")
    rng = np.random.default_rng(5)
    paraphrases = {world.caption(scene, rng) for _ in range(50)}
    assert len(paraphrases) > 20
    assert world.describe(scene) == "a small red circle moving left quickly on a sky background fading to navy"
    empty = sum(world.training_caption(scene, rng) == "" for _ in range(1000))
    assert 60 < empty < 140
