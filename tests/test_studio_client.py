"""The running studio driven as a script drives it: gradio_client against a live server on a tiny
model (saved with save_pretrained, loaded back as app.py loads any model folder)."""

import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from pipeline.export import read_video
from pipeline.generate import load_pipeline
from pipeline.pipeline_t2v import TextToVideoPipeline
from pipeline.recipe import Recipe
from pipeline.transformer import transformer_from_size
from pipeline.vae import CausalVideoVAE
from training import world

REPO = Path(__file__).resolve().parent.parent
FAST = dict(aspect="1:1", duration=1.0, quality="fast", steps=3, fps=8)  # 8 frames of 64x64: well under a second


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    transformer = transformer_from_size("tiny")
    # As initialised (adaLN-zero, zeroed output layer) it predicts exactly zero: every step would
    # leave the noise as it is and the live preview would never change. Nudge the zeros.
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in transformer.parameters():
            if not parameter.any():
                parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    vae = CausalVideoVAE(block_out_channels=(8, 16, 16), layers_per_block=1)
    pipe = TextToVideoPipeline.from_components(vae, transformer, prompt_vocabulary=world.caption_vocabulary())  # the world's words, as exported
    folder = tmp_path_factory.mktemp("tiny-model")
    pipe.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def studio(tiny_model_dir, tmp_path_factory):
    """The studio in this process, launched as app.py launches it, on a free loopback port."""
    from ui.layout import build_demo, launch_options
    from ui.runs import StudioSettings

    root = tmp_path_factory.mktemp("studio")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("GRADIO_TEMP_DIR", str(root / "gradio-cache"))  # Gradio's copies of served files
        env.setenv("GRADIO_ANALYTICS_ENABLED", "False")
        settings = StudioSettings(output_dir=root / "outputs", keep_hours=24)
        demo = build_demo(load_pipeline(tiny_model_dir), settings)
        demo.queue(default_concurrency_limit=1, max_size=8)
        _, url, _ = demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=free_port(), quiet=True, **launch_options(settings))
        yield url, settings, root
        demo.close()


@pytest.fixture
def client(studio) -> Client:
    url, _, root = studio
    return Client(url, verbose=False, download_files=root / "downloads", analytics_enabled=False)


def test_the_api_names_its_endpoints_and_parameters(client):
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    params = {name: [p["parameter_name"] for p in info["parameters"]] for name, info in endpoints.items()}
    assert params["/generate"] == ["prompt", "negative_prompt", "aspect", "duration", "quality", "seed", "steps", "guidance", "fps"]
    assert params["/compare"] == ["prompt", "negative_prompt", "aspect", "duration", "quality", "seeds", "steps", "guidance", "fps"]
    assert params["/load_recipe"] == ["file"]
    assert not client.view_api(print_info=False, return_format="dict")["unnamed_endpoints"]  # every event has a name


def test_generate_then_load_its_recipe(client, studio):
    _, settings, _ = studio
    video, text = client.predict("a red ball bouncing on a black background", seed="7", api_name="/generate", **FAST)
    recipe = Recipe.from_json(text)
    assert recipe.seed == 7 and recipe.prompt == "a red ball bouncing on a black background" and recipe.steps == 3
    frames, fps = read_video(video)
    assert frames.shape == (8, 64, 64, 3) and fps == 8
    written = list(settings.output_dir.glob("*/ling-7.mp4"))
    assert written and written[0].with_suffix(".json").is_file()  # in a folder of its own on the server
    # Loading the video (or its .json) gives back the recipe that made it.
    assert Recipe.from_json(client.predict(handle_file(video), api_name="/load_recipe")) == recipe
    assert Recipe.from_json(client.predict(handle_file(str(written[0].with_suffix(".json"))), api_name="/load_recipe")) == recipe


def test_generate_keeps_a_63_bit_seed_exact(client):
    seed = 2**63 - 25
    _, text = client.predict("a blue square moving right over a sky background", seed=str(seed), api_name="/generate", **FAST)
    assert Recipe.from_json(text).seed == seed


def test_compare_two_seeds(client):
    videos, texts = client.predict("a red ball bouncing on a black background", seeds=[3, 4], api_name="/compare", **FAST)
    assert [Recipe.from_json(t).seed for t in texts] == [3, 4]
    first, second = (read_video(v)[0] for v in videos)
    assert first.shape == second.shape == (8, 64, 64, 3) and not np.array_equal(first, second)
    # Seeds as text work as well, and a batch video is the same video a single run makes.
    single, _ = client.predict("a red ball bouncing on a black background", seed="4", api_name="/generate", **FAST)
    assert np.array_equal(read_video(single)[0], second)


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(prompt=""), "prompt is empty"),
        (dict(prompt="x" * 501), "at most 500"),
        (dict(duration=30), "duration must be between"),
        (dict(seed="-3"), "seed must be a whole number"),
        (dict(steps=0), "steps must be"),
        (dict(aspect="2:1"), "aspect must be one of"),
    ],
)
def test_bad_input_is_answered_with_its_message(client, changes, message):
    arguments = dict(prompt="a red ball", **FAST, **{"seed": "1"})
    arguments.update(changes)
    with pytest.raises(AppError, match=message):
        client.predict(api_name="/generate", **arguments)


