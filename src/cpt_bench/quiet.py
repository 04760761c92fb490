"""Keep the terminal to cpt-bench's own progress lines: no per-map or per-shard bars, no
library chatter. Shared by the CLI and the launched workers (which never import the CLI)."""

from __future__ import annotations


def quiet_libraries() -> None:
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
