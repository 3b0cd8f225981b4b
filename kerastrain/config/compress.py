"""Compression options: ``fit_pipeline(compress={...})``.

Each technique is its own section; a section left out does not run. The key
names (`prune`, `quantize`, `cluster`, `distill`, `budget` and the fields
named in the design) are part of the public contract.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Literal

from kerastrain.config.base import Section, option
from kerastrain.errors import ConfigError, config_error

__all__ = [
    "LayerSelection",
    "PruneConfig",
    "ClusterConfig",
    "DistillConfig",
    "BudgetConfig",
    "CompressConfig",
    "DEFAULT_SPARSITY",
    "DEFAULT_CHANNEL_RATIO",
]

#: The target sparsity of unstructured pruning when none is given.
DEFAULT_SPARSITY = 0.8
#: The share of weights that 2:4 structured pruning removes (2 of every 4).
M_BY_N_SPARSITY = 0.5
#: The share of units channel pruning removes from each layer when none is given.
DEFAULT_CHANNEL_RATIO = 0.5

CentroidInit = Literal["kmeans++", "linear", "density", "random"]


@dataclasses.dataclass
class LayerSelection(Section):
    """Which layers a technique touches.

    Attributes:
        layers: Exactly these layer names (overrides the defaults below).
            Defaults to `None`: every layer the technique supports, less the
            skipped ones.
        skip: Layer names never touched. Defaults to `[]`.
        skip_first_conv: Leave the first convolution alone (few weights, and
            the most sensitive). Defaults to `True`.
        skip_output: Leave the classifier (the output layer) alone.
            Defaults to `True`.
    """

    layers: list[str] | None = None
    skip: list[str] = dataclasses.field(default_factory=list)
    skip_first_conv: bool = True
    skip_output: bool = True


@dataclasses.dataclass
class PruneConfig(LayerSelection):
    """Pruning while fine-tuning: magnitude pruning (TF-MOT
    `prune_low_magnitude`), or channel pruning that rebuilds a smaller model.

    With `structure="channels"`, whole Dense units and convolution filters
    are removed (`kerastrain.compress.channels`): the lowest-scoring share
    `target_ratio` of each layer's units, in one cut per epoch up to
    `end_epoch` (the share rising like the polynomial sparsity schedule),
    with fine-tuning after each cut. `compress.prune` may be a list of two
    sections, channels first, to prune the smaller model's weights too.

    Attributes:
        target_sparsity: The share of each pruned kernel set to zero. Defaults
            to `0.8`, or `0.5` with `structure="2:4"` (the only value 2:4
            allows); not used by `"channels"`.
        schedule: `"polynomial"` (sparsity rises from `initial_sparsity` to the
            target by `end_epoch`) or `"constant"` (the target from the first
            step; for channels, one cut before the first epoch). Ignored by
            2:4, which TF-MOT masks once, at the first step.
            Defaults to `"polynomial"`.
        structure: `None` for unstructured pruning, `"2:4"`: two zeros in
            every four consecutive input weights, or `"channels"`: remove
            units and filters. Defaults to `None`.
        target_ratio: With `"channels"`: the share of each cut layer's units
            removed (rounded down; at least one unit is kept). Defaults to
            `0.5` with channels.
        criterion: With `"channels"`: how a unit is scored, `"l1"` (sum of
            the absolute weights of its kernel slice) or `"l2"` (their
            Euclidean norm), either times the scale of a BatchNormalization
            that follows the layer. Defaults to `"l1"` with channels.
        epochs: Fine-tuning epochs with pruning. Defaults to `2`.
        initial_sparsity: Where the polynomial schedule starts. Defaults to `0.0`.
        end_epoch: The epoch at whose end the polynomial schedule reaches the
            target (for channels: the last cut is made before this epoch);
            later epochs recover accuracy at that sparsity. Defaults to
            `None`: half the epochs, rounded up.
        frequency: Training steps between mask updates. Defaults to `None`:
            about four updates per epoch; not used by `"channels"`.
        learning_rate: The fine-tuning learning rate. Defaults to `None`:
            `compress.learning_rate`, else `train.learning_rate`.
    """

    _path: ClassVar[str] = "compress.prune"

    target_sparsity: float | None = option(None, gt=0.0, lt=1.0)
    schedule: Literal["polynomial", "constant"] = "polynomial"
    structure: Literal["2:4", "channels"] | None = None
    target_ratio: float | None = option(None, gt=0.0, lt=1.0)
    criterion: Literal["l1", "l2"] | None = None
    epochs: int = option(2, gt=0)
    initial_sparsity: float = option(0.0, ge=0.0, lt=1.0)
    end_epoch: int | None = option(None, gt=0)
    frequency: int | None = option(None, gt=0)
    learning_rate: float | None = option(None, gt=0.0)

    def validate(self) -> None:
        if self.structure == "channels":
            self._validate_channels()
            return
        for name in ("target_ratio", "criterion"):
            if getattr(self, name) is not None:
                raise config_error(
                    f"compress.prune.{name}",
                    getattr(self, name),
                    "unset unless compress.prune.structure is 'channels' (it applies to "
                    "channel pruning only)",
                )
        if self.structure == "2:4":
            if self.target_sparsity not in (None, M_BY_N_SPARSITY):
                raise config_error(
                    "compress.prune.target_sparsity",
                    self.target_sparsity,
                    f"{M_BY_N_SPARSITY} (or unset) with structure='2:4', which "
                    "zeroes exactly 2 of every 4 weights",
                )
            object.__setattr__(self, "target_sparsity", M_BY_N_SPARSITY)
        elif self.target_sparsity is None:
            object.__setattr__(self, "target_sparsity", DEFAULT_SPARSITY)
        if self.initial_sparsity >= self.target_sparsity:
            raise config_error(
                "compress.prune.initial_sparsity",
                self.initial_sparsity,
                f"< target_sparsity ({self.target_sparsity:g})",
            )
        if self.end_epoch is not None and self.end_epoch > self.epochs:
            raise config_error(
                "compress.prune.end_epoch",
                self.end_epoch,
                f"<= compress.prune.epochs ({self.epochs})",
            )

    def _validate_channels(self) -> None:
        wrong = {
            "target_sparsity": (self.target_sparsity, None, "target_ratio"),
            "frequency": (self.frequency, None, "one cut per epoch of the ramp"),
            "initial_sparsity": (self.initial_sparsity, 0.0, "the first cut's share"),
        }
        for name, (value, unset, instead) in wrong.items():
            if value != unset:
                raise config_error(
                    f"compress.prune.{name}",
                    value,
                    f"unset with structure='channels', which uses {instead} instead",
                )
        if self.target_ratio is None:
            object.__setattr__(self, "target_ratio", DEFAULT_CHANNEL_RATIO)
        if self.criterion is None:
            object.__setattr__(self, "criterion", "l1")

    @property
    def ramp_epochs(self) -> int:
        """The epoch at whose end the polynomial schedule reaches the target."""
        return self.end_epoch if self.end_epoch is not None else -(-self.epochs // 2)


@dataclasses.dataclass
class ClusterConfig(LayerSelection):
    """Weight clustering while fine-tuning (TF-MOT `cluster_weights`).

    After clustering, each clustered kernel holds at most `clusters` distinct
    values (plus zero when it follows pruning, whose sparsity is preserved).

    Attributes:
        clusters: Distinct values per kernel. Defaults to `16`.
        init: Centroid initialization: `"kmeans++"`, `"linear"`, `"density"`
            or `"random"`. Defaults to `"kmeans++"`.
        epochs: Fine-tuning epochs with clustering. Defaults to `2`.
        learning_rate: The fine-tuning learning rate. Defaults to `None`:
            `compress.learning_rate`, else `train.learning_rate`.
    """

    _path: ClassVar[str] = "compress.cluster"

    clusters: int = option(16, ge=2, le=256)
    init: CentroidInit = "kmeans++"
    epochs: int = option(2, gt=0)
    learning_rate: float | None = option(None, gt=0.0)


@dataclasses.dataclass
class DistillConfig(Section):
    """Knowledge distillation into a smaller student.

    The student trains on `alpha` x (loss on the labels) + `(1 - alpha)` x
    `temperature`^2 x (KL divergence from the teacher's softened outputs),
    then goes through the other techniques and the export in its place.

    Attributes:
        student: Options of the student's factory, e.g. `{"width": 16}`,
            replacing the same keys of the run's `model_options`; a
            `"model"` key names another factory (which then gets these
            options alone). Defaults to `{}`.
        temperature: Softening of both output distributions. Defaults to `4.0`.
        alpha: Weight of the loss on the true labels. Defaults to `0.5`
            (T=4 with alpha=0.5 was the best of the pairs tried on a
            small-data digits split).
        epochs: Student training epochs. Defaults to `None`: `train.epochs`.
        teacher: A tf_keras model from raw inputs to outputs (an object, so
            a saved config records only its description). Defaults to
            `None`: the model the run just trained.
    """

    _path: ClassVar[str] = "compress.distill"

    student: dict[str, Any] = dataclasses.field(default_factory=dict)
    temperature: float = option(4.0, gt=0.0)
    alpha: float = option(0.5, ge=0.0, le=1.0)
    epochs: int | None = option(None, gt=0)
    teacher: Any = None

    def validate(self) -> None:
        if self.teacher is not None and not hasattr(self.teacher, "layers"):
            raise config_error(
                "compress.distill.teacher",
                self.teacher,
                "None (the trained model) or a tf_keras model",
            )


@dataclasses.dataclass
class BudgetConfig(Section):
    """Compress to a size or latency budget: the search picks the techniques.

    Candidates (float16, int8, each channel ratio + int8, 2:4 + int8, each
    sparsity + int8, each sparsity and cluster count + int8) are first sized
    and timed on a one-shot version (the units cut, the weights pruned and
    clustered, no training), which predicts the shipped file: a channel cut
    fixes the architecture, and so the latency, and the zeros and distinct
    values fix the gzip size. The ones that can fit are then fine-tuned from
    the least compressed down, and the first within every limit is kept, so
    accuracy is given up only as far as the budget needs.

    Attributes:
        max_kb: The largest gzip-compressed TFLite file allowed, in KiB
            (1024 bytes). Defaults to `None` (no size limit; `max_latency_ms`
            must then be set).
        max_latency_ms: The largest median latency of the TFLite file, in
            milliseconds, for a call on `latency_batch` rows in the LiteRT
            interpreter on one thread. Defaults to `None` (no latency limit;
            `max_kb` must then be set).
        latency_batch: Rows per timed call of the latency limit: `1` for a
            single example, more for batch serving. Defaults to `1`.
        max_accuracy_drop: The largest drop in validation accuracy (R^2 for
            regression) from the uncompressed float32 TFLite model, as a
            fraction: `0.01` is one point. Defaults to `0.01`.
        channel_ratios: Shares of the units (Dense units, Conv2D filters)
            to cut with channel pruning, each a candidate with int8: the one
            dimension that makes the model faster, not only smaller. `[]`
            tries none. Defaults to `[0.5]`.
        sparsities: Unstructured sparsity levels to try. Defaults to
            `[0.5, 0.75, 0.9]`.
        clusters: Cluster counts to try on top of each sparsity. Defaults to
            `[16]`.
        structured: Also try 2:4 structured pruning. Defaults to `True`.
        epochs: Fine-tuning epochs of each candidate that trains.
            Defaults to `2`.
    """

    _path: ClassVar[str] = "compress.budget"

    max_kb: float | None = option(None, gt=0.0)
    max_latency_ms: float | None = option(None, gt=0.0)
    latency_batch: int = option(1, gt=0)
    max_accuracy_drop: float = option(0.01, ge=0.0, le=1.0)
    channel_ratios: list[float] = dataclasses.field(default_factory=lambda: [0.5])
    sparsities: list[float] = dataclasses.field(default_factory=lambda: [0.5, 0.75, 0.9])
    clusters: list[int] = dataclasses.field(default_factory=lambda: [16])
    structured: bool = True
    epochs: int = option(2, gt=0)

    def validate(self) -> None:
        if self.max_kb is None and self.max_latency_ms is None:
            raise config_error(
                "compress.budget.max_kb",
                None,
                "a size in KiB > 0 (the gzip-compressed TFLite file), or a "
                "compress.budget.max_latency_ms, or both",
            )
        for i, value in enumerate(self.channel_ratios):
            if not 0.0 < value < 1.0:
                raise config_error(f"compress.budget.channel_ratios[{i}]", value, "> 0 and < 1")
        for i, value in enumerate(self.sparsities):
            if not 0.0 < value < 1.0:
                raise config_error(f"compress.budget.sparsities[{i}]", value, "> 0 and < 1")
        for i, value in enumerate(self.clusters):
            if not 2 <= value <= 256:
                raise config_error(f"compress.budget.clusters[{i}]", value, ">= 2 and <= 256")


@dataclasses.dataclass
class CompressConfig(Section):
    """What turns the trained float model into a small one.

    Techniques run in this order: distill, prune, cluster, quantize. Pruning
    followed by quantization-aware training uses TF-MOT's prune-preserving
    scheme, clustering followed by it the cluster-preserving one, so the
    later step keeps what the earlier one made. Post-training quantization is
    the export's `tflite` mode.

    Attributes:
        prune: See `PruneConfig`; or a list of two: channel pruning first,
            then magnitude (or 2:4) pruning of the smaller model. Defaults
            to `None`.
        quantize: `"qat"` for quantization-aware training (convert with
            `export.tflite="int8"`). Defaults to `None`.
        cluster: See `ClusterConfig`. Defaults to `None`.
        distill: See `DistillConfig`. Defaults to `None`.
        budget: See `BudgetConfig`; it chooses pruning, clustering and the
            TFLite mode itself, so it excludes `prune`, `cluster` and
            `quantize`. Defaults to `None`.
        quantize_epochs: Quantization-aware fine-tuning epochs. Defaults to `2`.
        learning_rate: The fine-tuning learning rate of every technique.
            Defaults to `None`: `train.learning_rate`.
        summaries: Write TF-MOT's pruning and clustering TensorBoard summaries
            under `<run folder>/logs/`. Defaults to `False`.
    """

    _path: ClassVar[str] = "compress"

    prune: PruneConfig | list[PruneConfig] | None = None
    quantize: Literal["qat"] | None = None
    cluster: ClusterConfig | None = None
    distill: DistillConfig | None = None
    budget: BudgetConfig | None = None
    quantize_epochs: int = option(2, gt=0)
    learning_rate: float | None = option(None, gt=0.0)
    summaries: bool = False

    def validate(self) -> None:
        if isinstance(self.prune, list):
            self._validate_prune_list(self.prune)
        if self.budget is not None:
            chosen = [k for k in ("prune", "cluster", "quantize") if getattr(self, k) is not None]
            if chosen:
                raise ConfigError(
                    f"compress.budget chooses the techniques itself, so it cannot be combined "
                    f"with compress.{chosen[0]}. Remove compress.{' and compress.'.join(chosen)}, "
                    "or remove compress.budget and choose the techniques yourself."
                )

    @staticmethod
    def _validate_prune_list(sections: list[PruneConfig]) -> None:
        kinds = ["channels" if s.structure == "channels" else "weights" for s in sections]
        if kinds not in (["channels"], ["weights"], ["channels", "weights"]):
            raise config_error(
                "compress.prune",
                [s.structure for s in sections],
                "one section, or a list of two: structure 'channels' first, then magnitude "
                "(structure None) or '2:4' pruning of what is left",
            )

    @property
    def channel_pruning(self) -> PruneConfig | None:
        """The `prune` section with `structure="channels"`, or None."""
        sections = self.prune if isinstance(self.prune, list) else [self.prune]
        return next((s for s in sections if s is not None and s.structure == "channels"), None)

    @property
    def weight_pruning(self) -> PruneConfig | None:
        """The `prune` section that prunes weights (magnitude or 2:4), or None."""
        sections = self.prune if isinstance(self.prune, list) else [self.prune]
        return next((s for s in sections if s is not None and s.structure != "channels"), None)
