"""`train.compile`: the recursion through torch.compile, with a loud fallback to eager.

    compile_recursion(model.inner, cuda_graphs=False, warn=print)

Only `TRMInner.recurse` is compiled (H_cycles x (L_cycles + 1) network calls and the heads): its
shapes are fixed and it has no data-dependent control flow, so it compiles to one graph per
(train, eval) mode. The ACT bookkeeping around it stays eager. The method is replaced on the
instance, so parameter names, state dicts and checkpoints are the same as eager ones.

torch.compile compiles lazily, at the first call. When that fails (no C++ compiler on a CPU node, no
Triton for a GPU, an unsupported op), the error is reported once and the step is run eagerly from
then on: the run goes on, slower, and the log says why.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


class _CompiledOrEager:
    def __init__(self, eager: Callable[..., Any], compiled: Callable[..., Any], warn: Callable[[str], None]) -> None:
        self.eager, self.compiled, self.warn = eager, compiled, warn
        self.failed: str | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.failed is None:
            try:
                return self.compiled(*args, **kwargs)
            except Exception as e:  # noqa: BLE001 - any compiler failure means: run eagerly, say so
                if isinstance(e, torch.cuda.OutOfMemoryError):
                    raise  # not a compiler problem: eager would fail the same way
                first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
                self.failed = f"{type(e).__name__}: {first}"
                self.warn(
                    f"warning: train.compile=true but torch.compile failed ({self.failed}); "
                    "running the recursion eagerly (same results, slower). Set train.compile=false "
                    "to silence this."
                )
        return self.eager(*args, **kwargs)


def compile_recursion(inner: torch.nn.Module, cuda_graphs: bool, warn: Callable[[str], None]) -> _CompiledOrEager:
    """Replace `inner.recurse` by a compiled version that falls back to eager on failure.

    cuda_graphs: "reduce-overhead" mode, which records the compiled kernels as CUDA graphs and replays
    them: the launch overhead of the many small kernels goes away (CUDA only; ignored elsewhere)."""
    eager = inner.recurse
    mode = "reduce-overhead" if cuda_graphs and next(inner.parameters()).is_cuda else None
    compiled = torch.compile(eager, mode=mode, dynamic=False)
    wrapper = _CompiledOrEager(eager, compiled, warn)
    inner.recurse = wrapper  # type: ignore[method-assign]
    return wrapper
