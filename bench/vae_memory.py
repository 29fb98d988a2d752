"""Peak memory and time of the VAE's streaming decode against a whole decode, by video length.

The claim under test (vae.py): a streaming decode keeps memory at one chunk's, however long the
video. The bar: decoding 16x more latent frames (128 vs 8) raises streaming peak memory by < 25%.

Each measurement runs in a fresh subprocess, because a process's peak RSS only ever goes up: in one
process, the second measurement would inherit the first one's peak. A child builds the VAE, warms
it up on one latent frame, takes its RSS as the baseline, resets the kernel's high-water mark where
Linux allows (/proc/self/clear_refs), decodes, and reports peak RSS minus the baseline (and
torch.cuda.max_memory_allocated growth on a GPU). The streaming decode consumes chunks as the
exporter does: each chunk becomes uint8 frames and is dropped before the next is decoded.

glibc's malloc moves its mmap threshold up as large blocks are freed, after which freed tensors stay
in the heap: the same decode then peaks anywhere from 60 to 140 MB above the baseline, run to run.
The children therefore pin the threshold (MALLOC_MMAP_THRESHOLD_=65536) so that freed tensors go
back to the OS and RSS tracks live memory; --default-malloc measures with glibc's defaults instead.

    python -m bench.vae_memory [--model assets/model] [--threads 1] [--chunk 2] [--default-malloc]
"""

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

LATENT_FRAMES = (8, 32, 128)
WHOLE_LATENT_FRAMES = (8, 32)  # a whole decode of 128 latent frames needs gigabytes: that is the point
STREAMING_BAR = 1.25  # allowed peak ratio, 128 vs 8 latent frames
REPO_ROOT = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------------------------------------
# Memory readings (Linux)
# ------------------------------------------------------------------------------------------------


def _status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def current_rss_mb() -> float:
    return (_status_kb("VmRSS") or 0) / 1024


def peak_rss_mb() -> float:
    hwm = _status_kb("VmHWM")
    if hwm is not None:
        return hwm / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports kB


