"""Frames -> H.264 MP4 that plays in browsers, with the recipe written into it and beside it.

Why the file is streamed: the VAE decodes a few latent frames at a time so that memory does not grow
with the length of the video; `VideoWriter.write` pipes each decoded chunk straight into ffmpeg's
stdin, so the whole video never sits in memory here either, and encoding overlaps decoding.

Why a temporary name and a rename: a video is written to `.name.mp4.<random>.partial` in the same
folder and renamed to `name.mp4` only when ffmpeg has finished cleanly. `os.replace` within one folder
is atomic, so whoever watches the folder (the UI's history, a browser fetching the file) sees either
no file or a whole, playable one; never half an MP4 whose index (`moov`, moved to the front by
`+faststart` only at the very end) is missing. A crash, an exception inside the `with` block or
`abort()` (the user pressed Stop) removes the partial file and leaves nothing behind. The recipe's
`.json` beside the video is written the same way.

The recipe travels inside the MP4 as its `comment` tag (the mp4 muxer's native `©cmt` atom, which
ffmpeg keeps when it copies streams) and as `name.json`, which a person can read and edit.
`read_recipe` takes either file back to a `Recipe`.

Colours: RGB is converted with the BT.709 matrix and the stream is tagged BT.709, the matrix browsers
assume for web video; ffmpeg reads the tags back, so `read_video` returns the colours that went in.
"""

import os
import secrets
import subprocess
import tempfile
from pathlib import Path

import imageio_ffmpeg
import numpy as np

from .recipe import Recipe

CRF = 18  # x264 constant quality: 18 is visually lossless; our small synthetic videos take ~1 kB a second
PRESET = "medium"  # x264 speed/size trade-off; at our sizes even "medium" encodes hundreds of frames a second
RECIPE_TAG = "comment"  # the MP4 metadata tag that holds the recipe's JSON
FFMPEG_TIMEOUT_S = 60  # for ffmpeg to finish a file or read its tags; it takes well under a second here

# Convert with the BT.709 matrix into limited range, then tag the frames with it (setparams: ffmpeg 9
# takes the stream's colour tags from the frames, not from -colorspace and friends), so that browsers
# and ffmpeg decode with the matrix the encoder used.
_COLOR_FILTER = "scale=out_color_matrix=bt709:out_range=tv,setparams=colorspace=bt709:color_primaries=bt709:color_trc=bt709:range=tv"


# --- helpers ---------------------------------------------------------------------------------------


def _temp_path(path: Path) -> Path:
    """A hidden name in the same folder (so the rename stays atomic), unique per writer."""
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}.partial")


