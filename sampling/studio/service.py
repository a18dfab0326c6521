"""What the studio does, without the web layer: generate strips, keep the catalogue, run fine-tunes.

Every public method returns data plus user-facing messages, and turns expected failures
(bad input, database down, file missing, model not loadable) into :class:`StudioError` with a
message the UI shows as is. Nothing here imports Gradio, so notebooks and tests can drive it.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

from data_pipeline.errors import UserError
from finetune import bundled_models
from finetune.adapters.specs import check_scale

from .adapters import NO_ADAPTER, AdapterChoice, UnknownAdapter, discover_adapters, new_adapter_folder, resolve_adapter
from .catalogue import MAX_COMIC_PAGES, Catalogue, CatalogueError, Item
from .catalogue.errors import InvalidInput
from .catalogue.store import DATABASE_NAME, IMAGES_DIR_NAME, MAX_PROMPT_CHARS
from .comic_page import page_options
from .generation import GenerationError, Generator, StripResult
from .models import ModelChoice, UnknownModel, discover_models, resolve_model
from .search import load_default_embedder
from .settings import GenerateSettings, clamp_settings, split_captions
from .training import Progress, TrainingError, TrainingJob, new_run_dir

log = logging.getLogger(__name__)


class StudioError(UserError):
    """A failure to show the user (its message says what happened and what to do)."""


@dataclass
class StudioConfig:
    workdir: Path
    models_dir: Path | None = None
    datasets_dir: Path | None = None  # the datasets a fine-tune may read; default: workdir/datasets
    adapters_dir: Path | None = None  # the LoRA adapters users may pick, and where Train writes them; workdir/adapters
    database: str | None = None  # PostgreSQL DSN; default: SQLite in workdir
    device: str = "auto"
    semantic_search: bool = True

    @property
    def outputs_dir(self) -> Path:
        return self.workdir / "outputs"

    @property
    def datasets_root(self) -> Path:
        return self.datasets_dir or self.workdir / "datasets"

    @property
    def adapters_root(self) -> Path:
        return self.adapters_dir or self.workdir / "adapters"

    @property
    def runs_dir(self) -> Path:
        return self.workdir / "runs"

    @property
    def downloads_dir(self) -> Path:
        return self.workdir / "downloads"

    @property
    def images_dir(self) -> Path:
        return self.workdir / IMAGES_DIR_NAME

    @property
    def missing_image(self) -> Path:
        return self.workdir / "missing-image.png"

    @property
    def database_file(self) -> Path | None:
        """The SQLite catalogue file (None when the catalogue lives in PostgreSQL)."""
        return None if self.database else self.workdir / DATABASE_NAME


@dataclass(frozen=True)
class ComicPage:
    """A generated page waiting in the Generate tab's comic until the comic is saved as one catalogue item."""

    page: Path
    prompt: str
    params: dict
    reading_order: str
    formats: tuple[str, ...] = ()

    @classmethod
    def from_result(cls, result: StripResult) -> "ComicPage":
        prompt = "\n".join(result.captions)
        return cls(result.page, prompt, result.params, result.options.reading_order, result.options.formats)


