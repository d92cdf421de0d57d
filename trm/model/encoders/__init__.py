"""Demo encoders (ETRM): networks that read a task's demonstration pairs and give the decoder the
`puzzle_emb_len` x hidden prefix where TRM's learned puzzle embedding goes.

    encoder = build_encoder(cfg.arch, vocab_size, seq_len, pad_id)
    out = encoder(demo_inputs, demo_labels, demo_mask, state)   # EncoderOutput: context (B, P, D), kl (B,)

Every `arch.encoder_type` is one `DemoEncoder`, assembled from a per-demo grid encoder, a demo-set
aggregator and an optional variational bottleneck (see `ENCODER_TYPES`).
"""

from trm.model.encoders.demo import ENCODER_TYPES, DemoEncoder, EncoderOutput, build_encoder

__all__ = ["ENCODER_TYPES", "DemoEncoder", "EncoderOutput", "build_encoder"]
