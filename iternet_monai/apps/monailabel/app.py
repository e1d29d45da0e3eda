"""The MONAI Label app of the IterNet bundle, installed by ``iternet-monai label-app`` (MONAI Label's environment only).

It is MONAI Label's stock ``monaibundle`` app (the same ``BundleInferTask`` and ``BundleTrainTask`` on the bundle's
own ``inference.json`` and ``train.json``) with what a clinician annotating in 3D Slicer needs and a bundle cannot
do by itself, because MONAI Label gives a bundle no hook there:

- requests about an image id that does not exist get 404 naming the id, and a label upload is checked when it
  arrives (unknown image 404, not an image 415, another size than its image 422) instead of breaking every later
  training;
- the label map's values are named (``vessel`` = 1) while the bundle's output has one channel;
- inference follows the shape of the weights in ``models/``: weights of another width copied in while the server
  runs are served at the next request, and weights that cannot be used at all get 503 naming the file and why (the
  server goes on, and a good file copied back is used again);
- the server answers other requests while an inference runs (:mod:`iternet_monai.apps.monailabel.endpoints`);
- one Train press runs one training (3D Slicer sends ``run_id: ""``, which would run ``train.json`` twice);
- training follows the shape of the weights it fine-tunes, skips bad labels with a warning naming each, validates
  the starting weights first so ``model.pt`` is replaced only by a better model on the same validation images (the
  bundle's training keeps the previous one as ``models/model_<its date>.pt``), fits minutes on a CPU, and reports
  its progress to Slicer's progress bar (the latest run's ``eval/<run>/train_stats.json``).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import sys
from pathlib import Path
from typing import Any

import torch
from fastapi import HTTPException
from monai.bundle import ConfigParser
from monailabel.config import settings
from monailabel.datastore.local import LocalDatastore
from monailabel.interfaces.app import MONAILabelApp
from monailabel.tasks.activelearning.first import First
from monailabel.tasks.activelearning.random import Random
from monailabel.tasks.infer.bundle import BundleInferTask
from monailabel.tasks.train.bundle import BundleTrainTask

from iternet_monai import __version__
from iternet_monai.apps.monailabel.endpoints import serve_inference_in_threads
from iternet_monai.data import check_files
from iternet_monai.engines.checkpoints import CheckpointError, iternet_for_weights, read_weights, weights_shape
from iternet_monai.engines.training import latest_stats
from iternet_monai.networks.iternet import WeightsShapeError

__all__ = ["BUNDLE_NAME", "LABELS", "VesselDatastore", "VesselInferTask", "VesselTrainTask", "IterNetApp"]

logger = logging.getLogger(__name__)

BUNDLE_NAME = "iternet"
# The values of the label map the bundle returns and trains on.
LABELS = {"vessel": 1}
# Where the bundle's training writes each run's folder, with its progress (train.json's output_dir and stats_file),
# which Slicer's progress bar reads.
RUNS_DIR = "eval"


class VesselDatastore(LocalDatastore):
    """MONAI Label's local datastore, with every label checked as it arrives: the image must exist (404), the
    label must load as the bundle loads it, PNG or NIfTI (415), and have its image's size (422)."""

    def save_label(self, image_id: str, label_filename: str, label_tag: str, label_info: dict[str, Any]) -> str:
        image = self.get_image_uri(image_id)
        if not image_id or not image or not os.path.isfile(image):
            raise HTTPException(status_code=404, detail=f"image '{image_id}' is not in the datastore")
        _, problems = check_files([{"label": label_filename}], keys=("label",), required=())
        if problems:
            why = problems[0].split(": ", 1)[1]
            raise HTTPException(status_code=415, detail=f"the label for '{image_id}' is not usable: {why}")
        _, problems = check_files([{"image": image, "label": label_filename}], keys=("image", "label"))
        if problems:
            why = "; ".join(p.split(": ", 1)[1] for p in problems)
            raise HTTPException(status_code=422, detail=f"the label for '{image_id}' does not fit its image: {why}")
        return super().save_label(image_id, label_filename, label_tag, label_info)


