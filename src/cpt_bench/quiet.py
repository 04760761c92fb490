"""Keep the terminal to cpt-bench's own progress lines: no per-map or per-shard bars, no
library chatter. Shared by the CLI and the launched workers (which never import the CLI)."""

from __future__ import annotations

import contextlib
import io
import os
import sys
import warnings

# transformers prints this line when its W&B integration is imported with WANDB_MODE=offline (as
# the Makefile sets), whatever the run's logger; cpt-bench says itself where a W&B run goes
WANDB_INTEGRATION = "transformers.integrations.integration_utils"


def quiet_libraries() -> None:
    import torch
    import transformers

    if "datasets" in sys.modules:
        sys.modules["datasets"].disable_progress_bars()
    else:  # read at its import: a step that never builds a dataset (evaluation) never pays it (0.6 s a rank)
        os.environ["HF_DATASETS_DISABLE_PROGRESS_BARS"] = "1"
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"(transformers|trl|accelerate|peft)\b")
    # DeepSpeed's ZeRO-3 gathers through torch's deprecated collective names, twice per step per rank
    deprecated = r"`torch\.distributed\.(all_gather_into_tensor|reduce_scatter_tensor)` is deprecated"
    warnings.filterwarnings("ignore", category=FutureWarning, message=deprecated)
    # DeepSpeed warns "Setting accelerator to CPU ..." when it finds no GPU: say so before it looks
    if "DS_ACCELERATOR" not in os.environ and not torch.cuda.is_available():
        os.environ["DS_ACCELERATOR"] = "cpu"
    if os.environ.get("WANDB_MODE") == "offline" and WANDB_INTEGRATION not in sys.modules:
        with contextlib.redirect_stdout(io.StringIO()):
            __import__(WANDB_INTEGRATION)
