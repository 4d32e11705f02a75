"""Shared test settings.

The pruning-core tests run tiny models, for which torch's intra-op thread pool only adds overhead; on a
2-core machine that is busy with other work, two threads made some prunes ~70x slower (threads waiting
for a core). One thread keeps the suite's run time predictable.
"""

import torch

torch.set_num_threads(1)
