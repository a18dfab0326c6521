"""A studio that can be shared: logins, files it will not serve, bounded uploads, models from its list only.

Each studio here is started on 127.0.0.1 by the test and probed with plain HTTP, as an outsider would.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests
from PIL import Image
from studio_helpers import free_port

from sampling.studio.models import EMOJI_LABEL

USER, PASSWORD = "ann", "correct horse: battery"  # a colon inside the password is allowed


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    """A models directory with one tiny random-weight model."""
    from random_models import save_random_model_folder

    from finetune.model import get_preset

    folder = tmp_path_factory.mktemp("models")
    save_random_model_folder(folder / "tiny-random", get_preset("tiny-base"), seed=0)
    return folder


@pytest.fixture
def broken_models_dir(models_dir, tmp_path) -> Path:
    """The tiny model beside two malformed folders (options not an object; config not even an object)."""
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "tiny-random").symlink_to(models_dir / "tiny-random")
    for name, config in [("bad-options", {"format_version": 1, "options": [1, 2]}), ("bad-config", [1, 2])]:
        (folder / name).mkdir()
        (folder / name / "config.json").write_text(json.dumps(config))
    return folder


def _start(workdir: Path, models_dir: Path, *extra: str, record_hosts: list | None = None):
    """A studio started the way ``python -m sampling studio`` starts it, on a free port of 127.0.0.1."""
    from sampling.studio.cli import add_arguments, serve

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    port = free_port()
    args = parser.parse_args(
        [
            "--workdir",
            str(workdir),
            "--models-dir",
            str(models_dir),
            "--port",
            str(port),
            "--device",
            "cpu",
            "--no-semantic-search",
            *extra,
        ]
    )
    studio, demo = serve(args, block=False)
    return f"http://127.0.0.1:{port}", studio, demo


class HostRecorder:
    """Every host name this process looks up while active, to catch calls home to outside servers."""

    def __init__(self):
        self.hosts: list[str] = []
        self._original = socket.getaddrinfo

    def __enter__(self):
        def recording(host, *args, **kwargs):
            self.hosts.append(host.decode() if isinstance(host, bytes) else str(host))
            return self._original(host, *args, **kwargs)

        socket.getaddrinfo = recording
        return self

    def __exit__(self, *exc):
        socket.getaddrinfo = self._original

    def outside(self) -> list[str]:
        return sorted({h for h in self.hosts if h not in ("127.0.0.1", "localhost", "::1", "None", "")})


@pytest.fixture(scope="module")
def open_studio(models_dir, tmp_path_factory):
    """A studio without a login (allowed on loopback), holding one catalogue item; the hosts it looked up."""
    with HostRecorder() as recorder:
        url, studio, demo = _start(tmp_path_factory.mktemp("open"), models_dir)
        time.sleep(2)  # Gradio's telemetry runs in background threads started by Blocks() and launch()
    source = studio.config.workdir / "outputs" / "strip.png"
    source.parent.mkdir(parents=True)
    Image.new("RGB", (16, 8), "red").save(source)
    studio.save(source, "a red strip")
    try:
        yield url, studio, demo, recorder.outside()
    finally:
        demo.close()


@pytest.fixture(scope="module")
def auth_studio(models_dir, tmp_path_factory):
    auth_file = tmp_path_factory.mktemp("secrets") / "studio-users"
    auth_file.write_text(f"# who may log in\n{USER}:{PASSWORD}\n\nbob:other\n")
    auth_file.chmod(0o600)
    url, studio, demo = _start(tmp_path_factory.mktemp("auth"), models_dir, "--auth-file", str(auth_file))
    source = studio.config.workdir / "outputs" / "strip.png"
    source.parent.mkdir(parents=True)
    Image.new("RGB", (16, 8), "blue").save(source)
    item = studio.save(source, "a blue strip")
    try:
        yield url, studio, studio.catalogue.image_path(item)
    finally:
        demo.close()


def _file_url(url: str, path: Path) -> str:
    return f"{url}/gradio_api/file={path}"


# --- files ------------------------------------------------------------------------------------


def test_catalogue_database_and_work_files_are_not_served(open_studio):
    url, studio, _, _ = open_studio
    config = studio.config
    database = config.workdir / "catalogue.sqlite"
    assert database.is_file()
    run_file = config.runs_dir / "run-1" / "studio-config.yaml"
    run_file.parent.mkdir(parents=True)
    run_file.write_text("data: [/secret/dataset]\n")
    stray = config.workdir / "notes.txt"
    stray.write_text("not for the web")
    side_files = sorted(config.workdir.glob("catalogue.sqlite-*"))  # WAL files, while a connection is open
    climb = f"{config.outputs_dir}/%2E%2E/{database.name}"  # encoded, so the client does not resolve the ..
    for private in (database, *side_files, run_file, stray, config.workdir, climb):
        response = requests.get(_file_url(url, private), timeout=30)
        assert response.status_code == 403, (private, response.status_code)
        assert b"SQLite format" not in response.content
    # what the pages show is still served: a catalogue image
    [(item, image)] = studio.browse()[0]
    response = requests.get(_file_url(url, image), timeout=30)
    assert response.status_code == 200 and response.content == image.read_bytes()


def test_uploads_over_the_size_cap_are_refused(open_studio):
    from sampling.studio.access import MAX_UPLOAD_BYTES

    url = open_studio[0]
    small = requests.post(f"{url}/gradio_api/upload", files={"files": ("small.png", b"x" * 1000)}, timeout=60)
    assert small.status_code == 200
    big = requests.post(
        f"{url}/gradio_api/upload", files={"files": ("big.png", b"x" * (MAX_UPLOAD_BYTES + 1))}, timeout=120
    )
    assert big.status_code == 413 and "maximum allowed size" in big.text


def test_no_telemetry_leaves_the_machine(open_studio):
    assert open_studio[3] == []
    assert os.environ["GRADIO_ANALYTICS_ENABLED"] == "False" and open_studio[2].analytics_enabled is False


# --- logins -----------------------------------------------------------------------------------


def test_login_is_enforced_when_credentials_are_given(auth_studio):
    url, _, image = auth_studio
    assert requests.get(f"{url}/config", timeout=30).status_code == 401
    assert requests.get(_file_url(url, image), timeout=30).status_code == 401
    assert requests.post(f"{url}/gradio_api/upload", files={"files": ("a.png", b"x")}, timeout=30).status_code == 401
    for user, password in [(USER, "wrong"), ("mallory", PASSWORD), (USER, PASSWORD.split(":")[0])]:
        refused = requests.post(f"{url}/login", data={"username": user, "password": password}, timeout=30)
        assert refused.status_code == 400, (user, password)
    with requests.Session() as session:
        assert session.post(f"{url}/login", data={"username": USER, "password": PASSWORD}, timeout=30).ok
        assert session.get(f"{url}/config", timeout=30).status_code == 200
        response = session.get(_file_url(url, image), timeout=30)
        assert response.status_code == 200 and response.content == image.read_bytes()


def test_credentials_come_from_the_environment_or_a_file(tmp_path):
    from sampling.studio.access import AUTH_ENV, AccessError, load_credentials, password_checker

    assert load_credentials(None, {AUTH_ENV: "ann:pa:ss"}) == [("ann", "pa:ss")]
    assert load_credentials(None, {}) == []
    auth_file = tmp_path / "users"
    auth_file.write_text("ann:one\r\n  # comment\nbob:two\n")
    assert load_credentials(auth_file, {AUTH_ENV: "env:ignored"}) == [("ann", "one"), ("bob", "two")]
    check = password_checker([("ann", "one")])
    assert check("ann", "one") and not check("ann", "two") and not check("bob", "one")
    for bad, where in [("ann", f"${AUTH_ENV}"), (":pw", f"${AUTH_ENV}"), ("ann:", f"${AUTH_ENV}")]:
        with pytest.raises(AccessError, match="expected user:password") as info:
            load_credentials(None, {AUTH_ENV: bad})
        assert where in str(info.value)
    auth_file.write_text("ann:one\nsecret-without-colon\n")
    with pytest.raises(AccessError, match="line 2: expected user:password") as info:
        load_credentials(auth_file)
    assert "secret-without-colon" not in str(info.value)
    with pytest.raises(AccessError, match="cannot read the auth file"):
        load_credentials(tmp_path / "missing")


def _studio_command(tmp_path: Path, *args: str, env_auth: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "AUTOCOMICS_STUDIO_AUTH"}
    if env_auth is not None:
        env["AUTOCOMICS_STUDIO_AUTH"] = env_auth
    command = [
        sys.executable,
        "-m",
        "sampling",
        "studio",
        "--workdir",
        str(tmp_path / "work"),
        "--port",
        str(free_port()),
        "--no-semantic-search",
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "studio.example.org"])
def test_non_loopback_bind_without_credentials_refuses_to_start(tmp_path, host):
    result = _studio_command(tmp_path, "--host", host)
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"error: refusing to listen on {host} (reachable from other machines) without a login")
    assert "AUTOCOMICS_STUDIO_AUTH" in line and "--auth-file" in line
    assert not (tmp_path / "work").exists()


def test_malformed_credentials_stop_the_start_with_one_line(tmp_path):
    result = _studio_command(tmp_path, "--host", "0.0.0.0", env_auth="no-colon-secret")
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line == "error: $AUTOCOMICS_STUDIO_AUTH: expected user:password with a non-empty user and password"


def test_loopback_needs_no_credentials():
    from sampling.studio.access import is_loopback, require_credentials

    for host in ("127.0.0.1", "127.0.1.1", "localhost", "::1", "[::1]"):
        assert is_loopback(host)
        require_credentials(host, [])
    for host in ("0.0.0.0", "::", "192.168.1.5", "example.org"):
        assert not is_loopback(host)


# --- models -----------------------------------------------------------------------------------


def test_malformed_model_folders_are_listed_as_broken_not_fatal(broken_models_dir, tmp_path):
    from sampling.studio.app import build_app
    from sampling.studio.service import Studio, StudioConfig

    studio = Studio(StudioConfig(workdir=tmp_path / "work", models_dir=broken_models_dir, semantic_search=False))
    demo = build_app(studio)  # the studio starts
    assert [label for label, _ in studio.model_choices()] == ["bundled model", EMOJI_LABEL, "tiny-random"]
    broken = studio.broken_models()
    assert [line.split(": ", 2)[:2] for line in broken] == [
        ["bad-config", "unreadable model folder"],
        ["bad-options", "unreadable model folder"],
    ]
    assert "options" in broken[1]
    assert all("\n" not in line and str(broken_models_dir) not in line for line in broken)
    [note] = [b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "gen-broken-models"]
    assert "bad-options" in note.value and "bad-config" in note.value


def test_only_listed_models_are_loaded_and_refusals_reveal_nothing(models_dir, tmp_path):
    from sampling.studio.service import Studio, StudioConfig, StudioError

    studio = Studio(StudioConfig(workdir=tmp_path / "work", models_dir=models_dir, semantic_search=False))
    existing, missing = str(models_dir / "tiny-random"), str(tmp_path / "no-such-model")
    messages = set()
    for model in (existing, missing, "/etc/passwd", "/", "../models/tiny-random", "models/bad-options"):
        with pytest.raises(StudioError) as generate:
            studio.generate(model, "one panel\nanother panel", 3, 1, "ddim", 0)
        with pytest.raises(StudioError) as train:
            studio.start_training({"data": [str(tmp_path)], "init": model, "max_steps": 1})
        messages |= {str(generate.value), str(train.value)}
    assert len(messages) == 1 and "not one of the studio's models" in messages.pop()
    assert studio.job is None and not (tmp_path / "work" / "outputs").exists()
    assert studio._training_init("models/tiny-random") == existing
    assert studio._training_init("scratch") == "scratch"


# --- form inputs ------------------------------------------------------------------------------


def _fn_index(demo, name: str) -> int:
    """The first event listener running function ``name`` (``refresh`` serves several triggers)."""
    return min(i for i, fn in demo.fns.items() if getattr(fn.fn, "__name__", "") == name)


def _component_id(demo, elem_id: str) -> int:
    [block] = [b for b in demo.blocks.values() if getattr(b, "elem_id", None) == elem_id]
    return block._id


def _call(url: str, demo, name: str, data: list, trigger: str, event_data=None, session: str = "") -> dict:
    """Run event handler ``name`` through Gradio's queue as a browser would; the final queue message."""
    session = session or uuid.uuid4().hex
    joined = requests.post(
        f"{url}/gradio_api/queue/join",
        json={
            "data": data,
            "event_data": event_data,
            "fn_index": _fn_index(demo, name),
            "trigger_id": _component_id(demo, trigger),
            "session_hash": session,
        },
        timeout=30,
    )
    assert joined.ok, joined.text
    with requests.get(
        f"{url}/gradio_api/queue/data", params={"session_hash": session}, stream=True, timeout=60
    ) as stream:
        for line in stream.iter_lines(decode_unicode=True):
            if line and line.startswith("data:"):
                message = json.loads(line[5:])
                if message.get("msg") == "process_completed":
                    return message
    raise AssertionError("the queue closed without a result")


