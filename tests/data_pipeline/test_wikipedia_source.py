"""`python -m data_pipeline wikipedia` end to end against a MediaWiki-style API on 127.0.0.1."""

from __future__ import annotations

import glob
import json

from dpweb_helpers import LocalWebServer, Reply

from data_pipeline.__main__ import main
from data_pipeline.shards import iter_tar_samples


def page_current(host: str) -> str:
    up = f"//{host}/images"
    return f"""<div class="mw-parser-output">
<table class="infobox"><tbody><tr><td class="infobox-image"><span typeof="mw:File/Frameless">
<a href="/wiki/File:Trawler.jpg" class="mw-file-description"><img alt="A trawler" src="{up}/thumb/1/1a/Trawler.jpg/250px-Trawler.jpg" width="250" height="167" class="mw-file-element" data-file-width="900" data-file-height="600"/></a></span>
<div class="infobox-caption">A trawler at dawn</div></td></tr>
<tr><td><span typeof="mw:File"><a href="/wiki/File:Flag.svg"><img src="{up}/thumb/f/f1/Flag.svg/23px-Flag.svg.png" width="23" height="15" data-file-width="900" data-file-height="600"/></a></span></td></tr></tbody></table>
<figure typeof="mw:File/Thumb"><a href="/wiki/File:Dory.jpg" class="mw-file-description"><img src="{up}/thumb/2/2b/Dory.jpg/220px-Dory.jpg" width="220" height="147" class="mw-file-element" data-file-width="800" data-file-height="533"/></a><figcaption>A dory on the beach<sup class="reference"><a href="#cite_note-1">[1]</a></sup></figcaption></figure>
<ul class="gallery mw-gallery-traditional"><li class="gallerybox"><div class="thumb"><span typeof="mw:File"><a href="/wiki/File:Gull.jpg"><img src="{up}/thumb/c/cd/Gull.jpg/120px-Gull.jpg" width="120" height="80" data-file-width="300" data-file-height="200"/></a></span></div><div class="gallerytext">A gull &amp; a mast</div></li></ul>
</div>"""


def page_legacy(host: str) -> str:
    up = f"//{host}/images"
    return f"""<div class="mw-parser-output">
<div class="thumb tright"><div class="thumbinner"><a href="/wiki/File:Harbour.jpg" class="image"><img src="{up}/thumb/3/3c/Harbour.jpg/220px-Harbour.jpg" width="220" height="147" class="thumbimage" data-file-width="1000" data-file-height="667"/></a><div class="thumbcaption"><div class="magnify"><a href="/wiki/File:Harbour.jpg" class="internal" title="Enlarge"></a></div>The <b>old</b> harbour</div></div></div>
<div class="thumb tleft"><div class="thumbinner"><a href="/wiki/File:Dory.jpg" class="image"><img src="{up}/thumb/2/2b/Dory.jpg/180px-Dory.jpg" width="180" height="120" class="thumbimage" data-file-width="800" data-file-height="533"/></a><div class="thumbcaption">Dories drawn up in the harbour</div></div></div>
</div>"""


def make_wiki(server, image_bytes):
    host = f"127.0.0.1:{server.port}"
    pages = {"Boats": page_current(host), "Old harbour": page_legacy(host)}
    base = server.url("/images")
    thumbs = {
        "File:Trawler.jpg": f"{base}/thumb/1/1a/Trawler.jpg/256px-Trawler.jpg",
        "File:Dory.jpg": f"{base}/thumb/2/2b/Dory.jpg/256px-Dory.jpg",
        "File:Harbour.jpg": f"{base}/thumb/3/3c/Harbour.jpg/256px-Harbour.jpg",
    }
    for i, url in enumerate(thumbs.values()):
        server.add_image(url.split(str(server.port))[1], image_bytes("jpg", 256, 170, seed=i))
    # Gull.jpg has no image info: its page thumbnail path is re-targeted to 256 px.
    server.add_image("/images/thumb/c/cd/Gull.jpg/256px-Gull.jpg", image_bytes("png", 256, 170, seed=7), "image/png")
    calls = {"parse": 0}

    def api(q):
        if q.get("format") != "json" or q.get("formatversion") != "2":
            return Reply(400, b"bad request")
        if q.get("action") == "parse":
            calls["parse"] += 1
            if calls["parse"] == 1:  # the wiki is busy at first
                return Reply(429, b"", {"Retry-After": "1"})
            title = q["page"]
            if title not in pages:
                body = {"error": {"code": "missingtitle", "info": "The page you specified doesn't exist."}}
            else:
                body = {"parse": {"title": title, "pageid": 1, "text": pages[title]}}
        elif q.get("action") == "query" and q.get("prop") == "imageinfo":
            assert q["iiurlwidth"] == "256"
            infos = []
            for title in q["titles"].split("|"):
                if title not in thumbs:
                    infos.append({"ns": 6, "title": title, "missing": True})
                    continue
                infos.append(
                    {
                        "ns": 6,
                        "title": title,
                        "imageinfo": [
                            {
                                "thumburl": thumbs[title],
                                "thumbwidth": 256,
                                "width": 900,
                                "height": 600,
                                "url": thumbs[title].replace("/thumb", "").rsplit("/", 1)[0],
                                "descriptionurl": f"https://commons.example.org/wiki/{title.replace(' ', '_')}",
                                "extmetadata": {
                                    "LicenseShortName": {"value": "CC BY-SA 4.0"},
                                    "LicenseUrl": {"value": "https://creativecommons.org/licenses/by-sa/4.0"},
                                    "Artist": {
                                        "value": '<a href="//commons.example.org/wiki/User:Jane">Jane &amp; Doe</a>'
                                    },
                                },
                            }
                        ],
                    }
                )
            body = {"batchcomplete": True, "query": {"pages": infos}}
        else:
            return Reply(400, b"unknown action")
        return Reply(200, json.dumps(body).encode(), {"Content-Type": "application/json"})

    return server.add_handler("/w/api.php", api)


