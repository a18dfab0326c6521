"""The Gradio web layer of the studio: three tabs wired to :class:`~sampling.studio.service.Studio`."""

import io
import os
from pathlib import Path

import pandas as pd
from PIL import Image

from finetune.adapters.settings import DEFAULT_RANK, DEFAULT_TARGETS, KNOWN_TARGETS
from finetune.adapters.specs import DEFAULT_SCALE, MAX_ABS_SCALE
from finetune.model import list_presets

from ..comic.script import READING_ORDERS
from .adapters import NO_ADAPTER
from .catalogue import SORTS
from .comic_page import EXPORT_CHOICES, LAYOUT_CHOICES
from .service import ComicPage, Studio, StudioError
from .settings import DEFAULT_STEPS, FORM_LIMITS, MAX_PANELS, SAMPLERS, GenerateSettings
from .training import bounds_text, trainer_bounds

GENERATE_CONCURRENCY = 1  # one sampling job at a time; other users wait in the queue and see their place
CATALOGUE_CONCURRENCY = 4
QUEUE_SIZE = 32


def _message(lines: list[str] | str) -> str:
    return "\n".join(lines) if isinstance(lines, list) else lines


def disable_gradio_telemetry() -> None:
    """Gradio reports launches and checks for updates over the internet unless told not to (read at use)."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"


def build_app(studio: Studio):
    disable_gradio_telemetry()
    import gradio as gr  # lazy: after the telemetry switch above, which Gradio reads when it is imported

    with gr.Blocks(title="autocomics studio", analytics_enabled=False) as demo:
        gr.Markdown("# autocomics studio")
        with gr.Tab("Generate", id="generate"):
            _generate_tab(gr, studio)
        with gr.Tab("Train", id="train"):
            _train_tab(gr, studio)
        with gr.Tab("Catalogue", id="catalogue") as catalogue_tab:
            refresh_catalogue = _catalogue_tab(gr, studio)
        catalogue_tab.select(**refresh_catalogue)
        demo.load(**refresh_catalogue)
    demo.queue(default_concurrency_limit=CATALOGUE_CONCURRENCY, max_size=QUEUE_SIZE)
    return demo


# --- Generate -------------------------------------------------------------------------------


def _broken_note(studio: Studio) -> str:
    """The model and adapter folders found but not offered, each with its reason (empty when there are none)."""
    lines = studio.broken_models() + studio.broken_adapters()
    return "\n".join(["Not offered:", *(f"- {line}" for line in lines)]) if lines else ""


def _adapter_choices(studio: Studio) -> list[tuple[str, str]]:
    return [("none", NO_ADAPTER), *studio.adapter_choices()]


def _generate_tab(gr, studio: Studio) -> None:
    choices = studio.model_choices()
    with gr.Row():
        with gr.Column(scale=2):
            model = gr.Dropdown(
                choices=choices,
                value=choices[0][1] if choices else None,
                label="Model",
                elem_id="gen-model",
                info="the bundled model, or a model folder from the models directory",
            )
            with gr.Row():
                adapter = gr.Dropdown(
                    choices=_adapter_choices(studio),
                    value=NO_ADAPTER,
                    label="Adapter",
                    scale=3,
                    elem_id="gen-adapter",
                    info="a LoRA adapter from the adapters folder (it works on the model it was trained on)",
                )
                adapter_scale = gr.Number(
                    value=DEFAULT_SCALE,
                    label=f"Adapter scale (±{MAX_ABS_SCALE:g})",
                    minimum=-MAX_ABS_SCALE,
                    maximum=MAX_ABS_SCALE,
                    scale=1,
                    elem_id="gen-adapter-scale",
                )
            refresh_models = gr.Button("Refresh model list", size="sm")
            broken = gr.Markdown(_broken_note(studio), elem_id="gen-broken-models")
            captions = gr.Textbox(
                lines=4,
                label=f"Captions, one panel per line (2 to {MAX_PANELS})",
                placeholder="a lighthouse on a cliff, a painting\na boat in a storm, a painting",
                elem_id="gen-captions",
            )
            with gr.Accordion("Advanced", open=False, elem_id="gen-advanced"):
                guidance = gr.Number(
                    value=GenerateSettings.guidance,
                    label=f"Guidance scale ({FORM_LIMITS['guidance'][0]}–{FORM_LIMITS['guidance'][1]})",
                    elem_id="gen-guidance",
                )
                sampler = gr.Dropdown(
                    choices=list(SAMPLERS), value=GenerateSettings.sampler, label="Sampler", elem_id="gen-sampler"
                )
                steps = gr.Number(value=GenerateSettings.steps, precision=0, label="Steps", elem_id="gen-steps")
                seed = gr.Number(value=0, precision=0, label="Seed (-1 = random)", elem_id="gen-seed")
                upsample = gr.Checkbox(
                    value=False, label="Upsample (needs a pipeline with an upsampler)", elem_id="gen-upsample"
                )
                upsample_steps = gr.Number(
                    value=GenerateSettings.upsample_steps,
                    precision=0,
                    label="Upsampler steps",
                    elem_id="gen-upsample-steps",
                )
                placement = gr.Checkbox(
                    value=GenerateSettings.placement,
                    label="Place subjects where captions say (top left, center, ...)",
                    elem_id="gen-placement",
                )
            with gr.Accordion("Page", open=False, elem_id="gen-page-options"):
                layout = gr.Dropdown(
                    choices=list(LAYOUT_CHOICES),
                    value=LAYOUT_CHOICES[0],
                    label="Layout",
                    elem_id="gen-layout",
                    info="grid; auto fits the panel count; named layouts draw each panel at its own shape",
                )
                reading_order = gr.Radio(
                    choices=list(READING_ORDERS), value="ltr", label="Reading order", elem_id="gen-reading-order"
                )
                export_formats = gr.CheckboxGroup(
                    choices=list(EXPORT_CHOICES), value=[], label="Also export as", elem_id="gen-export-formats"
                )
            generate = gr.Button("Generate", variant="primary", elem_id="gen-run")
        with gr.Column(scale=3):
            status = gr.Textbox(label="Messages", interactive=False, lines=3, elem_id="gen-status")
            strip = gr.Image(label="Strip", type="filepath", interactive=False, elem_id="gen-strip")
            page = gr.Image(label="Page", type="filepath", interactive=False, elem_id="gen-page")
            panels = gr.Gallery(label="Panels", columns=4, height="auto", elem_id="gen-panels")
            exports = gr.File(label="Exports", file_count="multiple", interactive=False, elem_id="gen-exports")
            with gr.Row():
                download_strip = gr.DownloadButton("Download strip", interactive=False, elem_id="gen-download-strip")
                download_page = gr.DownloadButton("Download page", interactive=False, elem_id="gen-download-page")
            with gr.Row():
                save_caption = gr.Textbox(label="Caption for the catalogue", max_lines=1, elem_id="gen-save-caption")
                save = gr.Button("Save strip to catalogue", elem_id="gen-save")
            with gr.Row():  # a comic: pages added one generation at a time, saved as one item titled by the caption
                add_page = gr.Button("Add page to comic", size="sm", elem_id="gen-add-page")
                save_comic = gr.Button("Save comic to catalogue", size="sm", elem_id="gen-save-comic")
                clear_comic = gr.Button("Clear comic", size="sm", elem_id="gen-clear-comic")
    result = gr.State(None)
    comic = gr.State([])

    sampler.change(lambda name: DEFAULT_STEPS.get(name, GenerateSettings.steps), inputs=sampler, outputs=steps)
    refresh_models.click(
        lambda: (
            gr.update(choices=studio.model_choices()),
            gr.update(choices=_adapter_choices(studio)),
            _broken_note(studio),
        ),
        outputs=[model, adapter, broken],
    )

    def run(model_value, text, g, n, sampler_name, seed_value, up, up_steps, place, layout_name, order, formats, *lora):
        try:
            choices = (layout_name, order, formats)
            out = studio.generate(
                model_value, text, g, n, sampler_name, seed_value, up, up_steps, choices, lora, placement=place
            )
        except StudioError as exc:
            raise gr.Error(str(exc)) from None
        notes = out.messages + [
            f"{out.model}: seed {out.settings.seed}, {out.settings.sampler} × "
            f"{out.settings.steps} steps, guidance {out.settings.guidance:g}"
        ]
        notes += [f"adapter {Path(a['path']).name} at scale {a['scale']:g} ({a['model']} model)" for a in out.adapters]
        return (
            _message(notes),
            str(out.strip),
            str(out.page),
            [(str(p), c) for p, c in zip(out.panels, out.captions)],
            gr.update(value=str(out.strip), interactive=True),
            gr.update(value=str(out.page), interactive=True),
            " / ".join(out.captions)[:200],
            {
                "strip": str(out.strip),
                "prompt": "\n".join(out.captions),
                "params": out.params,
                "page": ComicPage.from_result(out),
            },
            out.settings.guidance,
            out.settings.steps,
            out.settings.seed,
            [str(p) for p in out.exports] or None,
        )

    generate.click(
        run,
        inputs=[
            model,
            captions,
            guidance,
            steps,
            sampler,
            seed,
            upsample,
            upsample_steps,
            placement,
            layout,
            reading_order,
            export_formats,
            adapter,
            adapter_scale,
        ],
        outputs=[
            status,
            strip,
            page,
            panels,
            download_strip,
            download_page,
            save_caption,
            result,
            guidance,
            steps,
            seed,
            exports,
        ],
        concurrency_limit=GENERATE_CONCURRENCY,
        concurrency_id="generate",
    )

    def save_to_catalogue(last, caption):
        if not last:
            raise gr.Error("nothing to save yet: generate a strip first")
        try:
            item = studio.save(last["strip"], caption, prompt=last["prompt"], params=last["params"])
        except StudioError as exc:
            raise gr.Error(str(exc)) from None
        return f"saved to the catalogue as #{item.id}: {item.caption}"

    save.click(save_to_catalogue, inputs=[result, save_caption], outputs=status)
    _comic_buttons(gr, studio, result, comic, save_caption, status, (add_page, save_comic, clear_comic))


def _comic_buttons(gr, studio: Studio, result, comic, title, status, buttons) -> None:
    """Add the last page to the comic in progress, save that comic as one catalogue item, or start over."""
    add_page, save_comic, clear_comic = buttons

    def add_to_comic(last, pages):
        try:
            pages = studio.add_comic_page(pages, (last or {}).get("page"))
        except StudioError as exc:
            raise gr.Error(str(exc)) from None
        return pages, f"page {len(pages)} added to the comic; save it with the caption above as its title"

    def save_whole_comic(pages, text):
        try:
            item = studio.save_comic(pages, text)
        except StudioError as exc:
            raise gr.Error(str(exc)) from None
        return [], f"saved the comic to the catalogue as #{item.id}: {item.caption} ({item.page_count} pages)"

    add_page.click(add_to_comic, inputs=[result, comic], outputs=[comic, status])
    save_comic.click(save_whole_comic, inputs=[comic, title], outputs=[comic, status])
    clear_comic.click(lambda: ([], "the comic is empty; add pages to start another"), outputs=[comic, status])


# --- Train ----------------------------------------------------------------------------------


def _presets() -> list[str]:
    try:
        return list(list_presets())
    except Exception:
        return []


SAMPLE_DISPLAY_PX = 512


def _newest_sample(samples: list[tuple[str, int, bytes]]):
    """The most recent sample grid the trainer logged, enlarged without blurring its few pixels, and a label."""
    if not samples:
        return None, "Logged samples"
    tag, step, data = max(samples, key=lambda sample: sample[1])
    image = Image.open(io.BytesIO(data)).convert("RGB")
    factor = max(1, SAMPLE_DISPLAY_PX // max(image.size))
    if factor > 1:
        image = image.resize((image.width * factor, image.height * factor), Image.NEAREST)
    return image, f"Logged samples: {tag.removeprefix('tensorboard/')} at step {step}"


def _train_number(gr, label: str, setting: str, value, elem_id: str, precision: int | None = 0):
    """A number field for trainer ``setting``, with the trainer's own range (shown in its label)."""
    bounds = trainer_bounds(setting)
    return gr.Number(value=value, precision=precision, label=label + bounds_text(bounds), elem_id=elem_id, **bounds)


