"""Input images: every bad file is one clear BadInput; odd but valid modes work."""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from PIL import Image

from llada_cli.io.images import BadInput, load_image, split_image_paths


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def huge_png_header(w: int, h: int) -> bytes:
    """A PNG whose header declares w x h pixels, with a tiny (invalid) body."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 10))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: d / "missing.png", "does not exist"),
        (lambda d: d, "is a folder"),
        (lambda d: (d / "empty.png").write_bytes(b"") and d / "empty.png" or d / "empty.png", "empty"),
        (lambda d: _write(d / "notes.png", b"this is text, not a picture\n"), "not an image"),
        (lambda d: _write(d / "cut.png", png_bytes(Image.new("RGB", (64, 64), (9, 9, 9)))[:60]), "truncated"),
        (lambda d: _write(d / "cut.jpg", _jpeg()[:300]), "truncated"),
        (lambda d: _write(d / "bomb.png", huge_png_header(20000, 20000)), "20000x20000"),
    ],
)
def test_bad_images_are_refused_with_a_clear_message(tmp_path, make, message):
    path = make(tmp_path)
    with pytest.raises(BadInput, match=message) as err:
        load_image(str(path))
    assert err.value.exit_code == 2


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


def _jpeg() -> bytes:
    buf = io.BytesIO()
    Image.effect_noise((128, 128), 50).convert("RGB").save(buf, "JPEG", quality=90)
    return buf.getvalue()


def test_urls_are_refused_without_touching_the_network():
    with pytest.raises(BadInput, match="URL"):
        load_image("https://example.com/cat.png")


@pytest.mark.parametrize(
    "mode, value, fmt, expected",
    [
        ("CMYK", (0, 255, 0, 0), "JPEG", None),
        ("I;16", 40000, "PNG", (155, 155, 155)),
        ("P", 3, "PNG", None),
        ("RGBA", (255, 0, 0, 0), "PNG", (255, 0, 0)),  # fully transparent: the stored colour (official)
        ("LA", (0, 255), "PNG", (0, 0, 0)),
    ],
)
def test_unusual_modes_become_rgb(tmp_path, mode, value, fmt, expected):
    path = tmp_path / f"img.{fmt.lower()}"
    Image.new(mode, (20, 10), value).save(path, fmt)
    loaded = load_image(str(path))
    assert loaded.rgb().mode == "RGB" and loaded.size == (20, 10)
    if expected:
        assert loaded.rgb().getpixel((3, 3)) == expected


def _transparent_files(tmp_path):
    """RGBA, LA and palette pictures whose transparent pixels store a colour (red, grey, a palette blue)."""
    rgba = Image.new("RGBA", (8, 8), (200, 10, 10, 0))
    rgba.putpixel((0, 0), (5, 6, 7, 255))
    la = Image.new("LA", (8, 8), (90, 0))
    la.putpixel((0, 0), (30, 128))
    pal = Image.new("P", (8, 8), 1)
    pal.putpalette([0, 0, 0, 20, 40, 250] + [0] * 762)
    pal.info["transparency"] = 1
    files = []
    for name, img in (("rgba", rgba), ("la", la), ("pal", pal)):
        img.save(tmp_path / f"{name}.png", transparency=1) if name == "pal" else img.save(
            tmp_path / f"{name}.png"
        )
        files.append(tmp_path / f"{name}.png")
    return files


def test_transparent_pictures_reach_the_model_as_the_official_convert_rgb_gives_them(tmp_path):
    # official rule: every caller does Image.open(path).convert("RGB"): alpha dropped, stored colours kept
    for path in _transparent_files(tmp_path):
        loaded = load_image(str(path))
        assert loaded.transparent
        official = Image.open(path).convert("RGB")
        assert loaded.rgb("drop").tobytes() == official.tobytes()


def test_alpha_white_and_black_composite(tmp_path):
    rgba = load_image(str(_transparent_files(tmp_path)[0]))
    assert rgba.rgb("white").getpixel((3, 3)) == (255, 255, 255)
    assert rgba.rgb("black").getpixel((3, 3)) == (0, 0, 0)
    assert rgba.rgb("white").getpixel((0, 0)) == (5, 6, 7)  # opaque pixels are untouched
    with pytest.raises(ValueError):
        rgba.rgb("grey")


def test_an_opaque_alpha_channel_is_not_transparency(tmp_path):
    Image.new("RGBA", (4, 4), (1, 2, 3, 255)).save(tmp_path / "opaque.png")
    loaded = load_image(str(tmp_path / "opaque.png"))
    assert not loaded.transparent and loaded.image.mode == "RGB"


def test_animated_gif_gives_its_first_frame_and_says_so(tmp_path):
    frames = [Image.new("RGB", (16, 16), c) for c in ((250, 0, 0), (0, 250, 0))]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    loaded = load_image(str(tmp_path / "a.gif"))
    assert loaded.animated and loaded.image.getpixel((1, 1))[0] > 200


def test_stdin_image_and_content_hash():
    data = png_bytes(Image.new("RGB", (8, 8), (1, 2, 3)))
    a, b = load_image("-", data), load_image("-", data)
    assert a.sha256 == b.sha256 and a.source == "-"


def test_typed_paths_are_found_in_a_message(tmp_path):
    (tmp_path / "cat.png").write_bytes(b"x")
    text, paths = split_image_paths(f"what is in {tmp_path / 'cat.png'} please, not {tmp_path / 'dog.png'}")
    assert paths == [str(tmp_path / "cat.png")]
    assert text == f"what is in please, not {tmp_path / 'dog.png'}"
