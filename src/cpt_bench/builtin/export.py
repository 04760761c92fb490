"""The toy benchmark's tasks written out as JSONL files: the example sequence of
`benchmark=custom` (conf/benchmark/custom.yaml), shipped in `toy_jsonl/`. With the embedded
model that sequence gives the same matrix as `benchmark=toy` on the same items.

    python -m cpt_bench.builtin.export [FOLDER]   # default: the shipped folder
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from cpt_bench.tasks.toy import GENERAL_SUITE, toy_tasks

SHIPPED = Path(__file__).resolve().parent / "toy_jsonl"


def write_toy_jsonl(folder: Path, seed: int = 0, train_size: int = 512, test_size: int = 100) -> list[Path]:
    """`<task>_train.jsonl` (the CPT tasks) and `<task>_test.jsonl` (every task), one item a line
    with its question, answer and rationale, in the order `benchmark=toy` draws them."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, task in toy_tasks(seed=seed, train_size=train_size, test_size=test_size).items():
        splits = {"test": task.test()} if name in GENERAL_SUITE else {"train": task.train(), "test": task.test()}
        for split, items in splits.items():
            path = folder / f"{name}_{split}.jsonl"
            path.write_text("".join(json.dumps({"question": ex.prompt, "answer": ex.answer,
                                                "rationale": ex.rationale}) + "\n" for ex in items))
            written.append(path)
    return written


def main() -> None:
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else SHIPPED
    print(f"wrote {len(write_toy_jsonl(folder))} files to {folder}")


if __name__ == "__main__":
    main()