def _train_tab(gr, studio: Studio) -> None:
    presets = _presets()
    default_preset = "tiny-base" if "tiny-base" in presets else (presets[0] if presets else "")
    with gr.Row():
        with gr.Column(scale=2):
            with gr.Row():
                data = gr.Dropdown(
                    choices=studio.dataset_choices(),
                    value=None,
                    label="Dataset",
                    scale=4,
                    info="a folder in the studio's datasets folder (shards or an imagefolder)",
                    elem_id="train-data",
                )
                refresh_data = gr.Button("Refresh", scale=1, elem_id="train-data-refresh")
            init = gr.Dropdown(
                choices=[("scratch", "scratch"), *studio.model_choices()],
                value="scratch",
                label="Start from",
                info="scratch (uses the preset), the bundled model, or a model folder to fine-tune",
                elem_id="train-init",
            )
            preset = gr.Dropdown(choices=presets, value=default_preset, label="Preset", elem_id="train-preset")
            kind = gr.Radio(
                choices=[("whole model", ""), ("LoRA adapter", "lora")],
                value="",
                label="Train",
                elem_id="train-kind",
                info="an adapter: a few MB trained on top of the model started from, saved in the adapters folder",
            )
            with gr.Group(visible=False, elem_id="train-adapter-settings") as adapter_box:
                with gr.Row():
                    adapter_name = gr.Textbox(
                        label="Adapter name", placeholder="the run's name", max_lines=1, elem_id="train-adapter-name"
                    )
                    rank = _train_number(gr, "Rank", "lora_rank", DEFAULT_RANK, "train-lora-rank")
                targets = gr.CheckboxGroup(
                    choices=list(KNOWN_TARGETS),
                    value=list(DEFAULT_TARGETS),
                    label="Layers",
                    elem_id="train-lora-targets",
                )
            with gr.Row():  # each number bounded as the trainer bounds it; the trainer validates them again
                max_steps = _train_number(gr, "Steps", "max_steps", 200, "train-steps")
                batch_size = _train_number(gr, "Batch size", "batch_size", 4, "train-batch")
            with gr.Row():
                lr = _train_number(gr, "Learning rate", "lr", 1e-4, "train-lr", precision=None)
                uncond_p = _train_number(
                    gr, "Empty-caption probability", "uncond_p", 0.2, "train-uncond", precision=None
                )
            with gr.Row():
                checkpoint_every = _train_number(gr, "Checkpoint every", "checkpoint_every", 100, "train-ckpt")
                sample_every = _train_number(gr, "Samples every", "sample_every", 100, "train-sample")
            with gr.Row():
                start = gr.Button("Start fine-tune", variant="primary", elem_id="train-start")
                cancel = gr.Button("Cancel (checkpoints first)", variant="stop", elem_id="train-cancel")
        with gr.Column(scale=3):
            status = gr.Textbox(label="Status", interactive=False, elem_id="train-status")
            progress = gr.Slider(0, 100, value=0, label="Progress (%)", interactive=False, elem_id="train-progress")
            plot = gr.LinePlot(x="step", y="loss", color="series", title="Loss", elem_id="train-plot")
            samples = gr.Image(
                label="Logged samples", type="pil", interactive=False, height=200, elem_id="train-samples"
            )
            log = gr.Textbox(
                label="Trainer output", lines=8, max_lines=8, interactive=False, autoscroll=True, elem_id="train-log"
            )
    timer = gr.Timer(2.0, active=False)
    init.change(lambda value: gr.update(interactive=(value or "scratch") == "scratch"), inputs=init, outputs=preset)
    kind.change(lambda value: gr.update(visible=value == "lora"), inputs=kind, outputs=adapter_box)

    def start_run(data_dir, init_value, preset_name, steps, bs, rate, p_uncond, ckpt, every, *lora):
        settings = {
            "data": [data_dir] if data_dir else [],
            "init": init_value or "scratch",
            "max_steps": steps,
            "batch_size": bs,
            "lr": rate,
            "uncond_p": p_uncond,
            "checkpoint_every": ckpt,
            "sample_every": every,
            "progress": True,
        }
        if (init_value or "scratch") == "scratch":
            settings["preset"] = preset_name
        settings.update(_adapter_settings(*lora))
        try:
            job = studio.start_training(settings)
        except StudioError as exc:
            raise gr.Error(str(exc)) from None
        return f"started in {job.run_dir}", gr.Timer(active=True)

    refresh_data.click(lambda: gr.update(choices=studio.dataset_choices()), outputs=data)
    start.click(
        start_run,
        inputs=[data, init, preset, max_steps, batch_size, lr, uncond_p, checkpoint_every, sample_every]
        + [kind, adapter_name, rank, targets],
        outputs=[status, timer],
        concurrency_id="train",
        concurrency_limit=1,
    )

    def poll():
        info = studio.training_progress()
        if info is None:
            return "no fine-tune started", 0, None, None, "", gr.Timer(active=False)
        rows = [
            {"step": s, "loss": v, "series": tag.removeprefix("tensorboard/")}
            for tag, points in info.losses.items()
            for s, v in points
        ]
        frame = pd.DataFrame(rows, columns=["step", "loss", "series"])
        picture, caption = _newest_sample(info.samples)
        return (
            info.describe(),
            round(100 * info.fraction, 1),
            frame,
            gr.update(value=picture, label=caption),
            info.log_tail,
            gr.Timer(active=info.running),
        )

    outputs = [status, progress, plot, samples, log, timer]
    timer.tick(poll, outputs=outputs, concurrency_id="train-poll", concurrency_limit=4, show_progress="hidden")

    def cancel_run():
        try:
            code = studio.cancel_training()
        except StudioError as exc:
            raise gr.Error(str(exc)) from None
        info = studio.training_progress()
        if info.checkpoint is not None:
            gr.Info(f"fine-tune cancelled at step {info.step}; checkpoint saved in {info.checkpoint}")
        else:
            gr.Warning(f"fine-tune stopped (exit code {code}) without writing a checkpoint; see the trainer output")
        return poll()

    cancel.click(cancel_run, outputs=outputs, concurrency_id="train", concurrency_limit=1)