@pytest.mark.parametrize("index", ["1", 1.5, [0], True, -1, 99])
def test_a_bad_catalogue_selection_gets_a_message_not_a_traceback(open_studio, index):
    url, _, demo, _ = open_studio
    result = _call(url, demo, "choose", [None], "cat-grid", {"index": index, "value": None, "selected": True})
    assert result["success"], result
    note = result["output"]["data"][1]  # [0] is the chosen id, kept in the session (not sent)
    assert note == "that is not an item of the grid; click an image in the grid"


def test_catalogue_selection_by_position_still_works(open_studio):
    url, studio, demo, _ = open_studio
    session = uuid.uuid4().hex  # the grid's ids live in the session: list the catalogue first, then select
    listed = _call(url, demo, "refresh", ["", "date"], "cat-search", session=session)
    selected = _call(
        url, demo, "choose", [None], "cat-grid", {"index": 0, "value": None, "selected": True}, session=session
    )
    assert listed["success"] and selected["success"], (listed, selected)
    item_id = studio.catalogue.list("date")[0].id
    assert selected["output"]["data"][1] == f"#{item_id} a red strip"


def test_train_numbers_carry_the_trainers_own_bounds(open_studio):
    import dataclasses

    from finetune.train.config import TrainConfig

    _, _, demo, _ = open_studio
    meta = {f.name: f.metadata for f in dataclasses.fields(TrainConfig)}
    for elem_id, setting in [
        ("train-steps", "max_steps"),
        ("train-batch", "batch_size"),
        ("train-lr", "lr"),
        ("train-uncond", "uncond_p"),
        ("train-ckpt", "checkpoint_every"),
        ("train-sample", "sample_every"),
        ("train-lora-rank", "lora_rank"),
    ]:
        [number] = [b for b in demo.blocks.values() if getattr(b, "elem_id", None) == elem_id]
        assert (number.minimum, number.maximum) == (meta[setting]["min"], meta[setting]["max"]), elem_id