def test_a_file_that_is_not_a_recipe_is_answered_in_words(client, tmp_path):
    notes = tmp_path / "notes.json"
    notes.write_text('{"hello": "world"}')
    with pytest.raises(AppError, match="notes.json is not a Ling Studio video or recipe"):
        client.predict(handle_file(str(notes)), api_name="/load_recipe")
    with pytest.raises(AppError, match="2 to 4 seeds"):
        client.predict("a red ball", seeds="5", api_name="/compare", **FAST)


def test_two_jobs_at_once_each_get_their_own_result(studio):
    url, _, root = studio
    users = [Client(url, verbose=False, download_files=root / f"user{i}", analytics_enabled=False) for i in range(2)]
    prompts = ["a red ball bouncing on a black background", "a small white star spinning against a navy background"]
    jobs = [user.submit(prompt, seed=str(10 + i), api_name="/generate", **FAST) for i, (user, prompt) in enumerate(zip(users, prompts))]
    results = [job.result(timeout=120) for job in jobs]
    recipes = [Recipe.from_json(text) for _, text in results]
    assert [(r.prompt, r.seed) for r in recipes] == [(prompts[0], 10), (prompts[1], 11)]
    assert results[0][0] != results[1][0] and all(read_video(video)[0].shape[0] == 8 for video, _ in results)


# --- app.py itself -------------------------------------------------------------------------------------


def test_app_import_loads_nothing_heavy():
    code = "import sys, app; heavy = [m for m in ('torch', 'gradio', 'diffusers') if m in sys.modules]; print(heavy)"
    output = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert output.stdout.strip() == "[]", output.stderr


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--port", "lots"], "expected a int"),
        (["--auth", "no-colon-here"], "USER:PASS"),
        (["--max-queue", "0"], "--max-queue must be at least 1"),
        (["--model", "/nonexistent"], "no model_index.json"),
    ],
)
def test_bad_studio_flags_answer_in_one_line(flags, message, tmp_path):
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "app.py", *flags, "--output-dir", str(tmp_path / "out")], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert time.perf_counter() - started < 10  # answered before torch is even imported


@pytest.mark.slow
def test_app_py_serves_with_auth_a_queue_limit_and_its_output_folder(tiny_model_dir, tmp_path):
    """The real entry point in a subprocess: auth from a file, the queue turning work away when full,
    runs written under --output-dir, old runs cleaned at startup."""
    auth_file = tmp_path / "users.txt"
    auth_file.write_text("# who may use the studio\nada:lovelace\n\nalan:turing\n")
    out = tmp_path / "out"
    old_run = out / "20200101-000000-0badc0de"
    old_run.mkdir(parents=True)
    os.utime(old_run, (0, 0))
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GRADIO_TEMP_DIR": str(tmp_path / "gradio-cache"), "GRADIO_ANALYTICS_ENABLED": "False"}
    command = [
        sys.executable, "app.py", "--model", str(tiny_model_dir), "--port", str(port), "--auth", str(auth_file),
        "--max-queue", "1", "--output-dir", str(out), "--keep-hours", "1",
    ]  # fmt: skip
    server = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}/"
        deadline = time.time() + 120
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert server.poll() is None and time.time() < deadline, "the studio did not start"
                time.sleep(0.5)
        assert not old_run.exists()  # cleaned at startup

        with pytest.raises(Exception):
            Client(url, verbose=False, auth=("ada", "wrong"), analytics_enabled=False)
        client = Client(url, verbose=False, auth=("alan", "turing"), download_files=tmp_path / "dl", analytics_enabled=False)
        video, text = client.predict("a red ball", seed="5", api_name="/generate", **FAST)
        assert Recipe.from_json(text).seed == 5 and list(out.glob("*/ling-5.mp4"))

        # One run on the model and one waiting fill a queue of 1: the next is turned away.
        slow = dict(FAST, steps=100, duration=10.0)
        jobs = [client.submit("a red ball", seed=str(20 + i), api_name="/generate", **slow) for i in range(4)]
        outcomes = []
        for job in jobs:
            try:
                job.result(timeout=300)
                outcomes.append("done")
            except Exception as error:  # gradio_client's QueueError: "Queue is full! Please try again."
                outcomes.append(str(error))
        assert outcomes.count("done") >= 1
        assert any("Queue is full" in outcome for outcome in outcomes), outcomes
    finally:
        server.terminate()
        server.wait(timeout=30)
