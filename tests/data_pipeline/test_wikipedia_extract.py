"""Finding captioned images in MediaWiki HTML (current and legacy markup), cleaning captions, URLs."""

from __future__ import annotations

import pytest
from bs4 import BeautifulSoup

from data_pipeline.sources.wikipedia import clean_caption_html, extract_images, thumbnail_url, usable

UP = "//upload.wikimedia.org/wikipedia/commons"

CURRENT = f"""
<div class="mw-content-ltr mw-parser-output" lang="en" dir="ltr">
<table class="infobox vcard"><tbody>
<tr><th colspan="2" class="infobox-above">Fishing boat</th></tr>
<tr><td colspan="2" class="infobox-image"><span class="mw-default-size" typeof="mw:File/Frameless">
<a href="/wiki/File:Trawler_at_sea.jpg" class="mw-file-description"><img alt="A trawler" src="{UP}/thumb/1/1a/Trawler_at_sea.jpg/250px-Trawler_at_sea.jpg" decoding="async" width="250" height="167" class="mw-file-element" data-file-width="3000" data-file-height="2000" /></a></span>
<div class="infobox-caption">A trawler off the coast</div></td></tr>
<tr><th>Flag</th><td><span typeof="mw:File"><a href="/wiki/File:Flag_of_Norway.svg" class="mw-file-description"><img src="{UP}/thumb/d/d9/Flag_of_Norway.svg/23px-Flag_of_Norway.svg.png" width="23" height="17" class="mw-file-element" data-file-width="1100" data-file-height="800" /></a></span> Norway</td></tr>
</tbody></table>
<p>Text about boats.</p>
<figure class="mw-default-size" typeof="mw:File/Thumb"><a href="/wiki/File:Dory.jpg" class="mw-file-description"><img src="{UP}/thumb/2/2b/Dory.jpg/220px-Dory.jpg" decoding="async" width="220" height="147" class="mw-file-element" data-file-width="1024" data-file-height="683" /></a><figcaption>A <a href="/wiki/Dory">dory</a> on the beach&nbsp;&amp; nets<sup id="cite_ref-3" class="reference"><a href="#cite_note-3">&#91;3&#93;</a></sup>.</figcaption></figure>
<figure typeof="mw:File/Frame"><a href="/wiki/File:Kayak.png" class="mw-file-description"><img src="{UP}/5/5c/Kayak.png" width="300" height="200" class="mw-file-element" data-file-width="300" data-file-height="200" /></a><figcaption>Sea kayak <i>(modern)</i>[citation needed]</figcaption></figure>
<figure typeof="mw:File/Thumb"><a href="/wiki/File:Tiny.jpg" class="mw-file-description"><img src="{UP}/thumb/7/7e/Tiny.jpg/60px-Tiny.jpg" width="60" height="40" class="mw-file-element" data-file-width="60" data-file-height="40" /></a><figcaption>Too small an original</figcaption></figure>
<ul class="gallery mw-gallery-traditional">
<li class="gallerybox" style="width: 155px"><div class="thumb" style="width: 150px; height: 150px;"><span typeof="mw:File"><a href="/wiki/File:Canoe.jpg" class="mw-file-description"><img alt="" src="{UP}/thumb/3/3c/Canoe.jpg/120px-Canoe.jpg" width="120" height="80" class="mw-file-element" data-file-width="1200" data-file-height="800" /></a></span></div><div class="gallerytext">A canoe &lt;wooden&gt;</div></li>
<li class="gallerybox" style="width: 155px"><div class="thumb"><span typeof="mw:File"><a href="/wiki/File:Raft.jpg" class="mw-file-description"><img src="{UP}/thumb/4/4d/Raft.jpg/120px-Raft.jpg" width="120" height="80" class="mw-file-element" data-file-width="1200" data-file-height="800" /></a></span></div><div class="gallerytext"></div></li>
</ul>
<div role="navigation" class="navbox"><figure typeof="mw:File"><a href="/wiki/File:Anchor.jpg"><img src="{UP}/thumb/8/8a/Anchor.jpg/120px-Anchor.jpg" width="120" height="120" data-file-width="900" data-file-height="900"/></a><figcaption>Navbox art</figcaption></figure></div>
</div>
"""

LEGACY = f"""
<div class="mw-parser-output">
<div class="thumb tright"><div class="thumbinner" style="width:222px;"><a href="/wiki/File:Old_harbour.jpg" class="image"><img alt="" src="{UP}/thumb/0/0a/Old_harbour.jpg/220px-Old_harbour.jpg" decoding="async" width="220" height="147" class="thumbimage" data-file-width="2048" data-file-height="1365" /></a>
<div class="thumbcaption"><div class="magnify"><a href="/wiki/File:Old_harbour.jpg" class="internal" title="Enlarge"></a></div>The <b>old</b> harbour &amp;amp; its   boats<sup id="cite_ref-1" class="reference"><a href="#cite_note-1">[1]</a></sup> ( 1890 ) .<sup class="noprint Inline-Template"><i>[<a href="/wiki/Wikipedia:Citation_needed">citation needed</a>]</i></sup></div></div></div>
<div class="thumb tleft"><div class="thumbinner"><a href="/wiki/File:Lighthouse.svg" class="image"><img src="{UP}/thumb/9/9f/Lighthouse.svg/180px-Lighthouse.svg.png" width="180" height="240" class="thumbimage" data-file-width="120" data-file-height="160" /></a><div class="thumbcaption">Lighthouse diagram<script>alert(1)</script></div></div></div>
<div class="thumb"><div class="thumbinner"><a href="/wiki/File:Icon.png" class="image"><img src="{UP}/e/e0/Icon.png" width="20" height="20" data-file-width="512" data-file-height="512"/></a><div class="thumbcaption">An icon shown small</div></div></div>
</div>
"""