class Studio:
    def __init__(self, config: StudioConfig):
        self.config = config
        config.workdir.mkdir(parents=True, exist_ok=True)
        self._catalogue: Catalogue | None = None
        self._catalogue_lock = threading.Lock()
        self._embedder = None
        self.search_status = "search by meaning is off; using substring search"
        if config.semantic_search:
            self._embedder, self.search_status = load_default_embedder()
        self._generator = None
        self._generator_lock = threading.Lock()
        self.job: TrainingJob | None = None
        self._job_lock = threading.Lock()

    # --- catalogue -----------------------------------------------------------------------

    @property
    def catalogue(self) -> Catalogue:
        """Opened on first use and re-tried after failures, so a database that comes back is picked up."""
        with self._catalogue_lock:
            if self._catalogue is None:
                try:
                    self._catalogue = Catalogue.in_folder(
                        self.config.workdir, dsn=self.config.database, embedder=self._embedder
                    )
                except CatalogueError as exc:
                    raise StudioError(f"catalogue unavailable: {exc}") from exc
            return self._catalogue

    def _guard(self, action: str, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except CatalogueError as exc:
            raise StudioError(f"{action} failed: {exc}") from exc

    def save(self, image_path: str | Path, caption: str, prompt: str = "", params: dict | None = None) -> Item:
        if not image_path or not Path(image_path).is_file():
            raise StudioError("nothing to save yet: generate a strip first")
        return self._guard("saving", self.catalogue.add, Path(image_path), caption, prompt=prompt, params=params)

    def add_comic_page(self, comic: list[ComicPage], page: ComicPage | None) -> list[ComicPage]:
        """The comic in progress with ``page`` appended; its pages must share one reading order."""
        if page is None or not Path(page.page).is_file():
            raise StudioError("nothing to add yet: generate a page first")
        if len(comic) >= MAX_COMIC_PAGES:
            raise StudioError(f"a comic has at most {MAX_COMIC_PAGES} pages; save this one and start another")
        if any(Path(p.page) == Path(page.page) for p in comic):
            raise StudioError("this page is in the comic already; generate the next page first")
        if comic and page.reading_order != comic[0].reading_order:
            raise StudioError(
                f"this page reads {page.reading_order} but the comic reads {comic[0].reading_order}; "
                f"generate it with reading order {comic[0].reading_order}, or clear the comic"
            )
        return [*comic, page]

    def save_comic(self, comic: list[ComicPage], title: str) -> Item:
        """The comic's pages, in the order added, saved as one catalogue item titled ``title``. Each page's PNG keeps
        its own generation parameters; the item records the page count and the models used."""
        if not comic:
            raise StudioError("the comic has no pages yet: generate a page and add it to the comic")
        missing = [n for n, page in enumerate(comic, 1) if not Path(page.page).is_file()]
        if missing:
            raise StudioError(f"page(s) {', '.join(map(str, missing))} of the comic are gone from the outputs folder")
        prompt = "\n\n".join(page.prompt for page in comic)[:MAX_PROMPT_CHARS]
        params = {"page_count": len(comic), "models": sorted({str(page.params.get("model")) for page in comic})}
        exports = sorted({f for page in comic for f in page.formats})
        pages = [Path(page.page) for page in comic]
        order = comic[0].reading_order
        return self._guard("saving", self.catalogue.add_comic, pages, title, order, exports, prompt, params)

    def comic_page(self, item_id: int, index) -> tuple[Path, int, int]:
        """Page ``index`` (from 0, clamped into range) of a comic item, that index and the page count."""
        if item_id is None:
            raise StudioError("select a comic in the grid first")
        paths = self._guard("reading the comic", self.catalogue.page_paths, item_id)
        index = min(max(int(index or 0), 0), len(paths) - 1)
        return paths[index], index, len(paths)

    def browse(self, sort: str = "date", query: str = "") -> tuple[list[tuple[Item, Path]], str]:
        """Items (with the file to show) for the grid, and a status line."""
        catalogue = self.catalogue
        if query and query.strip():
            items, method = self._guard("searching", catalogue.search, query)
            how = "by meaning" if method == "meaning" else "by words in the caption (search by meaning is off)"
            status = f"{len(items)} result(s) for {query.strip()!r}, ranked {how}"
        else:
            items = self._guard("listing", catalogue.list, sort)
            status = f"{len(items)} item(s), sorted by {sort}"
        rows, missing = [], []
        for item in items:
            try:
                rows.append((item, catalogue.page_paths(item)[0]))  # a comic shows its cover; all pages checked
            except CatalogueError:
                missing.append(item)
                rows.append((item, self._missing_image()))
        if missing:
            ids = ", ".join(f"#{i.id}" for i in missing)
            status += (
                f". Image file missing on disk for {ids}: the caption is kept; delete the item or restore the file."
            )
        return rows, status

    def rename(self, item_id: int, caption: str) -> Item:
        return self._guard("renaming", self.catalogue.rename, item_id, caption)

    def delete(self, item_id: int) -> Item:
        return self._guard("deleting", self.catalogue.delete, item_id)

    def download(self, item_id: int) -> Path:
        return self._guard("download", self.catalogue.export, item_id, self.config.downloads_dir)

    def _missing_image(self) -> Path:
        path = self.config.missing_image
        if not path.is_file():
            image = Image.new("RGB", (128, 128), (235, 235, 235))
            draw = ImageDraw.Draw(image)
            draw.line((0, 0, 127, 127), fill=(200, 60, 60), width=3)
            draw.line((0, 127, 127, 0), fill=(200, 60, 60), width=3)
            draw.text((22, 58), "image missing", fill=(40, 40, 40))
            tmp = path.with_suffix(".tmp.png")
            image.save(tmp)
            tmp.replace(path)
        return path

    # --- generation ----------------------------------------------------------------------

    def model_choices(self) -> list[tuple[str, str]]:
        """(label, key) of every model a user may pick."""
        return [(choice.label, choice.key) for choice in self._models() if choice.usable]

    def broken_models(self) -> list[str]:
        """One line per model folder found but not offered, saying why."""
        return [f"{choice.label}: {choice.problem}" for choice in self._models() if not choice.usable]

    def _models(self) -> list[ModelChoice]:
        return discover_models(self.config.models_dir, self.config.runs_dir)

    def _allowed_model(self, key: str) -> ModelChoice:
        try:
            return resolve_model(key, self.config.models_dir, self.config.runs_dir)
        except UnknownModel as exc:
            raise StudioError(str(exc)) from exc

    def generate(
        self,
        model: str,
        captions_text: str,
        guidance,
        steps,
        sampler,
        seed,
        upsample=False,
        upsample_steps=GenerateSettings.upsample_steps,
        page_choices: tuple = (None, None, None),  # layout, reading order, export formats (comic_page.page_options)
        adapter: tuple = (NO_ADAPTER, 1.0),  # an adapter's name in the adapters folder, and its scale
        placement: bool = True,  # move subjects to the positions their captions name
    ) -> StripResult:
        try:
            captions, messages = split_captions(captions_text)
        except InvalidInput as exc:
            raise StudioError(str(exc)) from exc
        settings, clamped = clamp_settings(guidance, steps, sampler, seed, upsample, upsample_steps, placement)
        messages += clamped
        options, replaced = page_options(len(captions), *page_choices)
        messages += replaced
        choice = self._allowed_model(model)
        adapters = self._adapters_for_strip(*adapter)
        with self._generator_lock:
            if self._generator is None:
                try:
                    self._generator = Generator(self.config.device)
                except GenerationError as exc:  # e.g. --device cuda on a machine without one
                    raise StudioError(str(exc)) from exc
            generator = self._generator
        out_dir = self._new_output_dir()
        try:
            result = generator.strip(choice.source, captions, settings, out_dir, options, adapters)
        except GenerationError as exc:
            try:
                out_dir.rmdir()  # only when nothing was written
            except OSError:
                pass
            raise StudioError(str(exc)) from exc
        result.messages = messages + result.messages
        return result

    # --- adapters ------------------------------------------------------------------------

    def adapter_choices(self) -> list[tuple[str, str]]:
        """(label, name) of every adapter a user may pick."""
        return [(choice.label, choice.name) for choice in self._adapters() if choice.usable]

    def broken_adapters(self) -> list[str]:
        """One line per adapter folder found but not offered, saying why."""
        return [f"adapter {choice.name}: {choice.problem}" for choice in self._adapters() if not choice.usable]

    def _adapters(self) -> list[AdapterChoice]:
        return discover_adapters(self.config.adapters_root)

    def _adapters_for_strip(self, name, scale) -> list[tuple[Path, float]]:
        """[(folder, scale)] of the chosen adapter (none when no name), checked against the allow-list."""
        if not name:
            return []
        try:
            choice = resolve_adapter(name, self.config.adapters_root)
            return [(choice.path, check_scale(float(1.0 if scale is None else scale)))]
        except (UserError, TypeError, ValueError) as exc:
            message = str(exc) if isinstance(exc, UserError) else f"adapter scale {scale!r} is not a number"
            raise StudioError(message) from exc

    def _new_output_dir(self) -> Path:
        """A folder of its own per strip: two strips made in the same second must not overwrite each other."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        self.config.outputs_dir.mkdir(parents=True, exist_ok=True)
        for n in range(1, 10_000):
            path = self.config.outputs_dir / (stamp if n == 1 else f"{stamp}-{n}")
            try:
                path.mkdir()
                return path
            except FileExistsError:
                continue
        raise StudioError(f"cannot create an output folder in {self.config.outputs_dir}")

    # --- training ------------------------------------------------------------------------

    def start_training(self, settings: dict) -> TrainingJob:
        """Start ``python -m finetune train`` with trainer ``settings``; ``init`` is ``scratch`` or the key of an
        allowed model (the bundled model and pipeline folders mean their base model). With ``adapter: lora`` the
        run trains an adapter, written to the adapters folder as ``adapter_name`` (default: the run's name)."""
        settings = dict(settings, init=self._training_init(settings.get("init") or "scratch"))
        settings["data"] = [self._allowed_dataset(name) for name in settings.get("data") or []]
        if not settings["data"]:
            raise StudioError("choose a dataset")
        adapter_name = settings.pop("adapter_name", "") or ""
        with self._job_lock:
            if self.job is not None and self.job.running:
                raise StudioError(f"a fine-tune is already running in {self.job.run_dir}; cancel it first")
            run_dir = new_run_dir(self.config.runs_dir)
            if settings.get("adapter"):
                settings["export_dir"] = str(self._new_adapter_folder(adapter_name or run_dir.name))
            try:
                job = TrainingJob(run_dir, settings)
                job.start()
            except TrainingError as exc:
                raise StudioError(f"cannot start the fine-tune: {exc}") from exc
            self.job = job
            return job

    def _new_adapter_folder(self, name: str) -> Path:
        try:
            return new_adapter_folder(name, self.config.adapters_root)
        except UnknownAdapter as exc:
            raise StudioError(f"cannot start the fine-tune: {exc}") from exc

    def dataset_choices(self) -> list[str]:
        """Names of the datasets a fine-tune may read: the folders inside the datasets folder."""
        root = self.config.datasets_root
        if not root.is_dir():
            return []
        return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))

    def _allowed_dataset(self, name) -> str:
        """The folder of dataset `name`; anything else (a path, a climb out) gets one answer that reveals nothing."""
        if not isinstance(name, str) or name not in self.dataset_choices():
            raise StudioError("that dataset is not one of the studio's datasets; pick one from the list")
        return str(self.config.datasets_root / name)

    def _training_init(self, init: str) -> str:
        if init == "scratch":
            return init
        folder = self._allowed_model(init).base_folder
        if folder is None:
            try:
                return str(bundled_models.bundled_model_path("base"))
            except FileNotFoundError as exc:
                raise StudioError(str(exc)) from exc
        return str(folder)

    def training_progress(self) -> Progress | None:
        return None if self.job is None else self.job.progress()

    def cancel_training(self) -> int | None:
        with self._job_lock:
            if self.job is None or not self.job.running:
                raise StudioError("no fine-tune is running")
            return self.job.cancel()
