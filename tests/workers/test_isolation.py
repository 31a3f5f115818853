"""The processes that supervise jobs (Celery worker, embedded dispatcher) never load torch or CUDA."""

from __future__ import annotations

import subprocess
import sys


def test_worker_side_modules_do_not_import_torch() -> None:
    code = (
        "import sys\n"
        "import workers.celery_app, workers.dispatch, workers.runner, workers.reconciler, workers.state\n"
        "import workers.__main__\n"
        "print(','.join(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'nncompress'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"the worker's supervising side imported: {out.stdout.strip()}"