def _write_text_atomic(path: Path, text: str) -> None:
    temp = _temp_path(path)
    try:
        temp.write_text(text, encoding="utf-8")
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def _to_uint8(frames) -> np.ndarray:
    """(T, H, W, 3) uint8, or float in [0, 1] -> C-contiguous (T, H, W, 3) uint8."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be an array of shape (T, H, W, 3); got shape {frames.shape}")
    if frames.dtype == np.uint8:
        return np.ascontiguousarray(frames)
    if not np.issubdtype(frames.dtype, np.floating):
        raise ValueError(f"frames must be uint8 or float in [0, 1]; got dtype {frames.dtype}")
    if not np.isfinite(frames).all():
        raise ValueError("frames contain NaN or infinity; the model produced invalid pixels")
    # The pipe takes raw bytes in (T, H, W, 3) order, whatever the layout of the array given.
    return np.ascontiguousarray(np.clip(np.rint(frames * 255.0), 0, 255).astype(np.uint8))


def _not_ours(path: Path, reason: str) -> ValueError:
    return ValueError(f"{path.name} is not a Ling Studio video or recipe: {reason}")


def _parse_ffmetadata(text: str) -> dict[str, str]:
    """Global tags from ffmpeg's ffmetadata output.

    Lines are `key=value`; inside keys and values ffmpeg escapes '=', ';', '#', '\\' and newlines
    with a backslash. Stream and chapter sections (`[STREAM]`, ...) follow the global tags.
    """
    tags = {}
    parts = [""]  # the key, then the value, of the line being read
    escaped = False
    for char in text + "\n":
        if escaped:
            parts[-1] += char
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == "=" and len(parts) == 1:
            parts.append("")
        elif char == "\n":
            if len(parts) == 1 and parts[0].startswith("["):
                break
            if len(parts) == 2 and not parts[0].startswith((";", "#")):
                tags[parts[0]] = parts[1]
            parts = [""]
        else:
            parts[-1] += char
    return tags


# --- writer ----------------------------------------------------------------------------------------


class VideoWriter:
    """Stream frames into `path` (an H.264 yuv420p MP4) and, if a recipe is given, `path` with `.json`.

        with VideoWriter("outputs/run-1/video.mp4", fps=15, recipe=recipe) as writer:
            for chunk in decoded_chunks:  # (T, H, W, 3) uint8, or float in [0, 1]
                writer.write(chunk)

    ffmpeg starts at the first `write`, which fixes the frame size. The files appear when the `with`
    block ends cleanly (or on `close()`); an exception in the block or `abort()` leaves nothing.
    """

    def __init__(self, path: str | os.PathLike, fps: float, recipe: Recipe | None = None, *, crf: int = CRF, preset: str = PRESET):
        self.path = Path(path).absolute()  # absolute: a name like "-" or "http:x" is never an ffmpeg URL
        if self.path.suffix.lower() != ".mp4":
            raise ValueError(f"path must end in .mp4; got {str(path)!r}")
        if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not 0 < fps <= 240:
            raise ValueError(f"fps must be a number above 0 and at most 240; got {fps!r}")
        if recipe is not None:
            recipe.validate()  # now, not when someone fails to load it back from the finished video
        self.fps = fps
        self.recipe = recipe
        self.crf = crf
        self.preset = preset
        self.num_frames = 0  # frames written so far
        self.size: tuple[int, int] | None = None  # (height, width), fixed by the first chunk
        self._temp = _temp_path(self.path)
        self._proc: subprocess.Popen | None = None
        self._log = None  # ffmpeg's stderr, read only to explain a failure
        self._finished = False

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def _start(self, height: int, width: int) -> None:
        if height % 2 or width % 2:
            raise ValueError(f"frame size must be even in both dimensions for H.264 yuv420p; got {height}x{width} (height x width)")
        command = [
            imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-hide_banner", "-nostdin", "-loglevel", "error",
            # input: raw RGB frames on stdin
            "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-framerate", str(self.fps), "-i", "-",
            # output: H.264 in yuv420p (what browsers decode), index at the front (plays while downloading)
            "-an", "-c:v", "libx264", "-preset", self.preset, "-crf", str(self.crf), "-vf", _COLOR_FILTER,
            "-pix_fmt", "yuv420p", "-movflags", "+faststart",
        ]
        if self.recipe is not None:
            command += ["-metadata", f"{RECIPE_TAG}={self.recipe.to_json()}"]
        command += ["-f", "mp4", str(self._temp)]  # -f: the .partial name says nothing about the format
        self._log = tempfile.TemporaryFile()
        self._proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._log)
        self.size = (height, width)

    def _ffmpeg_error(self) -> RuntimeError:
        self._log.seek(0)
        log = self._log.read().decode("utf-8", errors="replace").strip()
        return RuntimeError(f"ffmpeg could not encode {self.path.name}: {log[-2000:] or 'it stopped without a message'}")

    def write(self, frames) -> None:
        """Encode a chunk of frames: (T, H, W, 3) uint8, or float in [0, 1] (rounded and clipped)."""
        if self._finished:
            raise ValueError(f"the writer for {self.path.name} is already closed")
        frames = _to_uint8(frames)
        num_frames, height, width, _ = frames.shape
        if self._proc is None:
            self._start(height, width)
        elif (height, width) != self.size:
            raise ValueError(f"every chunk must have the first chunk's frame size {self.size}; got {(height, width)} (height, width)")
        if num_frames == 0:
            return
        try:
            self._proc.stdin.write(frames.data)
        except BrokenPipeError:
            raise self._ffmpeg_error() from None
        self.num_frames += num_frames

    def close(self) -> Path:
        """Finish the MP4, write the recipe's .json, move both to their final names; return the MP4's path."""
        if self._finished:
            return self.path
        if self.num_frames == 0:
            self.abort()
            raise ValueError(f"no frames were written to {self.path.name}; there is no video to save")
        try:
            try:
                self._proc.stdin.close()
            except BrokenPipeError:
                pass  # ffmpeg already exited; its return code and log say why
            if self._proc.wait(timeout=FFMPEG_TIMEOUT_S) != 0:
                raise self._ffmpeg_error()
            if self.recipe is not None:
                # The .json first: when the MP4 appears, its sidecar is already there.
                _write_text_atomic(self.path.with_suffix(".json"), self.recipe.to_json() + "\n")
            os.replace(self._temp, self.path)
        except BaseException:
            self.abort()
            raise
        self._finished = True
        self._log.close()
        return self.path

    def abort(self) -> None:
        """Stop ffmpeg and remove the partial file; nothing is left behind. Safe to call twice."""
        self._finished = True
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.kill()
            self._proc.wait()
            try:
                self._proc.stdin.close()
            except BrokenPipeError:
                pass  # the pipe's buffer cannot be flushed into a killed process
        if self._log is not None:
            self._log.close()
        self._temp.unlink(missing_ok=True)


def write_video(path: str | os.PathLike, frames, fps: float, recipe: Recipe | None = None) -> Path:
    """Write a whole (T, H, W, 3) array at once; see `VideoWriter`. Returns the MP4's path."""
    with VideoWriter(path, fps, recipe) as writer:
        writer.write(frames)
    return writer.path