def test_wikipedia_articles_into_shards(tmp_path, image_bytes, capsys):
    with LocalWebServer() as server:
        endpoint = make_wiki(server, image_bytes)
        titles = tmp_path / "titles.txt"
        titles.write_text("# harbour articles\nOld harbour\nNo such page\n")
        out = tmp_path / "out"
        args = [
            "wikipedia",
            "Boats",
            "--titles-file",
            str(titles),
            "--endpoint",
            endpoint,
            "--out",
            str(out),
            "--thumb-width",
            "256",
            "--contact",
            "ops@example.org",
            "--allow-network",
            "127.0.0.0/8",
            "--api-rate",
            "50",
            "--per-domain-rate",
            "100",
            "--processes",
            "1",
            "--no-progress",
            "--shard-size",
            "3",
        ]
        assert main(args) == 0
        captured = capsys.readouterr()
        assert "No such page" in captured.err and "missingtitle" in captured.err
        assert all("contact: ops@example.org" in ua and ua.startswith("autocomics/") for ua in server.user_agents)
        parse_times = [t for path, ts in server.request_times.items() if "action=parse" in path for t in ts]
        assert len(parse_times) == 4 and sorted(parse_times)[1] - sorted(parse_times)[0] >= 0.95  # Retry-After

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["sources"][0]["missing"][0]["title"] == "No such page"
    assert manifest["totals"]["samples"] == 4 and manifest["failures"] == {}
    samples = {}
    for shard in sorted(glob.glob(str(out / "64" / "*.tar"))):
        for _key, files in iter_tar_samples(shard):
            meta = json.loads(files["json"])
            samples[meta["attributes"]["file_title"]] = meta
    assert set(samples) == {"File:Trawler.jpg", "File:Dory.jpg", "File:Gull.jpg", "File:Harbour.jpg"}
    dory = samples["File:Dory.jpg"]
    assert dory["caption"] == "A dory on the beach"
    assert dory["captions"] == ["A dory on the beach", "Dories drawn up in the harbour"]  # from both articles
    assert dory["license"] == "CC BY-SA 4.0"
    assert dory["attribution"] == "Jane & Doe, via https://commons.example.org/wiki/File:Dory.jpg"
    assert dory["source"] == "wikipedia" and dory["url"].endswith("/256px-Dory.jpg")
    assert dory["attributes"]["page_title"] == "Boats" and dory["attributes"]["kind"] == "figure"
    assert samples["File:Trawler.jpg"]["caption"] == "A trawler at dawn"
    assert samples["File:Harbour.jpg"]["caption"] == "The old harbour"
    gull = samples["File:Gull.jpg"]
    assert gull["caption"] == "A gull & a mast" and gull["license"] is None
    assert gull["url"] == f"http://127.0.0.1:{server.port}/images/thumb/c/cd/Gull.jpg/256px-Gull.jpg"


def test_unreachable_or_foreign_endpoint_is_a_clear_error(tmp_path, capsys):
    with LocalWebServer() as server:
        server.add("/not-a-wiki", Reply(200, b"<html>hello</html>", {"Content-Type": "text/html"}))
        args = [
            "wikipedia",
            "Boats",
            "--out",
            str(tmp_path / "o"),
            "--allow-network",
            "127.0.0.0/8",
            "--no-progress",
            "--endpoint",
            server.url("/not-a-wiki"),
        ]
        assert main(args) == 2
        assert "did not answer JSON" in capsys.readouterr().err
    assert main(["wikipedia", "--out", str(tmp_path / "o2")]) == 2
    assert main(["wikipedia", "X", "--out", str(tmp_path / "o3"), "--endpoint", "file:///etc/passwd"]) == 2
