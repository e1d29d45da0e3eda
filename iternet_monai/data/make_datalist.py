"""Make a datalist for a dataset folder: photographs paired with their labels and FoV masks by the public datasets'
names or the user's name patterns, every file checked (the ``iternet-monai make-datalist`` command)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from iternet_monai.data.datalist import LABELLED_LISTS, PATH_KEYS, DatalistError, check_files, image_files
from iternet_monai.utils.files import PHOTO_SUFFIXES, file_stem, file_suffix

__all__ = ["FIRST_OBSERVER_PATTERNS", "OTHER_OBSERVER_PATTERNS", "MASK_PATTERNS", "make_datalist"]

# Label and FoV-mask names of the public datasets, as file-stem patterns whose "*" is the case's name: DRIVE
# (21_manual1, 21_training_mask), CHASE_DB1 (Image_01L_1stHO), STARE (im0001.ah), HRF (01_dr_manual).
FIRST_OBSERVER_PATTERNS = ("*_manual1", "*_1stHO", "*.ah", "*_manual", "*_label", "*_labels", "*_gt", "*_vessels")
OTHER_OBSERVER_PATTERNS = ("*_manual2", "*_2ndHO", "*.vk")
MASK_PATTERNS = ("*_mask", "*_fov")


def make_datalist(
    dataset_dir: str | Path,
    images: str | None = None,
    labels: str | None = None,
    masks: str | None = None,
    test: Sequence[str] = (),
    label_pattern: str | None = None,
    mask_pattern: str | None = None,
) -> tuple[dict, list[str]]:
    """Build a datalist for a dataset folder and check every file it lists. Returns the datalist (paths relative
    to ``dataset_dir``) and lines that say which files were paired and how.

    ``images`` is a subfolder (default ``images`` where it exists, else ``dataset_dir`` itself). Labels and masks
    are taken from their folders or, without one, from the image folder (a flat layout such as CHASE_DB1's),
    recognised by ``label_pattern`` / ``mask_pattern`` (``*_1stHO``, ``*_manual1.gif``: ``*`` stands for the
    image's name) or the public datasets' names (:data:`FIRST_OBSERVER_PATTERNS`, :data:`MASK_PATTERNS`; other
    observers' labels are left out). A file pairs with an image whose name has the same whole parts (``a_5``
    never pairs with ``a_50_label``). Images in ``test`` (names without suffix) go to ``testing``, the rest to
    ``training`` and ``validation``; without labels every image goes to ``testing``.
    """
    root = Path(dataset_dir).expanduser()
    if not root.is_dir():
        raise DatalistError(f"dataset folder {root} does not exist")
    folders = _folders(root, images, labels, masks)
    image_folder = folders["image"]
    in_image_folder = image_files(image_folder)
    roles, notes = {}, []
    for kind, pattern in (("label", label_pattern), ("mask", mask_pattern)):
        roles[kind], note = _role_files(kind, folders[kind], image_folder, in_image_folder, pattern)
        notes.append(note)
    recognised = set(_matching(in_image_folder, FIRST_OBSERVER_PATTERNS + OTHER_OBSERVER_PATTERNS + MASK_PATTERNS))
    recognised |= set(roles["label"]) | set(roles["mask"])
    photographs = [p for p in in_image_folder if p not in recognised]
    if not photographs:
        raise DatalistError(f"no images ({', '.join(PHOTO_SUFFIXES)}) in {image_folder} besides labels and masks")
    others = recognised - set(roles["label"]) - set(roles["mask"])
    if others:
        example = min(others).name
        notes.append(f"left out {len(others)} files of {image_folder} named like other labels or masks, e.g. {example}")
    unknown = set(test) - {file_stem(p) for p in photographs}
    if unknown:
        raise DatalistError(f"test images not found in {image_folder}: {', '.join(sorted(unknown))}")
    pairs, unused = _pair_roles(photographs, roles)
    notes += unused
    entries = [{"image": image} | {kind: pairs[kind][image] for kind in pairs} for image in photographs]
    problems = check_files(entries, PATH_KEYS, required=("image", "label") if "label" in pairs else ("image",))[1]
    if problems:
        raise DatalistError(f"{len(problems)} bad file(s):\n" + "\n".join(f"  {p}" for p in problems))
    content = _split(entries, root, test, "label" in pairs, notes)
    if "label" not in pairs:
        notes.append(f"no label files found in {image_folder}: every image goes to 'testing' (pass --labels)")
    return content, notes


def _folders(root: Path, images: str | None, labels: str | None, masks: str | None) -> dict[str, Path | None]:
    """The image folder (``images``, else ``images`` where it exists, else ``root``) and the label and mask folders
    (None: beside the images), each checked to exist."""
    folders = {
        "image": root / images if images else (root / "images" if (root / "images").is_dir() else root),
        "label": root / labels if labels else None,
        "mask": root / masks if masks else None,
    }
    for kind, folder in folders.items():
        if folder is not None and not folder.is_dir():
            raise DatalistError(f"{kind} folder {folder} does not exist")
    return folders


def _pair_roles(
    photographs: Sequence[Path], roles: Mapping[str, Mapping[Path, str]]
) -> tuple[dict[str, dict[Path, Path]], list[str]]:
    """Each role's (label, mask) file per photograph (:func:`_pair`), and a line per file of no photograph; raises
    naming every photograph without a unique match."""
    problems, unused, pairs = [], [], {}
    for kind, candidates in roles.items():
        if candidates:
            pairs[kind], unpaired = _pair(photographs, candidates, kind)
            problems += unpaired
            unused += [
                f"{file}: {kind} file of no image" for file in sorted(set(candidates) - set(pairs[kind].values()))
            ]
    if problems:
        raise DatalistError(
            f"{len(problems)} image(s) without a unique match (give --label-pattern / --mask-pattern for other "
            "names):\n" + "\n".join(f"  {p}" for p in problems + unused)
        )
    return pairs, unused


def _split(entries: Sequence[dict], root: Path, test: Sequence[str], labelled: bool, notes: list[str]) -> dict:
    """The datalist: entries (paths relative to ``root``) in ``testing`` when named in ``test`` or unlabelled, else
    in ``training`` and ``validation``; a line per entry added to ``notes``."""
    content: dict = {"training": [], "validation": [], "testing": []}
    for entry in entries:
        relative = {kind: path.relative_to(root).as_posix() for kind, path in entry.items()}
        notes.append("  " + "  ".join(f"{kind} {path}" if kind != "image" else path for kind, path in relative.items()))
        for name in ["testing"] if file_stem(entry["image"]) in test or not labelled else LABELLED_LISTS:
            content[name].append(relative)
    return {k: v for k, v in content.items() if v}


def _pattern_regex(pattern: str) -> re.Pattern:
    """A ``*`` name pattern as a regular expression whose group 1 is what ``*`` matched (case-insensitive)."""
    if pattern.count("*") != 1:
        raise DatalistError(f"name pattern '{pattern}' must hold exactly one '*' (the image's name), e.g. '*_1stHO'")
    before, after = pattern.split("*")
    return re.compile(f"{re.escape(before)}(.+){re.escape(after)}", re.IGNORECASE)


def _matching(files: Sequence[Path], patterns: Sequence[str]) -> dict[Path, str]:
    """The files whose name matches one of ``patterns`` (against the stem, or the whole name when the pattern has
    a suffix), each with its case name (what ``*`` matched)."""
    found = {}
    for pattern in patterns:
        regex, whole_name = _pattern_regex(pattern), bool(file_suffix(pattern))
        for file in files:
            match = regex.fullmatch(file.name if whole_name else file_stem(file))
            if match and file not in found:
                found[file] = match.group(1)
    return found


def _parts(name: str) -> tuple[str, ...]:
    """A name's whole parts: ``a_50`` -> ``('a', '50')``; ``img10`` is one part, so it never matches ``img1``."""
    return tuple(part.casefold() for part in re.split(r"[_\-. ]+", name) if part)


def _pair(images: Sequence[Path], candidates: Mapping[Path, str], kind: str) -> tuple[dict[Path, Path], list[str]]:
    """Pair images with label (or mask) files by case name: the same whole name parts, or, where that is unique
    both ways, one name extending the other by whole parts (DRIVE's ``21`` of ``21_manual1`` for ``21_training``).
    Returns the pairs and one line per image without a unique match."""
    names = {image: _parts(file_stem(image)) for image in images}
    keys = {file: _parts(key) for file, key in candidates.items()}

    def extends(a: tuple, b: tuple) -> bool:
        return a != b and (a[: len(b)] == b or b[: len(a)] == a)

    pairs, problems = {}, []
    for image, name in names.items():
        found = [file for file, key in keys.items() if key == name]
        if not found:
            found = [file for file, key in keys.items() if extends(key, name)]
            found = [f for f in found if sum(keys[f] == n or extends(keys[f], n) for n in names.values()) == 1]
        if len(found) == 1:
            pairs[image] = found[0]
        elif found:
            problems.append(f"{image}: several {kind} files match it: {', '.join(f.name for f in found)}")
        else:
            problems.append(f"{image}: no {kind} file matches it")
    for file in set(pairs.values()):
        users = [image.name for image, paired in pairs.items() if paired == file]
        if len(users) > 1:
            problems.append(f"{file}: one {kind} file matches several images: {', '.join(users)}")
    return pairs, problems


def _role_files(
    kind: str, folder: Path | None, image_folder: Path, in_image_folder: Sequence[Path], pattern: str | None
) -> tuple[dict[Path, str], str]:
    """The label (or mask) files of ``folder`` (default: beside the images), with their case names, and a line
    saying how they were found: by the user's ``pattern``, else by the public datasets' names (the first observer's,
    else another's), else, in a folder of their own, every file."""
    where = folder or image_folder
    files = in_image_folder if where == image_folder else image_files(where)
    if pattern:
        found = _matching(files, [pattern])
        if not found:
            raise DatalistError(f"no file in {where} matches the name pattern '{pattern}'")
        return found, f"{kind}s: {len(found)} files in {where} named {pattern}"
    choices = (FIRST_OBSERVER_PATTERNS, OTHER_OBSERVER_PATTERNS) if kind == "label" else (MASK_PATTERNS,)
    for patterns in choices:
        found = _matching(files, patterns)
        if found:
            used = ", ".join(p for p in patterns if _matching(list(found), [p]))
            return found, f"{kind}s: {len(found)} files in {where} named {used}"
    if folder is not None and where != image_folder and files:
        return {file: file_stem(file) for file in files}, f"{kind}s: every file of {where} ({len(files)})"
    if folder is not None:
        raise DatalistError(f"no {kind} files in {where}")
    return {}, f"{kind}s: none beside the images" + (" (FoV masks are derived at run time)" if kind == "mask" else "")