def test_current_markup_figures_gallery_and_infobox():
    found = extract_images(CURRENT, "Fishing boat")
    by_title = {img.file_title: img for img in found}
    kept = [img.file_title for img in found if usable(img, min_display=40, min_original=100)]
    assert kept == ["File:Trawler at sea.jpg", "File:Dory.jpg", "File:Kayak.png", "File:Canoe.jpg"]
    assert by_title["File:Trawler at sea.jpg"].kind == "infobox"
    assert by_title["File:Trawler at sea.jpg"].caption == "A trawler off the coast"
    assert by_title["File:Dory.jpg"].caption == "A dory on the beach & nets."
    assert by_title["File:Dory.jpg"].kind == "figure" and by_title["File:Dory.jpg"].file_width == 1024
    assert by_title["File:Kayak.png"].caption == "Sea kayak (modern)"
    assert by_title["File:Canoe.jpg"].caption == "A canoe <wooden>" and by_title["File:Canoe.jpg"].kind == "gallery"
    assert by_title["File:Raft.jpg"].caption == ""  # uncaptioned gallery image: not usable
    assert "File:Anchor.jpg" not in by_title  # navbox decoration
    assert not usable(by_title["File:Flag of Norway.svg"], 40, 100)  # an icon
    assert not usable(by_title["File:Tiny.jpg"], 40, 100)


def test_legacy_thumbnail_markup():
    found = extract_images(LEGACY, "Harbour")
    assert [img.file_title for img in found] == ["File:Old harbour.jpg", "File:Lighthouse.svg", "File:Icon.png"]
    old, svg, icon = found
    assert old.kind == "thumb" and old.caption == "The old harbour & its boats (1890)."
    assert svg.caption == "Lighthouse diagram"  # script text dropped
    assert usable(svg, 40, 100) and not usable(icon, 40, 100)


def test_uncaptioned_infobox_image_falls_back_to_alt_then_title():
    html = f"""<table class="infobox"><tr><td class="infobox-image"><span typeof="mw:File"><a href="/wiki/File:A.jpg">
    <img src="{UP}/thumb/a/a1/A.jpg/200px-A.jpg" width="200" height="150" data-file-width="800" data-file-height="600"/></a></span></td></tr>
    <tr><td><span typeof="mw:File"><a href="/wiki/File:B.jpg"><img alt="The B building" src="{UP}/thumb/b/b1/B.jpg/200px-B.jpg" width="200" height="150"/></a></span></td></tr></table>"""
    found = extract_images(html, "Lighthouse of Alexandria")
    assert [(i.file_title, i.caption) for i in found] == [
        ("File:A.jpg", "Lighthouse of Alexandria"),
        ("File:B.jpg", "The B building"),
    ]


def test_caption_cleaning():
    def clean(fragment):
        return clean_caption_html(BeautifulSoup(f"<div>{fragment}</div>", "html.parser").div)

    assert clean("Boats<sup class='reference'>[12]</sup> at rest[a][note 3] , 1900") == "Boats at rest, 1900"
    assert clean("Caf&eacute; &#8211; terrace &amp;amp; more") == "Café – terrace & more"
    assert clean("<style>.x{}</style>Line<br/>break\n\t  here") == "Line break here"
    assert clean("[when?] Harbor [according to whom?]") == "Harbor"
    assert clean("Vessel [1 of 3]") == "Vessel [1 of 3]"  # not a citation mark
    assert clean_caption_html(None) == ""


@pytest.mark.parametrize(
    "src, width, file_width, expected",
    [
        (
            f"{UP}/thumb/1/1a/Boat.jpg/220px-Boat.jpg",
            512,
            4000,
            "https://upload.wikimedia.org/wikipedia/commons/thumb/1/1a/Boat.jpg/512px-Boat.jpg",
        ),
        (
            f"{UP}/thumb/1/1a/Boat.jpg/220px-Boat.jpg",
            512,
            300,
            "https://upload.wikimedia.org/wikipedia/commons/1/1a/Boat.jpg",
        ),  # original is narrower: take it
        (
            f"{UP}/thumb/9/9f/Map.svg/220px-Map.svg.png",
            512,
            300,
            "https://upload.wikimedia.org/wikipedia/commons/thumb/9/9f/Map.svg/512px-Map.svg.png",
        ),  # vector: a PNG
        (
            f"{UP}/thumb/5/5d/Scan.tif/lossy-page1-220px-Scan.tif.jpg",
            400,
            9000,
            "https://upload.wikimedia.org/wikipedia/commons/thumb/5/5d/Scan.tif/400px-Scan.tif.jpg",
        ),
        (f"{UP}/5/5c/Kayak.png", 512, 300, "https://upload.wikimedia.org/wikipedia/commons/5/5c/Kayak.png"),
        (
            "/images/thumb/c/cd/Gull.jpg/120px-Gull.jpg",
            512,
            None,
            "https://wiki.example.org/images/thumb/c/cd/Gull.jpg/512px-Gull.jpg",
        ),
    ],
)
def test_thumbnail_urls(src, width, file_width, expected):
    assert thumbnail_url(src, "https://wiki.example.org/w/api.php", width, file_width) == expected
