"""Inference: a runner that segments files and writes the results."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from monai.inferers import Inferer
from PIL import Image
from tqdm import tqdm

__all__ = ["segment_files", "overlay"]

logger = logging.getLogger(__name__)


def overlay(
    photo: np.ndarray, mask: np.ndarray, colour: Sequence[int] = (0, 255, 64), alpha: float = 0.6
) -> np.ndarray:
    """The photograph (H, W, 3 uint8) with ``mask`` pixels blended towards ``colour``."""
    out = photo.astype(np.float32)
    out[mask] = (1 - alpha) * out[mask] + alpha * np.asarray(colour, np.float32)
    return out.round().astype(np.uint8)


def _outputs(output_dir: Path, stem: str, nifti: bool) -> dict[str, Path]:
    names = {"probability": f"{stem}_prob.png", "mask": f"{stem}_mask.png", "overlay": f"{stem}_overlay.png"}
    if nifti:
        names["nifti"] = f"{stem}_prob.nii.gz"
    return {k: output_dir / v for k, v in names.items()}


def _write(paths: dict[str, Path], prob: np.ndarray, photo: np.ndarray, threshold: float) -> None:
    """Probability as 8-bit PNG, binary mask (0/255), overlay, and optionally float32 NIfTI; prob is (H, W)."""
    Image.fromarray(np.round(prob * 255).astype(np.uint8)).save(paths["probability"])
    mask = prob >= threshold
    Image.fromarray(mask.astype(np.uint8) * 255).save(paths["mask"])
    Image.fromarray(overlay(photo, mask)).save(paths["overlay"])
    if "nifti" in paths:
        import nibabel as nib

        nib.save(nib.Nifti1Image(prob.T[:, :, None].astype(np.float32), np.eye(4)), str(paths["nifti"]))


@torch.inference_mode()
def segment_files(
    items: Sequence[dict],
    preprocessing: Callable[[dict], dict],
    network: torch.nn.Module,
    inferer: Inferer,
    output_dir: str | Path,
    device: torch.device | str = "cpu",
    threshold: float = 0.5,
    amp: bool = False,
    nifti: bool = False,
    overwrite: bool = False,
) -> list[dict[str, Path]]:
    """Segment every item's ``image`` and write its probability map, binary mask and overlay to ``output_dir``.

    An item whose outputs exist is skipped unless ``overwrite``; an item that fails (unreadable file, say) is
    reported and skipped, and after the rest are written a SystemExit lists the failures. Returns the outputs
    written.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    network = network.to(device, memory_format=torch.channels_last).eval()  # 1.5x faster convolutions on CPU
    device = torch.device(device)
    written, skipped, failures = [], [], []
    for item in tqdm(items, desc="segmenting", unit="image"):
        source = Path(item["image"])
        paths = _outputs(output_dir, source.name.split(".")[0], nifti)
        if not overwrite and any(p.exists() for p in paths.values()):
            skipped.append(source)
            continue
        try:
            data = preprocessing({"image": str(source)})
            image = torch.as_tensor(data["image"])[None].to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                logits = inferer(image, network)
            prob = torch.sigmoid(logits.float())[0, 0].cpu().numpy().T  # PILReader gives (W, H)
            photo = np.round(image[0].float().cpu().numpy().transpose(2, 1, 0) * 255).astype(np.uint8)
            _write(paths, prob, photo, threshold)
            written.append(paths)
        except Exception as err:  # noqa: BLE001 - one bad file must not stop the others
            cause = err.__cause__ or err  # MONAI wraps a failing transform's error in a RuntimeError
            message = str(cause).strip().splitlines()[-1] if str(cause).strip() else repr(cause)
            logger.error(f"{source}: {message}")
            failures.append(f"{source}: {message}")
    logger.info(f"wrote {len(written)} of {len(items)} images to {output_dir}")
    if skipped:
        logger.warning(
            f"skipped {len(skipped)} image(s) whose outputs exist in {output_dir} (pass --overwrite true to replace)"
        )
    if failures:
        raise SystemExit(f"{len(failures)} of {len(items)} image(s) failed:\n  " + "\n  ".join(failures))
    return written
