"""The catalogue, run against SQLite and a real PostgreSQL server with the same tests."""

from __future__ import annotations

import io
import json
import threading
import time

import pytest
from PIL import Image
from pypdf import PdfReader

from sampling.studio.catalogue import (
    Catalogue,
    DatabaseUnavailable,
    ImageMissing,
    InvalidInput,
    ItemNotFound,
    SchemaTooNew,
)
from sampling.studio.catalogue.backends import open_backend, redact_dsn
from sampling.studio.catalogue.migrations import LATEST


def solid(color, size=(16, 12)) -> Image.Image:
    return Image.new("RGB", size, color)


@pytest.fixture
def catalogue(database, tmp_path, embedder):
    return Catalogue(database, tmp_path / "images", embedder=embedder)


def test_add_stores_row_and_hash_named_png(catalogue):
    params = {"guidance": 3.0, "steps": 27, "sampler": "plms", "seed": 7}
    item = catalogue.add(solid("red"), "  A red\tsquare \n", prompt="red square", params=params)
    assert item.caption == "A red square"  # whitespace and control characters normalised
    assert item.params == params and item.prompt == "red square"
    assert item.embedding_model == "all-MiniLM-L6-v2"
    path = catalogue.image_path(item)
    assert path.name == f"{item.image_hash}.png"
    import hashlib

    assert hashlib.sha256(path.read_bytes()).hexdigest() == item.image_hash
    with Image.open(path) as png:
        assert json.loads(png.text["parameters"]) == params
        assert png.size == (16, 12)
    again = catalogue.get(item.id)
    assert again == item
    assert abs((again.created_at - item.created_at).total_seconds()) < 1e-3


def test_png_bytes_are_kept_verbatim(catalogue):
    buffer = io.BytesIO()
    solid("blue").save(buffer, format="PNG")
    item = catalogue.add(buffer.getvalue(), "blue")
    assert catalogue.image_path(item).read_bytes() == buffer.getvalue()


def test_shared_image_file_lives_until_last_row_goes(catalogue):
    first = catalogue.add(solid("green"), "first caption")
    second = catalogue.add(solid("green"), "second caption")
    assert first.image_hash == second.image_hash and first.id != second.id
    path = catalogue.image_path(first)
    catalogue.delete(first.id)
    assert path.is_file()
    catalogue.delete(second.id)
    assert not path.exists()
    assert catalogue.count() == 0


def test_list_sorted_by_date_and_caption(catalogue):
    for caption in ["banana boat", "Apple tree", "cherry blossom"]:
        catalogue.add(solid(caption[0].lower() * 0 or "white"), caption)
        time.sleep(0.002)
    assert [i.caption for i in catalogue.list("date")] == ["cherry blossom", "Apple tree", "banana boat"]
    assert [i.caption for i in catalogue.list("date", descending=False)] == [
        "banana boat",
        "Apple tree",
        "cherry blossom",
    ]
    assert [i.caption for i in catalogue.list("caption")] == ["Apple tree", "banana boat", "cherry blossom"]
    assert [i.caption for i in catalogue.list("caption", limit=1, offset=1)] == ["banana boat"]
    with pytest.raises(InvalidInput, match="sort must be one of"):
        catalogue.list("size")


def test_rename_changes_caption_and_search_follows(catalogue):
    item = catalogue.add(solid("gray"), "a lighthouse in a storm")
    catalogue.add(solid("yellow"), "a bowl of fruit on a table")
    renamed = catalogue.rename(item.id, "a kitten playing with yarn")
    assert renamed.caption == "a kitten playing with yarn" and renamed.image_hash == item.image_hash
    results, method = catalogue.search("small cat")
    assert method == "meaning" and results[0].id == item.id


def test_missing_rows_raise_item_not_found(catalogue):
    with pytest.raises(ItemNotFound, match="does not exist"):
        catalogue.get(12345)
    with pytest.raises(ItemNotFound):
        catalogue.rename(12345, "x")
    item = catalogue.add(solid("black"), "gone soon")
    catalogue.delete(item.id)
    with pytest.raises(ItemNotFound, match="already deleted"):
        catalogue.delete(item.id)


def test_missing_image_file_is_reported_and_row_kept(catalogue, tmp_path):
    item = catalogue.add(solid("purple"), "purple patch")
    catalogue.image_path(item).unlink()
    with pytest.raises(ImageMissing, match="missing on disk"):
        catalogue.image_path(item.id)
    with pytest.raises(ImageMissing):
        catalogue.export(item, tmp_path / "downloads")
    assert catalogue.get(item.id).caption == "purple patch"  # nothing lost: the row stays
    catalogue.delete(item.id)  # and the user can still remove it


