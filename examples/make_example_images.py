"""Draws the example pictures in examples/images/ (kept in the repo; run again to regenerate them)."""

from pathlib import Path

from PIL import Image, ImageDraw

HERE = Path(__file__).parent / "images"


def sunset() -> Image.Image:
    img = Image.new("RGB", (480, 320))
    draw = ImageDraw.Draw(img)
    for y in range(200):  # sky: orange to purple
        t = y / 200
        draw.line([(0, y), (480, y)], fill=(int(250 - 120 * t), int(150 - 110 * t), int(60 + 100 * t)))
    draw.ellipse([190, 130, 290, 230], fill=(255, 220, 90))
    for y in range(200, 320):  # sea
        t = (y - 200) / 120
        draw.line([(0, y), (480, y)], fill=(int(30 + 20 * t), int(60 + 30 * t), int(120 + 40 * t)))
    return img


def shapes() -> Image.Image:
    img = Image.new("RGBA", (300, 300), (0, 0, 0, 0))  # transparent over black: llada --alpha drop|white|black
    draw = ImageDraw.Draw(img)
    draw.ellipse([20, 20, 140, 140], fill=(220, 40, 40, 255))
    draw.rectangle([160, 30, 280, 150], fill=(40, 80, 220, 255))
    draw.polygon([(150, 170), (60, 290), (240, 290)], fill=(40, 170, 70, 255))
    return img


if __name__ == "__main__":
    HERE.mkdir(exist_ok=True)
    sunset().save(HERE / "sunset.png", optimize=True)
    shapes().save(HERE / "shapes.png", optimize=True)