# --- readers ---------------------------------------------------------------------------------------


def read_video(path: str | os.PathLike) -> tuple[np.ndarray, float]:
    """Decode a video into ((T, H, W, 3) uint8 frames, fps). For tests and evaluation: it holds every frame."""
    reader = imageio_ffmpeg.read_frames(str(Path(path).absolute()))
    try:
        meta = next(reader)
        width, height = meta["size"]
        frames = [np.frombuffer(frame, np.uint8).reshape(height, width, 3) for frame in reader]
    finally:
        reader.close()  # stops ffmpeg if decoding failed halfway
    return np.stack(frames) if frames else np.zeros((0, height, width, 3), np.uint8), float(meta["fps"])


def read_recipe(path: str | os.PathLike) -> Recipe:
    """The recipe of a Ling Studio video (.mp4, from its metadata) or recipe file (.json).

    Raises ValueError saying "<name> is not a Ling Studio video or recipe: <why>" for a missing,
    corrupt or foreign file.
    """
    path = Path(path).absolute()
    if not path.is_file():
        raise _not_ours(path, "the file does not exist")
    if path.suffix.lower() == ".json":
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise _not_ours(path, "it is not a text file") from None
    else:
        text = _read_recipe_tag(path)
    try:
        return Recipe.from_json(text)
    except ValueError as error:
        raise _not_ours(path, str(error)) from None


def _read_recipe_tag(path: Path) -> str:
    """The recipe's JSON from a video's metadata, read with the bundled ffmpeg (no ffprobe there)."""
    command = [imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-v", "error", "-i", str(path), "-f", "ffmetadata", "-"]
    try:
        result = subprocess.run(command, capture_output=True, timeout=FFMPEG_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise _not_ours(path, "ffmpeg took too long to read it") from None
    if result.returncode != 0:
        lines = result.stderr.decode("utf-8", errors="replace").strip().splitlines()
        raise _not_ours(path, f"it is not a video ffmpeg can read ({lines[-1] if lines else 'no message'})")
    tags = _parse_ffmetadata(result.stdout.decode("utf-8", errors="replace"))
    if RECIPE_TAG not in tags:
        raise _not_ours(path, "it holds no recipe (it was not made by Ling Studio, or it is damaged)")
    return tags[RECIPE_TAG]
