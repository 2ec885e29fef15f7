"""Ray job entry point for the GNN router: the same options as ``orchestra train gnn``.

Locally::

    python training/gnn_job.py --data routerbench --out artifacts/routerbench-gnn

On a Ray cluster (the driver runs on the head node; checkpoints go to --storage)::

    ray job submit --address http://HEAD:8265 --runtime-env training/runtime_env.yaml -- \\
        python training/gnn_job.py --data routerbench --out /mnt/shared/routerbench-gnn \\
        --num-workers 4 --gpus-per-worker 1 --storage /mnt/shared/ray

Inside ``ray job submit`` ``$RAY_ADDRESS`` is set, so the job joins the cluster it was sent
to. The code lives in :mod:`orchestra.training.gnn`; this file only parses the options.
"""

from __future__ import annotations

import sys
from pathlib import Path

try:
    import orchestra  # noqa: F401
except ImportError:  # run from a checkout (the job's working_dir) without installing
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from orchestra.training.gnn_cli import gnn_app

if __name__ == "__main__":
    gnn_app(prog_name="gnn_job.py")