def reset_peak_rss() -> bool:
    """Set VmHWM back to the current RSS (Linux >= 4.0); False where the kernel does not allow it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return peak_rss_mb() <= current_rss_mb() + 1.0


# ------------------------------------------------------------------------------------------------
# One measurement (the child process)
# ------------------------------------------------------------------------------------------------


def measure(args) -> dict:
    import numpy as np
    import torch

    from pipeline import presets
    from pipeline.vae import CausalVideoVAE

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    vae_dir = Path(args.model) / "vae" if args.model else None
    vae = CausalVideoVAE.from_pretrained(vae_dir) if vae_dir and vae_dir.is_dir() else CausalVideoVAE()
    vae = vae.to(device).eval()

    height, width = presets.resolution("16:9", "fast")
    scale = vae.spatial_compression_ratio
    latents = torch.randn(1, vae.config.latent_channels, args.latent_frames, height // scale, width // scale).to(device)
    chunk = args.chunk if args.mode == "stream" else args.latent_frames

    def decode(z: torch.Tensor) -> int:
        frames = 0
        with torch.no_grad():
            for pixels in vae.iter_decode(z, chunk):  # (1, 3, t, H, W) in [-1, 1]
                video = ((pixels[0].float() + 1) / 2).permute(1, 2, 3, 0).cpu().numpy()  # (t, H, W, 3)
                frames += len(np.clip(np.rint(video * 255.0), 0, 255).astype(np.uint8))  # as export does; then dropped
        return frames

    decode(latents[:, :, :1])  # warm-up: kernel caches and thread pools are not the decode's memory
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        cuda_baseline = torch.cuda.memory_allocated()
    baseline = current_rss_mb()
    peak_was_reset = reset_peak_rss()

    start = time.perf_counter()
    video_frames = decode(latents)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start

    result = {
        "latent_frames": args.latent_frames,
        "video_frames": video_frames,
        "mode": f"stream (chunk {chunk})" if args.mode == "stream" else "whole",
        "seconds": seconds,
        "peak_mb": max(0.0, peak_rss_mb() - baseline),
        "peak_was_reset": peak_was_reset,
        "threads": torch.get_num_threads(),
        "device": str(device),
    }
    if device.type == "cuda":
        result["cuda_peak_mb"] = (torch.cuda.max_memory_allocated() - cuda_baseline) / 2**20
    return result


# ------------------------------------------------------------------------------------------------
# The table (the parent process)
# ------------------------------------------------------------------------------------------------


def run_child(args, latent_frames: int, mode: str) -> dict:
    command = [sys.executable, "-m", "bench.vae_memory", "--child", "--latent-frames", str(latent_frames), "--mode", mode, "--chunk", str(args.chunk)]
    if args.model:
        command += ["--model", str(Path(args.model).resolve())]
    if args.threads:
        command += ["--threads", str(args.threads)]
    env = dict(os.environ)
    if not args.default_malloc:
        env["MALLOC_MMAP_THRESHOLD_"] = "65536"  # see the module docstring
    completed = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    if completed.returncode != 0:
        raise RuntimeError(f"measurement {latent_frames} latent frames, {mode} failed:\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main(args):
    vae_dir = Path(args.model) / "vae" if args.model else None
    source = f"{vae_dir}" if vae_dir and vae_dir.is_dir() else "default CausalVideoVAE config, random weights"
    runs = [(n, "stream") for n in LATENT_FRAMES] + [(n, "whole") for n in WHOLE_LATENT_FRAMES]
    results = []
    for latent_frames, mode in runs:
        results.append(run_child(args, latent_frames, mode))
        print(f"  measured {latent_frames} latent frames, {mode}", file=sys.stderr, flush=True)

    first = results[0]
    print(f"VAE: {source}; device {first['device']}, {first['threads']} threads; 16:9 fast bucket")
    malloc = "glibc defaults" if args.default_malloc else "MALLOC_MMAP_THRESHOLD_=65536"
    print(f"peak = peak RSS growth over the RSS after model load and warm-up, one fresh process each (high-water mark reset: {first['peak_was_reset']}; malloc: {malloc})\n")
    cuda = "cuda_peak_mb" in first
    print("| latent frames | video frames | mode | seconds | peak MB |" + (" CUDA peak MB |" if cuda else ""))
    print("|---:|---:|---|---:|---:|" + ("---:|" if cuda else ""))
    for r in results:
        row = f"| {r['latent_frames']} | {r['video_frames']} | {r['mode']} | {r['seconds']:.2f} | {r['peak_mb']:.1f} |"
        print(row + (f" {r['cuda_peak_mb']:.1f} |" if cuda else ""))

    streaming = {r["latent_frames"]: r for r in results if r["mode"] != "whole"}
    for key in ("peak_mb", "cuda_peak_mb") if cuda else ("peak_mb",):
        ratio = streaming[LATENT_FRAMES[-1]][key] / max(streaming[LATENT_FRAMES[0]][key], 1e-9)
        verdict = "meets" if ratio < STREAMING_BAR else "misses"
        print(f"\nstreaming {key}: {LATENT_FRAMES[-1]} vs {LATENT_FRAMES[0]} latent frames = {ratio:.2f}x ({verdict} the bar of < {STREAMING_BAR:.2f}x)")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="a model folder; its vae/ is used if present, else the default config")
    parser.add_argument("--chunk", type=int, default=2, help="latent frames per streaming chunk (the pipeline's iter_decode default)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--default-malloc", action="store_true", help="leave glibc's sliding mmap threshold on (noisier peaks)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--latent-frames", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=("stream", "whole"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = parse_args()
    if arguments.child:
        if arguments.threads:
            os.environ["OMP_NUM_THREADS"] = str(arguments.threads)  # before torch starts its thread pool
        print(json.dumps(measure(arguments)))
    else:
        main(arguments)