class VesselInferTask(BundleInferTask):
    """MONAI Label's bundle inference on the bundle's ``inference.json``, with the label map's values named and the
    network following the weights file.

    MONAI Label builds the network once, at start, and loads the weights file into a copy of it whenever the file's
    modification time changes: weights of another width then fail every inference (HTTP 500, the reason only in the
    log) until a restart, and with MONAI Label's non-strict loading, weights of another network would serve an
    untrained one. Here, whenever the file changes, the network is rebuilt for the new weights
    (:func:`~iternet_monai.engines.checkpoints.iternet_for_weights`), and a file that is no IterNet's weights is
    refused with 503 naming it and why; the next request looks at the file again."""

    def __init__(self, path: str, conf: dict[str, str]) -> None:
        super().__init__(path, conf)
        self.labels = dict(LABELS)
        self._served: tuple | None = None  # (path, mtime, size, inode) of the weights self.network was built for

    def _weights_path(self, data: dict | None) -> str | None:
        """The weights file MONAI Label loads for ``data``: the one the request names (``model_filename``, one of
        the bundle's ``models/*.pt``) when it exists, else ``models/model.pt``."""
        name = (data or {}).get("model_filename") if self._config.get("model_filename") else None
        name = name[0] if isinstance(name, (list, tuple)) and name else name
        chosen = os.path.join(os.path.dirname(self.path[0]), name) if isinstance(name, str) and name else ""
        return chosen if os.path.exists(chosen) else self.get_path()

    def _network_options(self) -> dict[str, Any]:
        """The arguments of the bundle's ``network_def`` but its weights, resolved on a copy of the config (MONAI
        Label's parser holds the network built at start under that id)."""
        parser = ConfigParser(copy.deepcopy(self.bundle_config.get()))
        options = parser.get_parsed_content(self.const.key_network_def(), instantiate=False).get_config()
        return {k: v for k, v in options.items() if not k.startswith("_") and k != "weights"}

    def _get_network(self, device, data):
        path = self._weights_path(data)
        if path and self.network is not None:  # PyTorch weights (without a network it is TorchScript's model.ts)
            stat = os.stat(path)
            served = (path, stat.st_mtime_ns, stat.st_size, stat.st_ino)
            if served != self._served:
                try:
                    self.network = iternet_for_weights(path, **self._network_options())
                except (CheckpointError, WeightsShapeError) as error:
                    detail = f"the model's weights cannot be used: {error}; copy IterNet weights (a model.pt) there"
                    raise HTTPException(status_code=503, detail=detail) from None
                self.clear_cache()
                self._served = served
        return super()._get_network(device, data)


class VesselTrainTask(BundleTrainTask):
    """MONAI Label's bundle training on the bundle's ``train.json``, made safe and practical (module docstring)."""

    def __call__(self, request: dict, datastore) -> dict:
        return super().__call__({**request, "run_id": request.get("run_id") or "run"}, datastore)

    def config(self) -> dict[str, Any]:
        options = super().config()
        options["model_filename"] = ["model.pt"]
        return options

    def _fetch_datalist(self, request: dict, datastore) -> list[dict]:
        items = super()._fetch_datalist(request, datastore)
        patch = self.bundle_config.get("patch_size", [128, 128])
        good, problems = check_files(items, keys=("image", "label"), min_size=patch, required=("image", "label"))
        for problem in problems:
            logger.warning(f"skipping a labelled image: {problem}")
        logger.info(f"training on {len(good)} of {len(items)} labelled image(s)")
        return good

    def _update_overrides(self, overrides: dict) -> dict:
        """The fine-tuning schedule, the network shape of the weights and validation of the starting weights (so
        that ``model.pt`` is replaced only by a better model)."""
        # the bundle's training writes to ./models and ./eval unless told: here, the bundle's own folders
        overrides.update(
            {"ckpt_dir": str(Path(self.bundle_path) / "models"), "output_dir": str(Path(self.bundle_path) / RUNS_DIR)}
        )
        weights = Path(self.bundle_path) / "models" / "model.pt"
        if weights.is_file():
            try:
                shape = weights_shape(read_weights(weights), weights)
            except CheckpointError as error:
                raise HTTPException(status_code=422, detail=f"cannot fine-tune: {error}") from None
            overrides.update({f"network_def#{key}": value for key, value in shape.items()})
        n_train = len(overrides.get(self.const.key_train_dataset_data(), []))
        if n_train == 0:
            raise HTTPException(status_code=422, detail="no usable labelled image to train on (see the server log)")
        overrides.update(finetuning_schedule(n_train, overrides.get(self.const.key_device(), "cpu")))
        validation = overrides.get(self.const.key_validate_dataset_data())
        if validation == []:
            logger.warning(
                "nothing to validate on (too few labelled images for val_split): model.pt will be the last epoch's "
                "model; the previous one is kept as models/model_<its date>.pt"
            )
        for handler in overrides.get(self.const.key_train_handlers(), []):
            if isinstance(handler, dict) and str(handler.get("_target_", "")).endswith(".TrainingValidation"):
                handler["exec_at_start"] = True
        return overrides

    def stats(self) -> dict[str, Any]:
        path = latest_stats(Path(self.bundle_path) / RUNS_DIR)
        if path is None:
            return {}
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return {}


