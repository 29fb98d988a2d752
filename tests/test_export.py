"""pipeline/export.py: MP4s that decode back, recipes that read back, and no half-written files."""

import subprocess

import imageio_ffmpeg
import numpy as np
import pytest

from pipeline.export import VideoWriter, _to_uint8, read_recipe, read_video, write_video
from pipeline.recipe import Recipe


def make_frames(num_frames: int, height: int, width: int) -> np.ndarray:
    """A white square moving over a colour gradient: smooth, so H.264 keeps it close."""
    y, x = np.mgrid[0:height, 0:width]
    frames = np.zeros((num_frames, height, width, 3), np.uint8)
    frames[..., 0] = 255 * x // width  # (H, W) broadcast over T
    frames[..., 2] = 255 * y // height
    for t in range(num_frames):
        frames[t, 16:32, 2 * t : 2 * t + 16] = 255
    return frames


def make_recipe(aspect: str = "16:9") -> Recipe:
    # '=', ';', '#', '\' and a newline are what ffmpeg's metadata format escapes; 红 checks UTF-8.
    return Recipe(prompt="a red ball = 1; #2 \\ 红\nbouncing", aspect=aspect, seed=1234, fps=15, steps=7)


@pytest.mark.parametrize("aspect, height, width", [("16:9", 64, 112), ("9:16", 112, 64)])
def test_round_trip_frames_size_fps_and_recipe(tmp_path, aspect, height, width):
    recipe = make_recipe(aspect)
    assert (recipe.height, recipe.width) == (height, width)
    frames = make_frames(8, height, width)

    path = write_video(tmp_path / "video.mp4", frames, recipe.fps, recipe)

    assert path == tmp_path / "video.mp4"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["video.json", "video.mp4"]  # no .partial left
    decoded, fps = read_video(path)
    assert decoded.shape == (8, height, width, 3) and decoded.dtype == np.uint8
    assert fps == 15
    assert np.abs(decoded.astype(int) - frames).mean() < 3  # crf 18 on smooth content, BT.709 both ways
    assert read_recipe(path) == recipe
    assert read_recipe(tmp_path / "video.json") == recipe
    data = path.read_bytes()
    assert data.index(b"moov") < data.index(b"mdat")  # faststart: a browser can play while downloading
    info = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(path)], capture_output=True, text=True).stderr
    assert "Video: h264" in info and "yuv420p(tv, bt709" in info  # what browsers decode, with its colour matrix named


def test_chunks_equal_one_write(tmp_path):
    frames = make_frames(8, 64, 112)
    write_video(tmp_path / "whole.mp4", frames, 15)

    with VideoWriter(tmp_path / "chunks.mp4", fps=15) as writer:
        writer.write(frames[:3])
        writer.write(frames[3:4].astype(np.float32) / 255)  # floats in [0, 1] give the same pixels
        writer.write(frames[4:4])  # an empty chunk is allowed
        writer.write(frames[4:])
    assert writer.num_frames == 8

    whole, _ = read_video(tmp_path / "whole.mp4")
    chunks, _ = read_video(tmp_path / "chunks.mp4")
    assert chunks.shape == whole.shape == (8, 64, 112, 3)
    np.testing.assert_array_equal(chunks, whole)  # x264 is deterministic for the same input
    assert not (tmp_path / "chunks.json").exists()  # no recipe, no sidecar


def test_float_frames_are_rounded_and_clipped():
    floats = np.array([-0.5, 0.0, 0.3, 0.5, 0.999, 1.0, 1.7], np.float32)
    frames = np.broadcast_to(floats[:, None, None, None], (7, 2, 2, 3))
    assert _to_uint8(frames)[:, 0, 0, 0].tolist() == [0, 0, 76, 128, 255, 255, 255]


def test_exception_inside_with_leaves_nothing(tmp_path):
    with pytest.raises(KeyError):
        with VideoWriter(tmp_path / "video.mp4", fps=15, recipe=make_recipe()) as writer:
            writer.write(make_frames(4, 64, 112))
            raise KeyError("the user pressed stop")
    assert list(tmp_path.iterdir()) == []


def test_abort_and_empty_close_leave_nothing(tmp_path):
    writer = VideoWriter(tmp_path / "video.mp4", fps=15)
    writer.write(make_frames(4, 64, 112))
    writer.abort()
    writer.abort()  # twice is fine
    with pytest.raises(ValueError, match="no frames were written"):
        VideoWriter(tmp_path / "empty.mp4", fps=15).close()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "shape, message",
    [((2, 63, 64, 3), "even"), ((2, 64, 63, 3), "even"), ((64, 64, 3), "shape"), ((2, 64, 64, 4), "shape")],
)
def test_bad_frames_are_rejected(tmp_path, shape, message):
    with pytest.raises(ValueError, match=message):
        with VideoWriter(tmp_path / "video.mp4", fps=15) as writer:
            writer.write(np.zeros(shape, np.uint8))
    assert list(tmp_path.iterdir()) == []


def test_bad_arguments_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="dtype int64"):
        VideoWriter(tmp_path / "video.mp4", fps=15).write(np.zeros((1, 64, 64, 3), np.int64))
    with pytest.raises(ValueError, match="NaN"):
        VideoWriter(tmp_path / "video.mp4", fps=15).write(np.full((1, 64, 64, 3), np.nan))
    with pytest.raises(ValueError, match="fps"):
        VideoWriter(tmp_path / "video.mp4", fps=0)
    with pytest.raises(ValueError, match=r"\.mp4"):
        VideoWriter(tmp_path / "video.avi", fps=15)
    with pytest.raises(ValueError, match="seed"):
        VideoWriter(tmp_path / "video.mp4", fps=15, recipe=Recipe(prompt="a ball", seed=-1))
    with VideoWriter(tmp_path / "video.mp4", fps=15) as writer:
        writer.write(np.zeros((1, 64, 64, 3), np.uint8))
        with pytest.raises(ValueError, match="frame size"):
            writer.write(np.zeros((1, 64, 32, 3), np.uint8))


def test_read_recipe_rejects_what_is_not_ours(tmp_path):
    (tmp_path / "noise.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 4096, np.uint8).tobytes())
    write_video(tmp_path / "plain.mp4", make_frames(2, 64, 64), 15)  # a real MP4 without a recipe
    good = write_video(tmp_path / "good.mp4", make_frames(2, 64, 64), 15, make_recipe())
    (tmp_path / "cut.mp4").write_bytes(good.read_bytes()[:100])  # a download that stopped early
    (tmp_path / "other.json").write_text('{"name": "not a recipe"}')
    (tmp_path / "broken.json").write_text('{"prompt": ')

    cases = {
        "noise.mp4": "not a video ffmpeg can read",
        "cut.mp4": "holds no recipe",  # ffmpeg still reads the file-level tags before the index
        "plain.mp4": "holds no recipe",
        "other.json": "no prompt or recipe_version",
        "broken.json": "not valid JSON",
        "missing.mp4": "does not exist",
    }
    for name, reason in cases.items():
        with pytest.raises(ValueError, match=f"{name} is not a Ling Studio video or recipe: .*{reason}"):
            read_recipe(tmp_path / name)
