"""Batches that arrive on the GPU before the step needs them.

    batches = Prefetcher(iterator.chunk_batches(), device, iterator.state_dict, lookahead=True)
    for batch in batches: ...                       # batch already on `device`
    state = batches.resume_state()                  # the sampler state after the batches consumed so far

With `lookahead`, the next batch is gathered on the host, pinned, and copied by a side CUDA stream
while the current step computes; the compute stream waits on an event, never the host. A synchronous
copy from pageable memory would make the host wait until the GPU has drained its queue, every step.

Looking one batch ahead advances the sampler one batch early, so a checkpoint must not store the
sampler's live state: `resume_state()` is the state taken just before the pending batch was drawn.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import fields
from typing import Any

import torch

from trm.data.iterator import Batch


def _tensors(batch: Batch) -> list[torch.Tensor]:
    """Every tensor of the batch, its subclass's fields included (a few-shot batch carries its demos)."""
    return [getattr(batch, f.name) for f in fields(batch)]


def _pin(batch: Batch) -> Batch:
    return type(batch)(*(t.pin_memory() for t in _tensors(batch)))


class Prefetcher:
    def __init__(
        self, batches: Iterator[Batch], device: torch.device, state_fn: Callable[[], Any], lookahead: bool
    ) -> None:
        self.batches = batches
        self.device = device
        self.state_fn = state_fn
        self.lookahead = lookahead
        self.cuda = device.type == "cuda"
        self.stream = torch.cuda.Stream(device) if self.cuda and lookahead else None
        self._pending: tuple[Batch, Any, torch.cuda.Event | None] | None = None
        self._end_state: Any = None
        if lookahead:
            self._fetch()

    def _fetch(self) -> None:
        state = self.state_fn()  # before the draw: what a resume must restart from
        try:
            host = next(self.batches)
        except StopIteration:
            # A stop after the last batch resumes at the chunk's end, so the chunk's evaluation still runs.
            self._pending, self._end_state = None, state
            return
        if self.stream is None:
            self._pending = (host.to(self.device), state, None)
            return
        host = _pin(host)
        with torch.cuda.stream(self.stream):
            batch = host.to(self.device)  # non_blocking: pinned memory, side stream
            event = torch.cuda.Event()
            event.record(self.stream)
        self._pending = (batch, state, event)

    def __iter__(self) -> Prefetcher:
        return self

    def __next__(self) -> Batch:
        if not self.lookahead:
            host = next(self.batches)
            return _pin(host).to(self.device) if self.cuda else host.to(self.device)
        if self._pending is None:
            raise StopIteration
        batch, _, event = self._pending
        if event is not None:
            current = torch.cuda.current_stream(self.device)
            current.wait_event(event)
            for t in _tensors(batch):
                t.record_stream(current)  # the side stream's allocation is used on this stream
        self._fetch()
        return batch

    def resume_state(self) -> Any:
        """The sampler state that makes a resumed run draw the batches this one has not consumed yet."""
        if not self.lookahead:
            return self.state_fn()
        return self._pending[1] if self._pending is not None else self._end_state