def test_export_copies_under_readable_name(catalogue, tmp_path):
    item = catalogue.add(solid("orange"), "Ships at <b>dawn</b> / harbour")
    copy = catalogue.export(item.id, tmp_path / "downloads")
    assert copy.name == f"ships-at-b-dawn-b-harbour-{item.id}.png"
    assert copy.read_bytes() == catalogue.image_path(item).read_bytes()


@pytest.mark.parametrize(
    "caption, message",
    [("", "caption is empty"), ("   \n\t ", "caption is empty"), ("x" * 501, "501 characters long; the limit is 500")],
)
def test_bad_captions_are_refused_clearly(catalogue, caption, message):
    with pytest.raises(InvalidInput, match=message):
        catalogue.add(solid("white"), caption)
    assert catalogue.count() == 0
    assert not any(p.suffix == ".png" for p in catalogue.images.root.rglob("*"))


def test_bad_images_and_params_are_refused(catalogue, tmp_path):
    with pytest.raises(InvalidInput, match="not a readable image"):
        catalogue.add(b"definitely not a png", "junk")
    with pytest.raises(InvalidInput, match="image file not found"):
        catalogue.add(tmp_path / "nope.png", "nothing")
    with pytest.raises(InvalidInput, match="not valid JSON"):
        catalogue.add(solid("white"), "nan", params={"guidance": float("nan")})
    assert catalogue.count() == 0


def test_search_by_meaning_ranks_paraphrase_first(catalogue):
    catalogue.add(solid("blue"), "a sailing boat on a calm sea at sunset")
    target = catalogue.add(solid("green"), "two children building a snowman in the garden")
    catalogue.add(solid("red"), "a plate of spaghetti with tomato sauce")
    results, method = catalogue.search("kids making a snow figure outside")
    assert method == "meaning"
    assert results[0].id == target.id
    assert results[0].score > results[1].score


def test_substring_fallback_without_model(database, tmp_path):
    catalogue = Catalogue(database, tmp_path / "images", embedder=None)
    catalogue.add(solid("blue"), "A sailing BOAT on the sea")
    catalogue.add(solid("red"), "a boat-shaped cake")
    catalogue.add(solid("green"), "100% cotton_shirt")
    results, method = catalogue.search("boat sea")
    assert method == "substring" and [r.caption for r in results] == ["A sailing BOAT on the sea"]
    assert [r.caption for r in catalogue.search("boat")[0]] == ["a boat-shaped cake", "A sailing BOAT on the sea"]
    # LIKE wildcards in the query are literal characters
    assert [r.caption for r in catalogue.search("0%")[0]] == ["100% cotton_shirt"]
    assert catalogue.search("t_n")[0] == []  # "_" would match "ton" as a wildcard


def test_rows_saved_without_model_are_embedded_on_first_search(database, tmp_path, embedder):
    plain = Catalogue(database, tmp_path / "images", embedder=None)
    plain.add(solid("blue"), "a dog running on the beach")
    plain.add(solid("red"), "an old castle on a hill")
    assert all(item.embedding_model is None for item in plain.list())
    smart = Catalogue(database, tmp_path / "images", embedder=embedder)
    results, method = smart.search("puppy at the seaside")
    assert method == "meaning" and results[0].caption == "a dog running on the beach"
    assert all(item.embedding_model == "all-MiniLM-L6-v2" for item in smart.list())


def test_migration_from_v1_keeps_rows(database, tmp_path):
    backend = open_backend(database)
    assert backend.migrate(upto=1) == 1
    with backend.transaction(write=True) as cur:
        cur.execute(
            "INSERT INTO items (image_hash, caption, prompt, params, created_at) VALUES (?, ?, ?, ?, ?)",
            ("ab" * 32, "old row", "", backend.params_to_db('{"steps": 10}'), backend.now()),
        )
    catalogue = Catalogue(database, tmp_path / "images")
    with catalogue.backend.transaction() as cur:
        versions = [row["version"] for row in cur.execute("SELECT version FROM schema_version ORDER BY version")]
    assert versions == list(range(1, LATEST + 1))
    [old] = catalogue.list()
    assert old.caption == "old row" and old.params == {"steps": 10} and old.embedding_model is None
    assert backend.migrate() == LATEST  # idempotent