def _adapter_settings(kind: str, name: str, rank, targets) -> dict:
    """The trainer settings of the Train tab's adapter choice (none for a whole-model fine-tune)."""
    if kind != "lora":
        return {}
    return {"adapter": "lora", "adapter_name": (name or "").strip(), "lora_rank": rank, "lora_targets": targets or []}


# --- Catalogue ------------------------------------------------------------------------------


def item_at(ids: list[int], index) -> int | None:
    """The catalogue id at grid position ``index`` as the browser sent it; None for anything but a valid position."""
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(ids):
        return None
    return ids[index]


def grid_label(item) -> str:
    """How the grid and the selection name an item: "#id caption", and a comic's page count."""
    label = f"#{item.id} {item.caption}"
    return f"{label} (comic, {item.page_count} pages)" if item.is_comic else label


def _catalogue_tab(gr, studio: Studio) -> dict:
    with gr.Row():
        query = gr.Textbox(
            label="Search", placeholder="describe what you are looking for", scale=4, elem_id="cat-query"
        )
        search = gr.Button("Search", scale=1, elem_id="cat-search")
        sort = gr.Radio(choices=list(SORTS), value="date", label="Sort by", scale=2, elem_id="cat-sort")
    status = gr.Textbox(label="Status", interactive=False, elem_id="cat-status", value=studio.search_status)
    grid = gr.Gallery(
        label="Catalogue", columns=4, height="auto", allow_preview=False, object_fit="contain", elem_id="cat-grid"
    )  # contain: strips are wide, cropping them to squares hides panels
    with gr.Row():
        selected = gr.Textbox(label="Selected item", interactive=False, elem_id="cat-selected")
        new_caption = gr.Textbox(label="New caption", max_lines=1, elem_id="cat-new-caption")
        rename = gr.Button("Rename", elem_id="cat-rename")
    with gr.Row():
        download = gr.DownloadButton("Download", interactive=False, elem_id="cat-download")
        delete = gr.Button("Delete…", variant="stop", elem_id="cat-delete")
    with gr.Column(visible=False, elem_id="cat-comic") as comic_box:  # shown for a comic item: page through it
        comic_page = gr.Image(label="Comic page", type="filepath", interactive=False, elem_id="cat-comic-page")
        with gr.Row():
            previous_page = gr.Button("◀ Previous page", size="sm", elem_id="cat-comic-previous")
            page_label = gr.Textbox(show_label=False, interactive=False, elem_id="cat-comic-page-number")
            next_page = gr.Button("Next page ▶", size="sm", elem_id="cat-comic-next")
    with gr.Row(visible=False) as confirm_row:
        confirm_text = gr.Textbox(show_label=False, interactive=False, elem_id="cat-confirm-text")
        confirm = gr.Button("Yes, delete it", variant="stop", elem_id="cat-confirm")
        keep = gr.Button("No, keep it", elem_id="cat-keep")
    items = gr.State([])
    chosen = gr.State(None)
    page_index = gr.State(0)

    def refresh(q, order):
        try:
            rows, line = studio.browse(order, q)
        except StudioError as exc:
            return [], [], str(exc)
        ids = [item.id for item, _ in rows]
        gallery = [(str(path), grid_label(item)) for item, path in rows]
        return gallery, ids, line

    listing = {"fn": refresh, "inputs": [query, sort], "outputs": [grid, items, status]}
    search.click(**listing)
    query.submit(**listing)
    sort.change(**listing)

    def show_page(item_id, index):
        try:
            path, index, count = studio.comic_page(item_id, index)
        except StudioError as exc:
            return None, 0, str(exc)
        return str(path), index, f"page {index + 1} of {count}"

    def choose(ids, evt: gr.SelectData):
        item_id = item_at(ids, evt.index)
        hidden = (gr.update(visible=False), None, 0, "")
        if item_id is None:
            note = "" if evt.index is None else "that is not an item of the grid; click an image in the grid"
            return None, note, "", gr.update(interactive=False, value=None), gr.update(visible=False), *hidden
        try:
            item = studio.catalogue.get(item_id)
            path = studio.download(item_id)
            button = gr.update(interactive=True, value=str(path))
            note = grid_label(item)
        except Exception as exc:  # CatalogueError or StudioError: show it, keep the selection
            button = gr.update(interactive=False, value=None)
            note = f"#{item_id}: {exc}"
            item = None
        viewer = (gr.update(visible=True), *show_page(item_id, 0)) if item and item.is_comic else hidden
        return item_id, note, item.caption if item else "", button, gr.update(visible=False), *viewer

    grid.select(
        choose,
        inputs=items,
        outputs=[chosen, selected, new_caption, download, confirm_row, comic_box, comic_page, page_index, page_label],
    )

    def page_back(item_id, index):
        return show_page(item_id, index - 1)

    def page_on(item_id, index):
        return show_page(item_id, index + 1)

    pager = {"inputs": [chosen, page_index], "outputs": [comic_page, page_index, page_label], "show_progress": "hidden"}
    previous_page.click(page_back, **pager)
    next_page.click(page_on, **pager)

    def do_rename(item_id, caption, q, order):
        if item_id is None:
            raise gr.Error("select an item in the grid first")
        try:
            item = studio.rename(item_id, caption)
        except StudioError as exc:
            raise gr.Error(str(exc)) from None
        gallery, ids, line = refresh(q, order)
        return gallery, ids, f"renamed #{item.id} to {item.caption!r}. {line}", grid_label(item)

    rename.click(do_rename, inputs=[chosen, new_caption, query, sort], outputs=[grid, items, status, selected])

    def ask(item_id, note):
        if item_id is None:
            raise gr.Error("select an item in the grid first")
        return gr.update(visible=True), f"Delete {note} for good?"

    delete.click(ask, inputs=[chosen, selected], outputs=[confirm_row, confirm_text])
    keep.click(lambda: gr.update(visible=False), outputs=confirm_row)

    def do_delete(item_id, q, order):
        if item_id is None:
            raise gr.Error("select an item in the grid first")
        try:
            item = studio.delete(item_id)
        except StudioError as exc:
            raise gr.Error(str(exc)) from None
        gallery, ids, line = refresh(q, order)
        return (
            gallery,
            ids,
            f"deleted #{item.id} {item.caption!r}. {line}",
            gr.update(visible=False),
            None,
            "",
            gr.update(interactive=False, value=None),
            gr.update(visible=False),
        )

    confirm.click(
        do_delete,
        inputs=[chosen, query, sort],
        outputs=[grid, items, status, confirm_row, chosen, selected, download, comic_box],
    )
    return listing
