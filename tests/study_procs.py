"""``soi run`` in a subprocess for tests/test_study_trainer.py: ``python tests/study_procs.py '<json>'``.

JSON keys: ``study`` (a study YAML), ``out`` (its output folder) and optionally ``kill_at`` (a global step: the
process SIGKILLs itself right after the Trainer checkpoint of that step is saved, in the first run or two-stage
arm that reaches it; ``kill_in``: only in a run directory whose path contains that text).
"""

from __future__ import annotations

import json
import sys
from typing import Any

from hf_common import KillAfterSave


def main(opts: dict[str, Any]) -> None:
    import soi.train.hf as hf
    from soi.study.packaged import run_study_file

    if opts.get("kill_at") is not None:
        train_run = hf.train_run

        def killing(*args: Any, callbacks: Any = (), **kw: Any) -> Any:
            if opts.get("kill_in", "") in str(kw["run_dir"]):
                callbacks = [*callbacks, KillAfterSave(int(opts["kill_at"]))]
            return train_run(*args, callbacks=callbacks, **kw)

        hf.train_run = killing
    run_study_file(opts["study"], opts["out"], progress=False, report=False)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