def test_newer_schema_is_refused(database, tmp_path):
    backend = open_backend(database)
    backend.migrate()
    with backend.transaction(write=True) as cur:
        cur.execute("INSERT INTO schema_version (version, applied_at) VALUES (?, ?)", (LATEST + 1, backend.now()))
    with pytest.raises(SchemaTooNew, match="newer than this code"):
        Catalogue(database, tmp_path / "images")


def test_concurrent_users(database, tmp_path):
    """Several users (threads with their own catalogue objects, so their own connections) at once."""
    errors: list[BaseException] = []
    opened: list[Catalogue] = []
    start = threading.Barrier(4)

    def user(n: int) -> None:
        try:
            start.wait()
            catalogue = Catalogue(database, tmp_path / "images")  # all migrate the new database at once
            opened.append(catalogue)
            mine = [catalogue.add(solid((n * 40, i * 20, 0)), f"user {n} item {i}") for i in range(5)]
            shared = catalogue.add(solid("white"), f"shared image from user {n}")
            catalogue.rename(mine[0].id, f"user {n} renamed")
            catalogue.delete(mine[1].id)
            catalogue.delete(shared.id)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=user, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    catalogue = opened[0]
    items = catalogue.list("caption")
    assert len(items) == 4 * 4
    assert sum(item.caption.endswith("renamed") for item in items) == 4
    for item in items:
        assert catalogue.image_path(item).is_file()
    # the white image was saved by every user and deleted by every user: its file is gone
    with catalogue.backend.transaction() as cur:
        hashes = {row["image_hash"] for row in cur.execute("SELECT image_hash FROM items")}
    files = {p.stem for p in catalogue.images.root.rglob("*.png")}
    assert files == hashes
    with catalogue.backend.transaction() as cur:
        assert cur.execute("SELECT COUNT(*) AS n FROM schema_version")[0]["n"] == LATEST


def test_unreachable_postgres_is_a_clear_error(tmp_path):
    dsn = f"postgresql://someone:s3cret@127.0.0.1:{_closed_port()}/catalogue"
    with pytest.raises(DatabaseUnavailable, match="cannot reach PostgreSQL database") as caught:
        Catalogue(dsn, tmp_path / "images")
    assert "s3cret" not in str(caught.value) and "***" in str(caught.value)


def test_unopenable_sqlite_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(DatabaseUnavailable, match="cannot open SQLite database"):
        Catalogue(blocker / "catalogue.sqlite", tmp_path / "images")


