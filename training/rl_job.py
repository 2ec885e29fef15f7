"""Ray job entry point for the RL routing policy: the same options as ``orchestra train rl``.

Locally::

    python training/rl_job.py --data routerbench --steps 50 --sft-steps 20

On a Ray cluster (the driver runs on the head node; checkpoints go to --storage, and --base
must be a model directory every node can read)::

    ray job submit --address http://HEAD:8265 --runtime-env training/runtime_env.yaml -- \\
        python training/rl_job.py --data routerbench --out /mnt/shared/routerbench-rl \\
        --base /mnt/shared/models/smollm2-135m --num-workers 4 --gpus-per-worker 1 \\
        --storage /mnt/shared/ray

Inside ``ray job submit`` ``$RAY_ADDRESS`` is set, so the job joins the cluster it was sent
to. The code lives in :mod:`orchestra.training.rl_train`; this file only parses the options.
"""

from __future__ import annotations

import sys
from pathlib import Path

try:
    import orchestra  # noqa: F401
except ImportError:  # run from a checkout (the job's working_dir) without installing
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from orchestra.training.rl_cli import rl_app

if __name__ == "__main__":
    rl_app(prog_name="rl_job.py")
