"""Fonts on this machine and the characters each one really draws: the raw material of the glyph benchmark.

Discovery: matplotlib's bundled TTF faces (always there after a pip install) and the system's fonts (`fc-list` when
present, else the usual font folders). A face is one font in a file (a `.ttc` collection holds several). Faces are
grouped into families by name, with style words (Bold, Mono, Oblique, JP, ...) removed, because a benchmark must
split train and test by design, not by file: "DejaVu Sans Bold" and "DejaVu Sans Mono" are one family.

Coverage: a code point counts for a face only if the face maps it (its cmap), draws something (not an empty
outline), does not draw its fallback box (the bitmap of a code point no font maps, U+10FFFD), and draws a bitmap
that at most `MAX_SHARED_BITMAP` code points of the face share: a drawing shared by more is a placeholder or a set
of look-alikes that no model could tell apart (in DejaVu Sans, Latin A, Greek Alpha, Cyrillic A, Lisu A and the
mathematical sans-serif A: 111 of its 5,573 drawn code points, in 20 such groups). Whitespace, controls, private-use,
unassigned and combining code points never count. Coverage is cached per face file.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import unicodedata
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import matplotlib
from fontTools.ttLib import TTCollection, TTFont
from PIL import Image, ImageDraw, ImageFont
from tqdm.auto import tqdm

FONT_SUFFIXES = (".ttf", ".otf", ".ttc")
SYSTEM_FONT_FOLDERS = ("/usr/share/fonts", "/usr/local/share/fonts", "~/.local/share/fonts", "~/.fonts")
#: Name prefixes of faces that do not draw the characters they map: placeholder boxes (LastResort), TeX encodings
#: where the cmap's letters are other symbols (Computer Modern: cmr10, cmsy10, ...), non-Unicode and size-variant STIX.
EXCLUDED_FACES = ("LastResort", "cm", "STIXNonUnicode", "STIXSize")
STYLE_WORDS = frozenset(
    "bold italic oblique regular mono light medium book condensed display jp csur upper demi semibold".split()
)
#: A bitmap drawn for more code points than this is a placeholder, not a character: none of them counts.
MAX_SHARED_BITMAP = 4
_COVERAGE_VERSION = 2  # bump when the coverage rules change, so that cached coverage is recomputed
_FALLBACK_CODE_POINT = 0x10FFFD  # plane 16 private use: mapped by no font, so every face draws its fallback for it
_PROBE_SIZE = 24


@dataclass(frozen=True)
class Face:
    """One font face: `path` and `index` (within a collection file), its `name` and `family` (style words removed)."""

    path: str
    index: int
    name: str
    family: str

    def pil_font(self, size: int) -> ImageFont.FreeTypeFont:
        # BASIC layout: one glyph at a time, no shaping (raqm fails on some isolated code points).
        return ImageFont.truetype(self.path, size, index=self.index, layout_engine=ImageFont.Layout.BASIC)

    @cached_property
    def fingerprint(self) -> str:
        """What the caches are keyed by: file name, face index, size and modification time (a changed file)."""
        stat = os.stat(self.path)
        return f"{os.path.basename(self.path)}:{self.index}:{stat.st_size}:{int(stat.st_mtime)}"

    @cached_property
    def design_key(self) -> int:
        """A 32-bit key of the face's own random streams: from its file name, face index and size, not the time the
        file was installed (which `fingerprint` holds), so that the same font renders the same task everywhere."""
        name = f"{os.path.basename(self.path)}:{self.index}:{os.stat(self.path).st_size}"
        return int.from_bytes(hashlib.sha1(name.encode()).digest()[:4], "little")


def discover_faces(include_system: bool = True) -> list[Face]:
    """matplotlib's bundled faces first, then the system's when `include_system`; a face name appears once."""
    paths = sorted((Path(matplotlib.get_data_path()) / "fonts" / "ttf").glob("*.ttf"))
    if include_system:
        paths += _system_font_files()
    faces, seen = [], set()
    for path in paths:
        for face in _faces_in(path):
            if face.name.startswith(EXCLUDED_FACES) or path.name.startswith(EXCLUDED_FACES):
                continue
            if face.name not in seen:  # a face installed twice (matplotlib's DejaVu and the system's): keep the first
                seen.add(face.name)
                faces.append(face)
    return faces


def _system_font_files() -> list[Path]:
    if shutil.which("fc-list"):
        listing = subprocess.run(["fc-list", "--format", "%{file}\n"], capture_output=True, text=True, check=False)
        files = {Path(line) for line in listing.stdout.splitlines() if line.lower().endswith(FONT_SUFFIXES)}
    else:
        files = set()
        for folder in SYSTEM_FONT_FOLDERS:
            root = Path(folder).expanduser()
            if root.is_dir():
                files.update(p for p in root.rglob("*") if p.suffix.lower() in FONT_SUFFIXES)
    return sorted(files)


def _faces_in(path: Path) -> list[Face]:
    try:
        fonts = _open(path)
    except Exception:  # a broken or unsupported font file is skipped, not fatal
        return []
    faces = []
    for index, font in enumerate(fonts):
        names = font["name"]
        name = names.getDebugName(4) or names.getDebugName(1) or path.stem
        family = names.getDebugName(16) or names.getDebugName(1) or path.stem
        faces.append(Face(str(path), index, name, family_key(family)))
    # All faces of a collection are one design (e.g. WenQuanYi Micro Hei and its Mono variant).
    return [Face(f.path, f.index, f.name, faces[0].family) for f in faces]


def _open(path: Path) -> list[TTFont]:
    if path.suffix.lower() == ".ttc":
        return TTCollection(str(path), lazy=True).fonts
    return [TTFont(str(path), lazy=True)]


def family_key(family_name: str) -> str:
    """'DejaVu Sans Mono' -> 'DejaVu Sans', 'Unifont-JP' -> 'Unifont': the family name without style words."""
    words = family_name.replace("-", " ").split()
    kept = [word for word in words if word.lower() not in STYLE_WORDS]
    return " ".join(kept or words)


def is_candidate(code_point: int) -> bool:
    """A code point that can be a class: a visible, assigned, non-combining, non-private character."""
    category = unicodedata.category(chr(code_point))
    return category[0] not in "ZCM"


def face_coverage(face: Face, cache_dir: Path | None = None) -> frozenset[int]:
    """The code points `face` really draws (see the module docstring); cached in `cache_dir` when given."""
    cache_file = None
    if cache_dir is not None:
        digest = hashlib.sha1(f"{face.fingerprint}:v{_COVERAGE_VERSION}".encode()).hexdigest()[:16]
        cache_file = Path(cache_dir) / "coverage" / f"{digest}.json"
        if cache_file.is_file():
            return frozenset(json.loads(cache_file.read_text()))
    font = _open(Path(face.path))[face.index]
    mapped = sorted(cp for cp in (font.getBestCmap() or {}) if is_candidate(cp))
    pil_font = face.pil_font(_PROBE_SIZE)
    canvas = Image.new("L", (2 * _PROBE_SIZE, 2 * _PROBE_SIZE))
    fallback = _mask_bytes(pil_font, _FALLBACK_CODE_POINT, canvas)
    drawings: dict[bytes, list[int]] = {}
    for code_point in mapped:
        drawn = _mask_bytes(pil_font, code_point, canvas)
        if drawn is not None and drawn != fallback:
            drawings.setdefault(drawn, []).append(code_point)
    covered = sorted(
        cp for code_points in drawings.values() if len(code_points) <= MAX_SHARED_BITMAP for cp in code_points
    )
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        partial = cache_file.with_suffix(f".partial-{os.getpid()}")
        partial.write_text(json.dumps(covered))
        os.replace(partial, cache_file)  # atomic: a reader never sees half a file
    return frozenset(covered)


def coverage_by_face(faces: list[Face], cache_dir: Path | None = None) -> dict[Face, frozenset[int]]:
    return {face: face_coverage(face, cache_dir) for face in tqdm(faces, desc="font coverage", leave=False)}


def _mask_bytes(font: ImageFont.FreeTypeFont, code_point: int, canvas: Image.Image) -> bytes | None:
    """The glyph drawn at a fixed place on `canvas` (cleared first), as bytes; None when it draws nothing."""
    draw = ImageDraw.Draw(canvas)
    draw.rectangle((0, 0, *canvas.size), fill=0)
    try:
        draw.text((_PROBE_SIZE // 2, _PROBE_SIZE // 4), chr(code_point), font=font, fill=255)
    except (OSError, ValueError, RuntimeError):
        return None
    return canvas.tobytes() if canvas.getbbox() is not None else None
