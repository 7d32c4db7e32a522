"""Third-party log lines that say nothing about a case, kept out of harness's output and case stderr.

On a CPU-only torch, importing torchao (which transformers also does when it is installed) logs one
warning per CUDA kernel library it cannot load (mxfp8, cutlass) and torch's pytree one per enum torchao
registers. They appeared on every `harness estimate` and filled the stderr tail a failed case reports, where
the real error must be seen. Only these loggers, only below ERROR; a library user's logging is untouched
(called by the CLI and the case process only).
"""

from __future__ import annotations

import logging

NOISY_LOGGERS = ("torchao", "torch.utils._pytree")


def quiet_third_party_logs() -> None:
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