def test_out_of_range_train_numbers_are_refused_before_any_run(open_studio, tmp_path):
    url, studio, demo, _ = open_studio
    data = [None, "scratch", "tiny-base", 10, 0, 1e-4, 0.2, 5, 5, "", "", 16, ["qkv"]]  # batch size 0
    result = _call(url, demo, "start_run", data, "train-start")
    assert not result["success"] and "minimum" in json.dumps(result)
    assert studio.job is None and not studio.config.runs_dir.joinpath("run-2").exists()


def test_fine_tunes_do_not_inherit_the_studio_logins(tmp_path, monkeypatch):
    from sampling.studio.training import TrainingJob

    monkeypatch.setenv("AUTOCOMICS_STUDIO_AUTH", f"{USER}:{PASSWORD}")
    job = TrainingJob(tmp_path / "run", {"data": [str(tmp_path)], "preset": "tiny-base"})
    probe = "import os; print('login:', os.environ.get('AUTOCOMICS_STUDIO_AUTH'))"
    monkeypatch.setattr(job, "command", lambda: [sys.executable, "-c", probe])
    job.start()
    assert job.process.wait(60) == 0
    assert job.log_path.read_text().strip() == "login: None"


def test_fine_tunes_read_only_the_datasets_folder(tmp_path):
    from sampling.studio.service import Studio, StudioConfig, StudioError

    datasets = tmp_path / "datasets"
    (datasets / "shapes").mkdir(parents=True)
    (datasets / ".hidden").mkdir()
    studio = Studio(StudioConfig(workdir=tmp_path / "work", datasets_dir=datasets, semantic_search=False))
    assert studio.dataset_choices() == ["shapes"]
    messages = set()
    for data in (str(datasets / "shapes"), str(tmp_path), "/etc", "../datasets/shapes", ".hidden", "nope", 7):
        with pytest.raises(StudioError) as refused:
            studio.start_training({"data": [data], "preset": "tiny-base", "max_steps": 1})
        messages.add(str(refused.value))
    assert messages == {"that dataset is not one of the studio's datasets; pick one from the list"}
    with pytest.raises(StudioError, match="choose a dataset"):
        studio.start_training({"data": [], "preset": "tiny-base", "max_steps": 1})
    assert studio.job is None
    assert studio._allowed_dataset("shapes") == str(datasets / "shapes")


