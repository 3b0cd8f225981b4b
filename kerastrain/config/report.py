"""Report options: ``fit_pipeline(report={...})``."""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Literal

from kerastrain.config.base import Section, option

ExplainMethod = Literal["auto", "permutation", "saliency", "integrated_gradients", "none"]


@dataclasses.dataclass
class ReportConfig(Section):
    """What the run report explains, and what the model card says.

    Attributes:
        explain: The explanation drawn in the report: `"permutation"`
            importance (rows of features), `"saliency"` or
            `"integrated_gradients"` maps (images; for text columns,
            token attributions), `"none"`, or `"auto"` (permutation for
            rows of features, saliency for images of a classifier, token
            attributions for text, with permutation of the columns when a
            table has others). Defaults to `"auto"`.
        explain_examples: Images explained by attribution maps (up to half
            of them wrongly classified). Defaults to `6`.
        explain_texts: Texts explained by token attributions (integrated
            gradients over the token embeddings) per text column of a model
            that reads text, up to half of them wrongly classified.
            Defaults to `5`.
        explain_steps: Steps of the integrated-gradients path integral of
            token attributions (more: a closer sum to the change in the
            score, and a slower explanation). At least 2. Defaults to `64`.
        permutation_repeats: Shuffles per feature for permutation importance.
            Defaults to `5`.
        max_explain_rows: Held-out rows used by permutation importance at
            most (a seeded sample beyond that). Defaults to `2000`.
        intended_use: The model card's "intended use" paragraph.
            Defaults to `None` (generated from the data and task).
        limitations: Limits the model card states first, before those read
            off the metrics. Defaults to `[]`.
    """

    _path: ClassVar[str] = "report"

    explain: ExplainMethod = "auto"
    explain_examples: int = option(6, ge=1)
    explain_texts: int = option(5, ge=1)
    explain_steps: int = option(64, ge=2)
    permutation_repeats: int = option(5, ge=1)
    max_explain_rows: int = option(2000, ge=10)
    intended_use: str | None = None
    limitations: list[str] = dataclasses.field(default_factory=list)
