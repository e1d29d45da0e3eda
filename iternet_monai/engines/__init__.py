"""Engines and what runs them: checkpoints, the training run and its folders, batch inference and evaluation."""

from iternet_monai.engines.checkpoint_savers import AtomicCheckpointSaver, AtomicDiskSaver
from iternet_monai.engines.checkpoints import (
    BUNDLE_DIR,
    CheckpointError,
    bundle_weights,
    check_weights_fit,
    default_bundle_root,
    iternet_for_weights,
    iternet_shaped_for,
    load_weights,
    read_checkpoint,
    read_weights,
    save_atomic,
    weights_shape,
)
from iternet_monai.engines.evaluation import (
    EVALUATION_CONFIGS,
    evaluation_items,
    evaluation_parser,
    prediction_source,
    run_evaluation,
)
from iternet_monai.engines.inference import load_pipeline, run_evaluator, segment
from iternet_monai.engines.run_folder import RunFolder
from iternet_monai.engines.training import (
    STATS_FILE,
    default_num_workers,
    final_model_name,
    latest_stats,
    loader_worker_init,
    other_metrics,
    seed_everything,
)
from iternet_monai.engines.training_run import TrainingRun

# the training's handlers (iternet_monai.handlers), importable beside the run they serve
from iternet_monai.handlers import TimeBudget, TrainingProgress, TrainingValidation

__all__ = [
    "CheckpointError",
    "BUNDLE_DIR",
    "default_bundle_root",
    "bundle_weights",
    "read_checkpoint",
    "read_weights",
    "weights_shape",
    "check_weights_fit",
    "load_weights",
    "iternet_shaped_for",
    "iternet_for_weights",
    "save_atomic",
    "default_num_workers",
    "seed_everything",
    "loader_worker_init",
    "other_metrics",
    "final_model_name",
    "AtomicDiskSaver",
    "AtomicCheckpointSaver",
    "RunFolder",
    "TrainingRun",
    "TrainingValidation",
    "TrainingProgress",
    "TimeBudget",
    "STATS_FILE",
    "latest_stats",
    "segment",
    "load_pipeline",
    "EVALUATION_CONFIGS",
    "evaluation_items",
    "prediction_source",
    "run_evaluator",
    "evaluation_parser",
    "run_evaluation",
]