def test_redact_dsn():
    assert redact_dsn("postgresql://u:pw@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert redact_dsn("host=h user=u password=pw dbname=d") == "host=h user=u password=*** dbname=d"


def _closed_port() -> int:
    from studio_helpers import free_port

    return free_port()


# --- comic items: an ordered list of pages saved as one item ------------------------------


def _pages(*colors) -> list[Image.Image]:
    return [solid(color, (12, 18)) for color in colors]


def test_comic_is_one_item_with_pages_in_order(catalogue, tmp_path):
    pages = _pages("red", "green", "blue", "green")  # a repeated page keeps its place
    comic = catalogue.add_comic(pages, "The Lighthouse", reading_order="rtl", exports=["cbz", "pdf"], prompt="p")
    catalogue.add(solid("white"), "a plain strip")
    assert comic.is_comic and comic.page_count == 4 and comic.reading_order == "rtl"
    assert comic.exports == ("pdf", "cbz") and comic.image_hash == comic.pages[0]
    assert catalogue.get(comic.id) == comic
    colors = [Image.open(path).getpixel((0, 0)) for path in catalogue.page_paths(comic.id)]
    assert colors == [(255, 0, 0), (0, 128, 0), (0, 0, 255), (0, 128, 0)]
    assert catalogue.count() == 2
    listed = {item.id: item for item in catalogue.list()}
    assert listed[comic.id].pages == comic.pages and not [i for i in listed.values() if i.id != comic.id][0].pages
    renamed = catalogue.rename(comic.id, "The Lighthouse, part one")
    assert renamed.pages == comic.pages and renamed.caption == "The Lighthouse, part one"
    results, _ = catalogue.search("lighthouse")
    assert results[0].id == comic.id and results[0].page_count == 4


def test_comic_exports_as_cbz_and_pdf_in_order(catalogue, tmp_path):
    import zipfile

    comic = catalogue.add_comic(_pages("red", "green", "blue"), "Night <Shift>", reading_order="rtl")
    cbz = catalogue.export(comic.id, tmp_path / "downloads")
    assert cbz.name == f"night-shift-{comic.id}.cbz"
    with zipfile.ZipFile(cbz) as archive:
        assert archive.namelist() == ["ComicInfo.xml", "001.png", "002.png", "003.png"]
        stored = [archive.read(name) for name in ("001.png", "002.png", "003.png")]
        info = archive.read("ComicInfo.xml").decode()
    assert stored == [path.read_bytes() for path in catalogue.page_paths(comic)]
    assert "<Title>Night &lt;Shift&gt;</Title>" in info and "<PageCount>3</PageCount>" in info
    assert "<Manga>YesAndRightToLeft</Manga>" in info
    pdf = catalogue.export(comic, tmp_path / "downloads", comic_format="pdf")
    assert pdf.suffix == ".pdf" and len(PdfReader(pdf).pages) == 3
    with pytest.raises(InvalidInput, match="cbz or pdf"):
        catalogue.export(comic, tmp_path / "downloads", comic_format="webtoon")


def test_deleting_a_comic_removes_all_its_pages(catalogue):
    strip = catalogue.add(solid("blue", (12, 18)), "a blue strip")  # shares its image with page 2
    comic = catalogue.add_comic(_pages("red", "blue", "yellow"), "Three pages")
    paths = catalogue.page_paths(comic)
    catalogue.delete(comic.id)
    assert [p.exists() for p in paths] == [False, True, False]  # page 2 is still the strip's image
    with catalogue.backend.transaction() as cur:
        assert cur.execute("SELECT COUNT(*) AS n FROM item_pages")[0]["n"] == 0
    with pytest.raises(ItemNotFound):
        catalogue.get(comic.id)
    catalogue.delete(strip.id)
    assert not any(catalogue.images.root.rglob("*.png"))


def test_comic_with_missing_page_files_is_one_clear_error(catalogue, tmp_path):
    comic = catalogue.add_comic(_pages("red", "green", "blue"), "Torn comic")
    paths = catalogue.page_paths(comic)
    paths[1].unlink()
    paths[2].unlink()
    with pytest.raises(ImageMissing) as caught:
        catalogue.export(comic.id, tmp_path / "downloads")
    message = str(caught.value)
    assert "\n" not in message and "missing 2 of its 3 page files" in message and "page(s) 2, 3" in message
    assert catalogue.get(comic.id).page_count == 3  # nothing lost: the item stays and can be deleted
    catalogue.delete(comic.id)
    assert not paths[0].exists()


def test_bad_comics_are_refused_and_leave_nothing(catalogue, tmp_path):
    from sampling.studio.catalogue import MAX_COMIC_PAGES

    cases = [
        ([], "The Empty", {}, "at least one page"),
        (_pages("red") * (MAX_COMIC_PAGES + 1), "Too long", {}, f"at most {MAX_COMIC_PAGES} pages"),
        (_pages("red"), "  ", {}, "comic title is empty"),
        (_pages("red"), "Sideways", {"reading_order": "ttb"}, "reading order must be one of"),
        (_pages("red"), "Odd export", {"exports": ["gif"]}, "unknown export format"),
        ([solid("red"), b"not an image"], "Half good", {}, "not a readable image"),
    ]
    for pages, title, options, message in cases:
        with pytest.raises(InvalidInput, match=message):
            catalogue.add_comic(pages, title, **options)
    assert catalogue.count() == 0
    assert not any(catalogue.images.root.rglob("*.png"))  # the good page of the half-good comic was not kept


def test_migration_from_v2_keeps_items_and_adds_comics(database, tmp_path):
    backend = open_backend(database)
    assert backend.migrate(upto=2) == 2
    old_images = Catalogue(database, tmp_path / "images", migrate=False)
    with backend.transaction(write=True) as cur:
        cur.execute(
            "INSERT INTO items (image_hash, caption, prompt, params, created_at) VALUES (?, ?, ?, ?, ?)",
            (
                old_images.images.put(b"\x89PNG fake"),
                "saved before comics",
                "",
                backend.params_to_db("{}"),
                backend.now(),
            ),
        )
    catalogue = Catalogue(database, tmp_path / "images")
    [old] = catalogue.list()
    assert old.caption == "saved before comics" and old.kind == "image" and not old.is_comic and old.page_count == 1
    comic = catalogue.add_comic(_pages("red", "green"), "After the upgrade")
    assert [i.id for i in catalogue.list("caption")] == [comic.id, old.id]
    catalogue.delete(comic.id)
    assert catalogue.images.path(old.image_hash).is_file()
