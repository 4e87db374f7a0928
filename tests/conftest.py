import os

import torch

# Under pytest-xdist two workers share the cores: one torch thread each avoids oversubscription,
# which made small-tensor tests 2-3x slower. Notebook kernels are separate processes, unaffected.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)