def finetuning_schedule(n_train: int, device: torch.device | str) -> dict[str, int]:
    """Fine-tuning from MONAI Label: on a CPU one step per epoch over 4 patches of each labelled image (batch at
    most 32), so 50 epochs take minutes; on a GPU the paper's 100 patches per image per epoch at batch 32."""
    if torch.device(device).type == "cpu":
        batch = min(32, 4 * n_train)
        return {"batch_size": batch, "steps_per_epoch": max(1, math.ceil(4 * n_train / batch))}
    return {"batch_size": 32, "steps_per_epoch": max(1, 100 * n_train // 32)}


class IterNetApp(MONAILabelApp):
    """MONAI Label app serving the IterNet bundle in ``<app_dir>/model/iternet`` (module docstring)."""

    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]) -> None:
        self.bundle = os.path.join(app_dir, "model", BUNDLE_NAME)
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name="IterNet retinal vessels",
            description="IterNet vessel segmentation of colour fundus photographs (iternet-monai bundle)",
            version=__version__,
        )

    def init_datastore(self):
        if self.studies.startswith(("http://", "https://")):
            return super().init_datastore()
        return VesselDatastore(
            self.studies,
            extensions=settings.MONAI_LABEL_DATASTORE_FILE_EXT,
            auto_reload=settings.MONAI_LABEL_DATASTORE_AUTO_RELOAD,
            read_only=settings.MONAI_LABEL_DATASTORE_READ_ONLY,
        )

    def init_infers(self) -> dict:
        task = VesselInferTask(self.bundle, self.conf)
        return {BUNDLE_NAME: task} if task.is_valid() else {}

    def init_trainers(self) -> dict:
        if self.conf.get("skip_trainers", "false").lower() == "true":
            return {}
        task = VesselTrainTask(self.bundle, self.conf)
        return {BUNDLE_NAME: task} if task.is_valid() else {}

    def init_strategies(self) -> dict:
        return {"random": Random(), "first": First()}

    def on_init_complete(self) -> None:
        """When MONAI Label's server starts this app (its FastAPI app is loaded; a training process loads none):
        serve inference in a worker thread, so that the server answers other requests meanwhile."""
        super().on_init_complete()
        server = sys.modules.get("monailabel.app")
        if server is not None:
            serve_inference_in_threads(server.app)
            logger.info("inference runs in a worker thread: the server answers other requests meanwhile")

    def infer(self, request: dict, datastore=None) -> dict:
        image = request.get("image")
        if isinstance(image, str) and not os.path.exists(image):
            uri = (datastore or self.datastore()).get_image_uri(image) if image else ""
            if not uri or not os.path.exists(uri):
                raise HTTPException(status_code=404, detail=f"image '{image}' is not in the datastore")
        return super().infer(request, datastore)