def test_cached_glide_models_are_offered_and_never_fetched(models_dir, tmp_path, monkeypatch):
    from random_models import save_random_model_folder

    from finetune.model import get_preset
    from sampling.studio.generation import GenerationError, Generator
    from sampling.studio.service import Studio, StudioConfig, StudioError

    cache = tmp_path / "cache"
    monkeypatch.setenv("AUTOCOMICS_CACHE", str(cache))
    monkeypatch.setenv("AUTOCOMICS_GLIDE_URL", "http://127.0.0.1:9/")  # a fetch would fail loudly, never reach out
    monkeypatch.delenv("AUTOCOMICS_OFFLINE", raising=False)
    studio = Studio(StudioConfig(workdir=tmp_path / "work", semantic_search=False))
    assert not {"glide", "glide-base"} & {key for _, key in studio.model_choices()}
    with pytest.raises(StudioError, match="not one of the studio's models"):
        studio.start_training({"data": ["x"], "init": "glide-base", "max_steps": 1})
    with pytest.raises(GenerationError, match="offline|AUTOCOMICS_OFFLINE|cache"):  # not on the list, and no fetch
        Generator("cpu").models("glide-base", upsample=False)

    save_random_model_folder(cache / "models" / "glide-base", get_preset("tiny-base"), seed=1)
    assert ("glide-base (OpenAI GLIDE)", "glide-base") in studio.model_choices()
    assert studio._training_init("glide-base") == str(cache / "models" / "glide-base")
    assert Generator("cpu").models("glide-base", upsample=False).base is not None

    save_random_model_folder(cache / "models" / "glide-upsample", get_preset("tiny-upsample"), seed=2)
    keys = {key for _, key in studio.model_choices()}
    assert "glide" in keys and "glide-base" not in keys  # the pipeline, with its upsampler
    assert studio._training_init("glide") == str(cache / "models" / "glide-base")


