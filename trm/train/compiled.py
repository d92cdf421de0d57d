"""`train.compile`: the recursion through torch.compile, with a loud fallback to eager.

    compile_recursion(model.inner, cuda_graphs=False, warn=print)

Only `TRMInner.recurse` is compiled (H_cycles x (L_cycles + 1) network calls and the heads): its
shapes are fixed and it has no data-dependent control flow, so it compiles to one graph per
(train, eval) mode. The ACT bookkeeping around it stays eager. The method is replaced on the
instance, so parameter names, state dicts and checkpoints are the same as eager ones.

torch.compile compiles lazily, at the first call. When that fails (no C++ compiler on a CPU node, no
Triton for a GPU, an unsupported op), the error is reported once and the step is run eagerly from
then on: the run goes on, slower, and the log says why. The backward graph compiles later still, at
the first `loss.backward()`, outside this wrapper: so the first call with gradients first runs the
compiled forward and backward once on a copy of its inputs (torch.autograd.grad: the parameters'
.grad stay untouched), and a failure there falls back the same way instead of ending the run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


class _CompiledOrEager:
    def __init__(
        self,
        eager: Callable[..., Any],
        compiled: Callable[..., Any],
        warn: Callable[[str], None],
        params: list[torch.nn.Parameter] | None = None,
    ) -> None:
        self.eager, self.compiled, self.warn = eager, compiled, warn
        self.params = [p for p in params or [] if p.requires_grad]
        self.failed: str | None = None
        self.backward_checked = False

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.failed is None:
            try:
                if not self.backward_checked and torch.is_grad_enabled():
                    self._check_backward(args, kwargs)
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

    def _check_backward(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Compile (and run once) the backward now, where a failure can still fall back to eager.

        A probe call of its own: inductor's backward may free ("donate") its saved buffers, so the
        real step's graph cannot be run backward twice. The probe's inputs are fresh leaves with the
        same requires_grad, so it compiles the very graph the real call then reuses."""
        if self.params:
            probe = [a.detach().requires_grad_(a.requires_grad) if isinstance(a, torch.Tensor) else a for a in args]
            out = self.compiled(*probe, **kwargs)
            outputs = [t for t in out if isinstance(t, torch.Tensor) and t.requires_grad]
            if outputs:
                grad_outputs = [torch.ones_like(t) for t in outputs]
                torch.autograd.grad(outputs, self.params, grad_outputs=grad_outputs, allow_unused=True)
        self.backward_checked = True


def compile_recursion(inner: torch.nn.Module, cuda_graphs: bool, warn: Callable[[str], None]) -> _CompiledOrEager:
    """Replace `inner.recurse` by a compiled version that falls back to eager on failure.

    cuda_graphs: "reduce-overhead" mode, which records the compiled kernels as CUDA graphs and replays
    them: the launch overhead of the many small kernels goes away (CUDA only; ignored elsewhere)."""
    eager = inner.recurse
    mode = "reduce-overhead" if cuda_graphs and next(inner.parameters()).is_cuda else None
    compiled = torch.compile(eager, mode=mode, dynamic=False)
    # With CUDA graphs the backward is recorded as a graph too; running it twice for one forward is not
    # something cudagraph trees are known to accept, so that mode keeps the lazy backward compile.
    params = [] if mode else list(inner.parameters())
    wrapper = _CompiledOrEager(eager, compiled, warn, params)
    inner.recurse = wrapper  # type: ignore[method-assign]
    return wrapper
