"""Synthetic training rows from a class-conditional GAN: the synthesize stage
and `kerastrain.synthesize()` (`stage`), the GAN (`gan`), the map between
rows and the GAN's numbers (`codec`) and the quality figures (`quality`)."""

from kerastrain.synthetic.stage import (
    Synthesis,
    refuse_source,
    synthesize,
    synthesize_stage,
    synthetic_section,
)

__all__ = ["Synthesis", "refuse_source", "synthesize", "synthesize_stage", "synthetic_section"]
