"""One image's work, the same under Ray and in a ``--shard``: :func:`prepare` (hash, skip what is done, the bundle's
``preprocessing``), :class:`Segmenter` (the bundle's network, inferer and postprocessing, built once) and
:func:`finish` (:func:`~iternet_monai.biomarkers.measure_image`, the maps and the result written atomically).

Stages pass rows (dicts of plain values) so that Ray Data can stream them; the arrays travel pickled in
``payload``, which gives rows of any image size, and skipped or failed rows, one schema. Every stage catches the
errors of its image and turns them into a failed row with one reason, so one bad image never stops the rest.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import pickle
from typing import Any

from iternet_monai.cohort.manifest import CohortItem
from iternet_monai.cohort.store import CohortFolder
from iternet_monai.utils.files import file_sha256

__all__ = ["CohortSettings", "preprocessing", "prepare", "Segmenter", "finish", "failure_reason"]


@dataclasses.dataclass(frozen=True)
class CohortSettings:
    """What a cohort run computes with: the pipeline's overrides and the quality rules. :meth:`output_settings` are
    the ones that change an image's results; with the weights' sha256 they key every result.

    Args:
        output_dir: the cohort folder.
        ckpt_path: the weights (a ``model.pt``).
        device: ``cpu`` or ``cuda`` (a GPU per worker).
        mode: the inferer's mode (``auto``: sliding window on CUDA, whole image on a CPU).
        tta: flip averaging.
        backend: ``auto``, ``pytorch`` or ``onnxruntime``.
        max_pixels: photographs of more pixels fail.
        rules: the quality rules (``--qc``), as ``{measure: {limit: value}}``.
    """

    output_dir: str
    ckpt_path: str
    device: str = "cpu"
    mode: str = "auto"
    tta: bool = False
    backend: str = "auto"
    max_pixels: int = 16777216
    rules: tuple[tuple[str, tuple[tuple[str, float | None], ...]], ...] = ()

    def overrides(self) -> dict[str, Any]:
        """The overrides of ``inference.json`` (:func:`~iternet_monai.engines.load_pipeline`)."""
        options = {"ckpt_path": self.ckpt_path, "device": self.device, "mode": self.mode, "tta": self.tta}
        return {**options, "backend": self.backend}

    def quality_rules(self) -> dict:
        from iternet_monai.biomarkers.quality import DEFAULT_RULES, QualityRule

        return {**DEFAULT_RULES, **{name: QualityRule(**dict(limits)) for name, limits in self.rules}}

    def output_settings(self, weights_sha256: str) -> dict[str, Any]:
        """Everything that changes an image's outputs: the weights, the resolved inferer and backend, the
        threshold and the quality rules."""
        from iternet_monai.inferers import resolve_backend, resolve_mode

        rules = {name: dataclasses.asdict(rule) for name, rule in self.quality_rules().items()}
        return {
            "weights_sha256": weights_sha256,
            "mode": resolve_mode(self.mode, self.device),
            "backend": resolve_backend(self.backend, self.device),
            "tta": self.tta,
            "device_type": self.device.split(":")[0],
            "max_pixels": self.max_pixels,
            "rules": rules,
        }


def result_key(image_sha256: str, settings: dict[str, Any]) -> str:
    """The key of one image's results: its bytes and everything that changes its outputs (the run's settings and
    the image's pixel size)."""
    text = json.dumps({"image_sha256": image_sha256, **settings}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def failure_reason(error: BaseException) -> str:
    """One line for a failed image: the message of the input error in ``error``'s chain (MONAI wraps them), or the
    error's own last line with its type."""
    from iternet_monai.utils.errors import find_input_error

    found = find_input_error(error)
    detail = getattr(error, "detail", None)  # FastAPI's HTTPException, where MONAI Label's environment has it
    message = str(found if found is not None else detail if detail is not None else error).strip()
    line = message.splitlines()[-1] if message else ""
    return line if found is not None or detail is not None else f"{type(error).__name__}: {line}".rstrip(": ")


@functools.lru_cache(maxsize=4)
def preprocessing(max_pixels: int):
    """The bundle's ``preprocessing`` with the run's ``max_pixels``, parsed once per process."""
    from monai.bundle import ConfigParser

    from iternet_monai.utils.files import BUNDLE_DIR

    parser = ConfigParser()
    parser.read_config(str(BUNDLE_DIR / "configs" / "inference.json"))
    parser["max_pixels"] = max_pixels
    return parser.get_parsed_content("preprocessing")


def _row(item: CohortItem, status: str, reason: str = "", key: str = "", payload: bytes = b"") -> dict[str, Any]:
    return {"id": item.id, "status": status, "reason": reason, "key": key, "payload": payload}


def prepare(item: CohortItem, settings: dict[str, Any], transform, folder: CohortFolder) -> dict[str, Any]:
    """The first stage (a CPU task): hash the photograph; a row ``done`` when its results under the same key exist,
    else the bundle's ``preprocessing`` of it (the checks of a missing, unreadable, grayscale or oversized
    photograph) as a ``todo`` row, or a ``failed`` one.

    Args:
        item: the image.
        settings: :meth:`CohortSettings.output_settings`.
        transform: the bundle's ``preprocessing`` (:func:`preprocessing`).
        folder: the cohort folder.
    """
    try:
        key = result_key(file_sha256(item.path), {**settings, "mm_per_pixel": item.mm_per_pixel})
    except OSError as err:
        return _row(item, "failed", f"{item.path}: cannot read the photograph ({err.strerror or err})")
    if folder.done_key(item.id) == key:
        return _row(item, "done", key=key)
    try:
        data = transform({"image": item.path})
    except Exception as err:
        reason = failure_reason(err)
        return _row(item, "failed", reason if reason.startswith(item.path) else f"{item.path}: {reason}", key)
    return _row(item, "todo", key=key, payload=pickle.dumps(data["image"]))


class Segmenter:
    """The second stage (a Ray actor, or once in a shard): the bundle's network (built once), inferer and
    postprocessing run by MONAI's ``SupervisedEvaluator``, as ``inference.json`` runs them, on each ``todo`` row.

    Args:
        settings: the run's settings.
    """

    def __init__(self, settings: CohortSettings) -> None:
        from iternet_monai.engines import load_pipeline

        pipeline = load_pipeline(**settings.overrides())
        self.parts = {k: pipeline.get_parsed_content(k) for k in ("device", "network", "inferer", "postprocessing")}
        self.amp = pipeline.get_parsed_content("evaluator#amp")
        self.amp_kwargs = pipeline.get_parsed_content("evaluator#amp_kwargs")

    def maps(self, image) -> tuple:
        """(probability, mask, photograph) of one preprocessed image, as the bundle's writers receive them."""
        from monai.data import DataLoader
        from monai.engines import SupervisedEvaluator

        from iternet_monai.engines import run_evaluator
        from iternet_monai.handlers.vessel_map_writer import vessel_maps

        loader = DataLoader([{"image": image}], batch_size=1, num_workers=0)
        evaluator = SupervisedEvaluator(
            device=self.parts["device"],
            val_data_loader=loader,
            network=self.parts["network"],
            inferer=self.parts["inferer"],
            postprocessing=self.parts["postprocessing"],
            amp=self.amp,
            amp_kwargs=self.amp_kwargs,
        )
        run_evaluator(evaluator)
        return tuple(vessel_maps(evaluator.state.output[0]))

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        if row["status"] != "todo":
            return row
        try:
            payload = pickle.dumps(self.maps(pickle.loads(row["payload"])))
        except Exception as err:
            return {**row, "status": "failed", "reason": f"segmentation failed: {failure_reason(err)}", "payload": b""}
        return {**row, "payload": payload}


def finish(row: dict[str, Any], item: CohortItem, settings: CohortSettings, folder: CohortFolder) -> dict[str, Any]:
    """The last stage (a CPU task): measure a segmented row with :func:`~iternet_monai.biomarkers.measure_image`
    and write its maps and result, or write a failed row's reason; returns the row without its arrays.

    Args:
        row: the segmented row.
        item: its image.
        settings: the run's settings.
        folder: the cohort folder.
    """
    if row["status"] == "todo":
        try:
            from iternet_monai.biomarkers import measure_image

            probability, mask, photo = pickle.loads(row["payload"])
            result = measure_image(
                item.id, mask, photo=photo, probability=probability, mm_per_pixel=item.mm_per_pixel,
                rules=settings.quality_rules(),
            )  # fmt: skip
            folder.save_done(item, row["key"], (probability, mask, photo), result)
            row = {**row, "status": "segmented", "reason": result.quality["quality"]}
        except Exception as err:
            row = {**row, "status": "failed", "reason": f"{item.path}: measuring failed: {failure_reason(err)}"}
    if row["status"] == "failed":
        folder.save_failure(item, row["reason"])
    return {**row, "payload": b""}
