"""The analyzer reads rendered clips back into the words of the world (eval/analyzer.py)."""

import dataclasses

import numpy as np
import pytest

from eval import analyzer
from eval.analyzer_accuracy import write_h264
from pipeline import presets
from training import world
from training.world import ObjectSpec, Scene

# Every shape, motion, size and background at least once, and a fade and a colour change.
SCENES = {
    "16:9": Scene(
        (
            ObjectSpec("red", "circle", "medium", "right", start=(0.1, 0.5)),
            ObjectSpec("white", "star", "large", "spinning", start=(0.9, 0.2)),
        ),
        "navy",
    ),
    "9:16": Scene(
        (
            ObjectSpec("yellow", "square", "small", "bouncing", start=(0.3, 0.0)),
            ObjectSpec("blue", "triangle", "large", "still", start=(0.8, 0.9)),
        ),
        "sky",
        "navy",
    ),
    "1:1": Scene((ObjectSpec("green", "star", "medium", "circle", start=(0.5, 0.5), phase=1.0),), "gray"),
    "4:3": Scene(
        (
            ObjectSpec("pink", "triangle", "medium", "growing", start=(0.15, 0.3)),
            ObjectSpec("orange", "circle", "large", "up", "quickly", start=(0.5, 0.9)),
            ObjectSpec("purple", "square", "small", "shrinking", start=(0.9, 0.2), colour_to="white"),
        ),
        "sunset",
    ),
    "21:9": Scene(
        (
            ObjectSpec("orange", "square", "large", "down", start=(0.2, 0.0)),
            ObjectSpec("blue", "circle", "small", "left", "slowly", start=(0.9, 0.6)),
        ),
        "black",
    ),
}


def _render(aspect: str, fps: int = 15) -> np.ndarray:
    height, width = presets.resolution(aspect, "fast")
    return world.render(SCENES[aspect], height, width, presets.num_frames(2.0, fps), fps).frames


def _assert_reads(analysis: analyzer.Analysis, scene: Scene) -> None:
    result = analyzer.match(analysis, scene)
    assert result["count"], analysis.objects
    assert result["background"] and result["background_to"], (analysis.background, analysis.background_to)
    for obj, agree in zip(scene.objects, result["objects"]):
        assert all(agree.values()), (obj, agree, analysis.objects)


@pytest.mark.parametrize("aspect", list(SCENES))
def test_reads_rendered_frames(aspect):
    _assert_reads(analyzer.analyze(_render(aspect), fps=15), SCENES[aspect])


@pytest.mark.parametrize("aspect", ["9:16", "4:3", "21:9"])
def test_reads_an_h264_round_trip(aspect, tmp_path):
    path = tmp_path / "clip.mp4"
    write_h264(_render(aspect, fps=12), path, fps=12)
    analysis = analyzer.analyze(path)
    assert analysis.fps == 12 and (analysis.height, analysis.width) == presets.resolution(aspect, "fast")
    _assert_reads(analysis, SCENES[aspect])


def test_trajectories_follow_the_ground_truth():
    height, width = presets.resolution("16:9", "fast")
    clip = world.render(SCENES["16:9"], height, width, 30, 15)
    analysis = analyzer.analyze(clip.frames, fps=15)
    for i, obj in enumerate(SCENES["16:9"].objects):
        found = next(o for o in analysis.objects if o.colour == obj.colour)
        np.testing.assert_allclose(found.trajectory, clip.centres[:, i], atol=0.3)  # pixels
        area = world.shape_area(obj.shape, 1.0) * clip.sizes[:, i] ** 2
        np.testing.assert_allclose(found.areas, area, rtol=0.05)


def test_match_reports_what_disagrees():
    scene = SCENES["16:9"]
    analysis = analyzer.analyze(_render("16:9"), fps=15)
    wrong = dataclasses.replace(analysis.objects[0], shape="triangle", motion="still")
    result = analyzer.match(dataclasses.replace(analysis, objects=[wrong, analysis.objects[1]]), scene)
    pairs = dict(zip([o.colour for o in scene.objects], result["objects"]))
    assert pairs[wrong.colour] == {"colour": True, "shape": False, "size": True, "motion": False, "colour_to": True}
    missing = analyzer.match(dataclasses.replace(analysis, objects=analysis.objects[:1]), scene)
    assert not missing["count"] and sum(all(o.values()) for o in missing["objects"]) == 1
    assert sorted(missing["partners"], key=str) == [0, None]  # the object left has no partner


def test_rejects_what_is_not_video():
    with pytest.raises(ValueError, match="uint8"):
        analyzer.analyze(np.zeros((4, 64, 64, 3), np.float32))