def test_a_comic_item_is_shown_with_its_page_count_and_paged_through(open_studio):
    from sampling.studio.service import ComicPage

    url, studio, demo, _ = open_studio
    pages = []
    for number, color in enumerate(["green", "blue"], 1):
        path = studio.config.workdir / "outputs" / f"comic-page-{number}.png"
        Image.new("RGB", (8, 12), color).save(path)
        pages.append(ComicPage(path, f"page {number}", {}, "ltr"))
    item = studio.save_comic(pages, "a two-page comic")
    try:
        session = uuid.uuid4().hex
        listed = _call(url, demo, "refresh", ["", "date"], "cat-search", session=session)
        assert listed["success"], listed
        labels = [entry["caption"] for entry in listed["output"]["data"][0]]
        position = labels.index(f"#{item.id} a two-page comic (comic, 2 pages)")
        event = {"index": position, "value": None, "selected": True}
        selected = _call(url, demo, "choose", [None], "cat-grid", event, session=session)
        assert selected["success"], selected
        data = selected["output"]["data"]
        assert data[1] == f"#{item.id} a two-page comic (comic, 2 pages)" and data[-1] == "page 1 of 2"
        assert data[3]["value"]["orig_name"].endswith(f"-{item.id}.cbz")  # the download: the comic as a CBZ
        turns = [_call(url, demo, "page_on", [None, None], "cat-comic-next", session=session) for _ in range(2)]
        assert [turn["output"]["data"][-1] for turn in turns] == ["page 2 of 2", "page 2 of 2"]  # stops at the end
        back = _call(url, demo, "page_back", [None, None], "cat-comic-previous", session=session)
        assert back["output"]["data"][-1] == "page 1 of 2"
    finally:
        studio.delete(item.id)


def test_comic_buttons_without_pages_get_a_message_not_a_traceback(open_studio):
    url, studio, demo, _ = open_studio
    before = studio.catalogue.count()
    added = _call(url, demo, "add_to_comic", [None, None], "gen-add-page")
    saved = _call(url, demo, "save_whole_comic", [None, "a title"], "gen-save-comic")
    assert not added["success"] and "nothing to add yet: generate a page first" in json.dumps(added)
    assert not saved["success"] and "the comic has no pages yet" in json.dumps(saved)
    assert studio.catalogue.count() == before
