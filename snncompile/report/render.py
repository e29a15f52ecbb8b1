"""Look at report.html as a person would: headless Chromium renders it to a PNG, or dumps its DOM.

Chromium is an optional system tool (Debian's ``chromium`` package, installed by
scripts/install.sh when apt-get is usable); ``chromium()`` says where it is, or None.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync")


def chromium() -> str | None:
    """The Chromium executable: $SNNCOMPILE_CHROMIUM, /usr/bin/chromium, or one on PATH."""
    for candidate in (os.environ.get("SNNCOMPILE_CHROMIUM"), CHROMIUM):
        if candidate and Path(candidate).is_file():
            return candidate
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _run(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    exe = chromium()
    if exe is None:
        raise FileNotFoundError("no Chromium found (apt-get install -y chromium)")
    with tempfile.TemporaryDirectory(prefix="snncompile-chromium-") as profile:
        return subprocess.run([exe, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True,
                              timeout=timeout, check=True)


def dump_dom(html_path: str | Path, timeout: float = 120) -> str:
    """The page's DOM after it loaded (scripts run), as Chromium serializes it."""
    return _run(["--dump-dom", Path(html_path).resolve().as_uri()], timeout).stdout.decode("utf-8")


def screenshot(html_path: str | Path, png_path: str | Path, width: int = 1200, height: int = 6000,
               crop: bool = True, timeout: float = 120) -> Path:
    """Render ``html_path`` at ``width`` × ``height`` pixels into ``png_path``; with ``crop``,
    the blank rows below the page's content are cut off."""
    png_path = Path(png_path).resolve()
    _run([f"--screenshot={png_path}", f"--window-size={width},{height}", Path(html_path).resolve().as_uri()],
         timeout)
    if crop:
        from PIL import Image, ImageChops

        with Image.open(png_path) as img:
            rgb = img.convert("RGB")
        box = ImageChops.difference(rgb, Image.new("RGB", rgb.size, rgb.getpixel((rgb.width - 1, rgb.height - 1))))
        bbox = box.getbbox()
        if bbox is not None:
            rgb.crop((0, 0, rgb.width, min(rgb.height, bbox[3] + 40))).save(png_path)
    return png_path


def main(argv: list[str] | None = None) -> int:
    """``python -m snncompile.report.render OUTDIR/report.html OUT.png``: render, print the PNG's path."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m snncompile.report.render", description=main.__doc__)
    p.add_argument("html")
    p.add_argument("png")
    p.add_argument("--width", type=int, default=1200)
    p.add_argument("--height", type=int, default=6000, help="window height before cropping (default 6000)")
    args = p.parse_args(argv)
    print(screenshot(args.html, args.png, args.width, args.height))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
