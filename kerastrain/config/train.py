"""Training options: ``fit_pipeline(train={...})``.

Schedules are given in epochs here; the training stage converts them to
optimizer steps once it knows how many steps an epoch has.

The names of the optimizers and schedules are listed once, here
(`OPTIMIZER_OPTIONS`, `SCHEDULE_OPTIONS`); the training stage's builders are
keyed by them.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Literal

from kerastrain.config.base import Section, number_as_text, option
from kerastrain.errors import ConfigError, config_error, did_you_mean

#: Explicit precision policies. A later "auto" is added here and resolved
#: (`kerastrain.training.precision.pick_precision`) before
#: `kerastrain.training.precision.precision_scope`.
Precision = Literal["float32", "mixed_bfloat16", "mixed_float16"]

#: The keyword options each optimizer accepts in ``train.optimizer_options``
#: (tf_keras's own argument names), besides the common ones below.
OPTIMIZER_OPTIONS: dict[str, tuple[str, ...]] = {
    "sgd": ("momentum", "nesterov"),
    "adam": ("beta_1", "beta_2", "epsilon", "amsgrad"),
    "adamw": ("beta_1", "beta_2", "epsilon", "amsgrad"),
    "rmsprop": ("rho", "momentum", "epsilon", "centered"),
    "adagrad": ("initial_accumulator_value", "epsilon"),
    "nadam": ("beta_1", "beta_2", "epsilon"),
}
COMMON_OPTIMIZER_OPTIONS = ("clipnorm", "clipvalue", "global_clipnorm")
#: The optimizer names, in the order of `OPTIMIZER_OPTIONS`.
OPTIMIZERS: tuple[str, ...] = tuple(OPTIMIZER_OPTIONS)
Optimizer = Literal[OPTIMIZERS]  # type: ignore[valid-type]


@dataclasses.dataclass
class EarlyStoppingConfig(Section):
    """Early stopping with best-weight restore (`kerastrain.callbacks.EarlyStopping`).

    It stops where tf_keras's `EarlyStopping` would with the same options,
    except that a NaN or infinite value stops training at once (those weights
    are broken and no later epoch repairs them; tf_keras would wait out its
    patience), and that `mode="auto"` also maximizes precision, recall and f1.

    Attributes:
        patience: Epochs without improvement before stopping. Defaults to `5`.
        monitor: The logged quantity watched. Defaults to `"val_loss"`.
        min_delta: The smallest change that counts as an improvement.
            Defaults to `0.0`.
        mode: `"min"`, `"max"`, or `"auto"` (from the name: accuracy, auc,
            precision, recall and f1 are maximized; tf_keras's own auto mode
            maximizes only names ending in acc, accuracy or auc).
            Defaults to `"auto"`.
        restore_best_weights: Finish with the best epoch's weights.
            Defaults to `True`.
        baseline: A value `monitor` must beat, as tf_keras's `baseline`: until
            it does, every epoch uses up patience (an epoch that improves on
            the best so far only delays the stop). Defaults to `None`.
    """

    _path: ClassVar[str] = "train.early_stopping"

    patience: int = option(5, ge=0)
    monitor: str = "val_loss"
    min_delta: float = option(0.0, ge=0.0)
    mode: Literal["auto", "min", "max"] = "auto"
    restore_best_weights: bool = True
    baseline: float | None = None


@dataclasses.dataclass
class BlowupGuardConfig(Section):
    """What happens when the training loss becomes NaN or infinite.

    Attributes:
        retries: Recoveries (restore the last good weights, lower the learning
            rate, go on) before training fails. Defaults to `3`.
        lr_factor: Each recovery multiplies the learning rate by this.
            Defaults to `0.1`.
    """

    _path: ClassVar[str] = "train.blowup_guard"

    retries: int = option(3, ge=0)
    lr_factor: float = option(0.1, gt=0.0, lt=1.0)


@dataclasses.dataclass
class LRFinderConfig(Section):
    """The learning-rate range test run for ``learning_rate="find"``.

    Attributes:
        start_learning_rate: The first learning rate tried. Defaults to `1e-7`.
        end_learning_rate: The last learning rate tried. Defaults to `10.0`.
        steps: Optimizer steps of the sweep (the rates grow geometrically).
            Defaults to `100`.
        rule: `"min_loss"` (a tenth of the rate at the lowest smoothed loss)
            or `"steepest"` (the rate where the smoothed loss falls fastest).
            Defaults to `"min_loss"`.
        diverge: Stop the sweep once the smoothed loss exceeds this multiple
            of its lowest value. Defaults to `4.0`.
    """

    _path: ClassVar[str] = "train.lr_finder"

    start_learning_rate: float = option(1e-7, gt=0.0)
    end_learning_rate: float = option(10.0, gt=0.0)
    steps: int = option(100, ge=5)
    rule: Literal["min_loss", "steepest"] = "min_loss"
    diverge: float = option(4.0, gt=1.0)

    def validate(self) -> None:
        if self.end_learning_rate <= self.start_learning_rate:
            raise config_error(
                "train.lr_finder.end_learning_rate",
                self.end_learning_rate,
                f"> start_learning_rate ({self.start_learning_rate:g})",
            )


# One section per schedule: ``train.schedule_options`` is the one that
# ``train.schedule`` chooses. Lengths are in epochs; `None` lengths default to
# the epochs left after warmup.


@dataclasses.dataclass
class ScheduleOptions(Section):
    """Base of the options of one learning-rate schedule."""

    _path: ClassVar[str] = "train.schedule_options"


@dataclasses.dataclass
class ConstantOptions(ScheduleOptions):
    """``schedule="constant"`` takes no options."""


@dataclasses.dataclass
class StepOptions(ScheduleOptions):
    """``schedule="step"``: multiply by `gamma` every `step_size` epochs.

    The same rates as PyTorch's `StepLR` and tf_keras's `ExponentialDecay`
    with `staircase=True`: the first update of each new period uses the new rate.

    Attributes:
        step_size: Epochs between decays. Defaults to a third of the epochs
            after warmup (at least 1).
        gamma: The factor of each decay. Defaults to `0.1`.
    """

    step_size: float | None = option(None, gt=0.0)
    gamma: float = option(0.1, gt=0.0)


@dataclasses.dataclass
class MultiStepOptions(ScheduleOptions):
    """``schedule="multistep"``: piecewise constant, as PyTorch's `MultiStepLR`.

    Attributes:
        boundaries: Epochs (counted after warmup) where the rate changes,
            increasing: the first update of epoch `b` already uses the next
            rate, as with `"step"` (boundaries `[2, 4]` give the same rates as
            `step_size=2` for 6 epochs). Defaults to half and three quarters
            of the epochs after warmup.
        values: The rates, one more than the boundaries. Defaults to
            `learning_rate * gamma**i`.
        gamma: The factor between successive values when `values` is not
            given. Defaults to `0.1`.
    """

    boundaries: list[float] | None = None
    values: list[float] | None = None
    gamma: float = option(0.1, gt=0.0)

    def validate(self) -> None:
        if self.boundaries is not None:
            steps = zip(self.boundaries, self.boundaries[1:])
            if not self.boundaries or any(b <= a for a, b in steps) or self.boundaries[0] <= 0:
                raise config_error(
                    "train.schedule_options.boundaries",
                    self.boundaries,
                    "a non-empty, strictly increasing list of epochs > 0",
                )
        if self.values is not None:
            if self.boundaries is None:
                raise ConfigError(
                    "The 'train.schedule_options.values' option needs "
                    "'boundaries' too (one value more than boundaries)."
                )
            if len(self.values) != len(self.boundaries) + 1 or any(v < 0 for v in self.values):
                raise config_error(
                    "train.schedule_options.values",
                    self.values,
                    f"{len(self.boundaries) + 1} learning rates >= 0 (one more than the "
                    f"{len(self.boundaries)} boundaries)",
                )


@dataclasses.dataclass
class ExponentialOptions(ScheduleOptions):
    """``schedule="exponential"``: `lr * decay_rate ** (epoch / decay_epochs)`.

    Attributes:
        decay_epochs: Epochs per factor of `decay_rate`. Defaults to `1.0`.
        decay_rate: The factor. Defaults to `0.9`.
        staircase: Decay in whole steps of `decay_epochs`. Defaults to `False`.
    """

    decay_epochs: float = option(1.0, gt=0.0)
    decay_rate: float = option(0.9, gt=0.0)
    staircase: bool = False


@dataclasses.dataclass
class PolynomialOptions(ScheduleOptions):
    """``schedule="polynomial"``: polynomial decay to `end_learning_rate`.

    Attributes:
        decay_epochs: Length of the decay. Defaults to the epochs after warmup.
        end_learning_rate: The final rate. Defaults to `0.0`.
        power: The polynomial's power (1 is linear). Defaults to `1.0`.
    """

    decay_epochs: float | None = option(None, gt=0.0)
    end_learning_rate: float = option(0.0, ge=0.0)
    power: float = option(1.0, gt=0.0)


@dataclasses.dataclass
class CosineOptions(ScheduleOptions):
    """``schedule="cosine"``: half a cosine from `learning_rate` to `alpha * learning_rate`.

    Attributes:
        decay_epochs: Length of the decay. Defaults to the epochs after warmup.
        alpha: The final rate as a fraction of the first. Defaults to `0.0`.
    """

    decay_epochs: float | None = option(None, gt=0.0)
    alpha: float = option(0.0, ge=0.0, le=1.0)


@dataclasses.dataclass
class CosineRestartsOptions(ScheduleOptions):
    """``schedule="cosine_restarts"``: SGDR, cosine decay with warm restarts.

    Attributes:
        first_decay_epochs: The first period. Defaults to the length that makes
            three periods fill the epochs after warmup.
        t_mul: Each period is this many times longer than the last.
            Defaults to `2.0`.
        m_mul: Each restart's peak is this fraction of the last. Defaults to `1.0`.
        alpha: The floor as a fraction of the peak. Defaults to `0.0`.
    """

    first_decay_epochs: float | None = option(None, gt=0.0)
    t_mul: float = option(2.0, gt=0.0)
    m_mul: float = option(1.0, gt=0.0)
    alpha: float = option(0.0, ge=0.0, le=1.0)


@dataclasses.dataclass
class OneCycleOptions(ScheduleOptions):
    """``schedule="onecycle"``: up to `learning_rate`, then far below it.

    PyTorch's `OneCycleLR` (two phases, cosine), step for step: the first
    update uses `learning_rate / div_factor`, the peak is at update
    `pct_start * T - 1` and the end value at update `T - 1`, the last one of
    the cycle's `T` updates; after the cycle the rate stays at the end value.

    Attributes:
        total_epochs: Length of the cycle. Defaults to the epochs after warmup.
        pct_start: Fraction of the cycle spent rising. Defaults to `0.3`.
        div_factor: The start is `learning_rate / div_factor`. Defaults to `25.0`.
        final_div_factor: The end is the start divided by this.
            Defaults to `1e4`.
    """

    total_epochs: float | None = option(None, gt=0.0)
    pct_start: float = option(0.3, gt=0.0, lt=1.0)
    div_factor: float = option(25.0, gt=0.0)
    final_div_factor: float = option(1e4, gt=0.0)


@dataclasses.dataclass
class InverseSqrtOptions(ScheduleOptions):
    """``schedule="inverse_sqrt"``: `lr / sqrt(1 + t / timescale)` (Transformer style).

    With a linear warmup of `w` steps and the default timescale (the warmup),
    update `s` uses `lr * min(s / w, sqrt(w / s))`: the Transformer's schedule
    ("Attention is all you need", section 5.3), scaled to peak at
    `learning_rate`; without warmup, the same curve from its peak on.

    Attributes:
        timescale_epochs: Where the rate has fallen by `sqrt(2)`. Defaults to
            the warmup length, or one epoch without warmup.
    """

    timescale_epochs: float | None = option(None, gt=0.0)


@dataclasses.dataclass
class PlateauOptions(ScheduleOptions):
    """``schedule="plateau"``: `ReduceLROnPlateau`, the adaptive option.

    Attributes:
        monitor: The logged quantity watched. Defaults to `"val_loss"`.
        factor: Multiply the rate by this on a plateau. Defaults to `0.1`.
        patience: Epochs without improvement before lowering. Defaults to `2`.
        min_delta: The smallest change that counts. Defaults to `1e-4`.
        cooldown: Epochs to wait after a reduction. Defaults to `0`.
        min_learning_rate: The floor. Defaults to `0.0`.
        mode: `"min"`, `"max"` or `"auto"`: from the name, accuracy, auc,
            precision, recall and f1 maximized, as in early stopping.
            tf_keras's `ReduceLROnPlateau` on its own maximizes only names
            containing "acc" and would minimize `val_auc`, lowering the rate
            while AUC climbs; kerastrain passes it the mode explicitly.
            Defaults to `"auto"`.
    """

    monitor: str = "val_loss"
    factor: float = option(0.1, gt=0.0, lt=1.0)
    patience: int = option(2, ge=0)
    min_delta: float = option(1e-4, ge=0.0)
    cooldown: int = option(0, ge=0)
    min_learning_rate: float = option(0.0, ge=0.0)
    mode: Literal["auto", "min", "max"] = "auto"


#: Each schedule's name and options, in the order messages list them.
SCHEDULE_OPTIONS: dict[str, type[ScheduleOptions]] = {
    "constant": ConstantOptions,
    "step": StepOptions,
    "multistep": MultiStepOptions,
    "exponential": ExponentialOptions,
    "polynomial": PolynomialOptions,
    "cosine": CosineOptions,
    "cosine_restarts": CosineRestartsOptions,
    "onecycle": OneCycleOptions,
    "inverse_sqrt": InverseSqrtOptions,
    "plateau": PlateauOptions,
}
#: The schedule names.
SCHEDULES: tuple[str, ...] = tuple(SCHEDULE_OPTIONS)
Schedule = Literal[SCHEDULES]  # type: ignore[valid-type]
#: ``train.schedule`` may also be ``"auto"`` (no options: `resolve_schedule`
#: turns it into one of `SCHEDULES`).
SCHEDULE_CHOICES: dict[str, type[ScheduleOptions]] = {**SCHEDULE_OPTIONS, "auto": ConstantOptions}
#: The default schedule's warmup: this fraction of the planned epochs, at most
#: `AUTO_WARMUP_MAX_EPOCHS`.
AUTO_WARMUP_FRACTION = 0.05
AUTO_WARMUP_MAX_EPOCHS = 1.0


def is_schedule_object(value: Any) -> bool:
    """Whether ``value`` looks like a tf_keras `LearningRateSchedule` (duck-typed:
    this module never imports TensorFlow)."""
    return (
        not isinstance(value, (str, bytes, int, float))
        and callable(value)
        and hasattr(value, "get_config")
    )


def _shorthand(value: Any, section: type[Section], field: str | None = None) -> Section | None:
    """`True` -> defaults, `False`/`None` -> off, an int -> that `field`."""
    if value is False or value is None:
        return None
    if value is True:
        return section()
    if isinstance(value, int) and field is not None:
        return section(**{field: value})
    return value


@dataclasses.dataclass
class WarmupConfig(Section):
    """Warming the learning rate up before the schedule starts.

    Attributes:
        epochs: Warm up over this many epochs (fractions allowed).
            Defaults to `0.0` (no warmup).
        steps: Warm up over this many optimizer steps instead.
            Defaults to `None`.
        method: `"linear"` or `"exponential"`. Defaults to `"linear"`.
        start_learning_rate: The rate warmup starts from. Defaults to `None`:
            0 for linear warmup, a hundredth of the peak for exponential. From
            0, the first update uses a rate of 0 and update `s` uses
            `peak * s / warmup`, as the Transformer schedule and Hugging Face's
            `get_*_schedule_with_warmup` do (with Adam it still fills the moment
            estimates); set a rate here for a first update that moves the
            weights.
    """

    _path: ClassVar[str] = "train.warmup"

    epochs: float = option(0.0, ge=0.0)
    steps: int | None = option(None, ge=0)
    method: Literal["linear", "exponential"] = "linear"
    start_learning_rate: float | None = option(None, ge=0.0)

    def validate(self) -> None:
        if self.epochs > 0 and self.steps:
            raise ConfigError(
                "Both 'train.warmup.epochs' and 'train.warmup.steps' were given; set one of them."
            )
        if self.method == "exponential" and self.start_learning_rate == 0:
            raise config_error(
                "train.warmup.start_learning_rate",
                0.0,
                "> 0 with method='exponential' (it grows geometrically)",
            )

    @property
    def enabled(self) -> bool:
        """Whether warmup was asked for (epochs or steps)."""
        return self.epochs > 0 or bool(self.steps)


@dataclasses.dataclass
class BackupConfig(Section):
    """The training backup a rerun resumes from after a crash.

    Attributes:
        resume: Rerunning with the same `output_dir` after a crash resumes
            from the last backup; `False` starts training again.
            Defaults to `True`.
        frequency: Back up the training state every `"epoch"` or every N
            steps. Defaults to `"epoch"`.
        interval: With epoch backups, skip an epoch's backup while the last
            one is younger than this many seconds, so that short epochs do
            not spend their time writing checkpoints (a backup of a small
            model costs about 40 ms; a crash then repeats at most this long
            plus one epoch). `0` backs up every epoch. Multi-worker runs back
            up every epoch (the workers must save together). Defaults to `10.0`.
    """

    _path: ClassVar[str] = "train.backup"

    resume: bool = True
    frequency: Literal["epoch"] | int = option("epoch", ge=1)
    interval: float = option(10.0, ge=0.0)


@dataclasses.dataclass
class ExecutionConfig(Section):
    """How fast a training step runs: precision, XLA, steps per call.

    Attributes:
        mixed_precision: `"float32"`, `"mixed_bfloat16"`, `"mixed_float16"`
            (with loss scaling), or `"auto"`: bfloat16 on TPUs, float16 on
            GPUs with tensor cores; on a CPU with native bfloat16 (AVX512_BF16
            or AMX), bfloat16 when a measured training step is at least 1.1x
            faster than in float32 (small models are slower in bfloat16: the
            casts outweigh the faster products); float32 elsewhere. The
            choice and its reason are logged and reported. Defaults to
            `"auto"`.
        jit_compile: Compile the training step with XLA, or `"auto"`: on for
            TPUs, elsewhere only when a probe shows it faster (probed only when
            the run is long enough to pay for a compilation).
            Defaults to `"auto"`.
        steps_per_execution: Training steps per `tf.function` call, or
            `"auto"`: chosen from the measured cost of a step (about 50 ms of
            work per call), and 1 when a callback needs every step.
            Defaults to `"auto"`.
    """

    _path: ClassVar[str] = "train.execution"

    mixed_precision: Literal["auto"] | Precision = "auto"
    jit_compile: Literal["auto"] | bool = "auto"
    steps_per_execution: Literal["auto"] | int = option("auto", ge=1)


@dataclasses.dataclass
class EMAConfig(Section):
    """An exponential moving average of the weights, used for validation,
    evaluation and export.

    Attributes:
        momentum: The average's momentum (tf_keras's `ema_momentum`).
            Defaults to `0.99`.
    """

    _path: ClassVar[str] = "train.ema"

    momentum: float = option(0.99, gt=0.0, lt=1.0)


@dataclasses.dataclass
class TrainConfig(Section):
    """How the model is compiled and fitted.

    Attributes:
        epochs: Training epochs (an upper bound with early stopping).
            Defaults to `20`.
        batch_size: Examples per step (per replica under a distribution
            strategy, per micro-batch with gradient accumulation), or `"auto"`:
            `fit_pipeline` times one training step at 32, 64, 128, ... and
            keeps the largest batch past which examples/second stops rising
            (by 15%), at most the training split, a fiftieth of it (50 updates
            an epoch) and 4096; a numeric `learning_rate` (the rate for batch
            32) is scaled by `sqrt(batch / 32)`. The choice and its reason are
            in `result.performance["batch_size"]` and the report, the number
            in the resolved config (`kerastrain.training.batch_size`).
            Defaults to `32` when neither this nor `data_options.batch_size`
            is set.
        optimizer: One of sgd, adam, adamw, rmsprop, adagrad, nadam.
            Defaults to `"adam"`.
        optimizer_options: Extra keyword arguments of the optimizer, e.g.
            `{"momentum": 0.9, "nesterov": True}` for sgd. Defaults to `{}`.
        learning_rate: The (peak) learning rate; `"find"` to run a
            learning-rate range test first and train with its suggestion; or a
            tf_keras `LearningRateSchedule` object (then `schedule` must stay
            `"constant"`). Defaults to `1e-3`.
        weight_decay: Decoupled weight decay applied by the optimizer, for
            every optimizer: each update first multiplies the weights by
            `1 - learning_rate * weight_decay` (as tf_keras and PyTorch's AdamW;
            not the L2 penalty of PyTorch's SGD/Adam `weight_decay`). `adamw`
            without it decays by 0, not by tf_keras's default 0.004.
            Defaults to `0.0`.
        schedule: `"constant"`, `"step"`, `"multistep"`, `"exponential"`,
            `"polynomial"`, `"cosine"`, `"cosine_restarts"`, `"onecycle"`,
            `"inverse_sqrt"`, `"plateau"` (`ReduceLROnPlateau`), or `"auto"`:
            `fit_pipeline` resolves it (`resolve_schedule`) to `"cosine"`
            (decay to 0 over the planned epochs) after a linear warmup over 5%
            of the epochs (at most one; the warmup given, when one is), or to
            `"constant"` when `learning_rate` is a schedule object; the
            resolved config records the choice. Outside `fit_pipeline` an
            unresolved `"auto"` trains as `"constant"`. On the digits CNN
            `"auto"` reached the target accuracy in half the time of
            `"constant"`; it is not the default because short runs (2-3
            epochs) decay the rate before the model has learnt much.
            Defaults to `"constant"`.
        schedule_options: The chosen schedule's options, lengths in epochs:
            a mapping of the options of its section (`StepOptions`,
            `CosineOptions`, ...; `SCHEDULE_OPTIONS`), which it becomes.
            Defaults to `{}` (the schedule's defaults).
        warmup: See `WarmupConfig`. Defaults to no warmup.
        lr_finder: Options of the range test behind `learning_rate="find"`.
            Defaults to `LRFinderConfig()`.
        early_stopping: Patience as an integer, a mapping of
            `EarlyStoppingConfig` options, `True` for the defaults, or
            `None`/`False` to train every epoch. A NaN or infinite monitored
            value stops training at once (tf_keras would wait out the
            patience). Defaults to `5`.
        gradient_accumulation: Micro-batches of `batch_size` per optimizer
            update (same result as a batch this many times larger).
            Defaults to `1`.
        recompute: Recompute activations in the backward pass instead of
            keeping them (`tf.recompute_grad` over the model's blocks; same
            gradients, less activation memory, about one more forward pass of
            compute): `True` for every block, a number of blocks counted from
            the input, or `False`/`0`. Defaults to `False`.
        memory_limit_mb: The memory per device, in MiB, the memory plan checks
            the run against before training (a run estimated not to fit is
            refused with what would make it fit); `None` checks against the
            device's own memory (the GPU's, or the host's RAM on a CPU).
            Defaults to `None`.
        ema: Keep an exponential moving average of the weights (validation,
            evaluation and export use the averaged weights): `True`, a
            mapping of `EMAConfig` options, or `False`/`None`.
            Defaults to `False`.
        clipnorm: Clip each gradient to this norm. Defaults to `None`.
        global_clipnorm: Clip all gradients together to this global norm.
            Defaults to `None`.
        loss: A tf_keras loss name, or `"auto"` to choose it from the task.
            Defaults to `"auto"`.
        label_smoothing: Label smoothing for classification losses.
            Defaults to `0.0`.
        backup: See `BackupConfig`: resuming after a crash, and how often the
            training state is backed up.
        checkpoints: Write the best and the last weights to
            `<run>/checkpoints/`. Defaults to `True`.
        blowup_guard: On a NaN/Inf loss, restore the last good weights, lower
            the rate and go on, up to `retries` times: `True`, the number of
            retries, a mapping of `BlowupGuardConfig` options, or `False`.
            Defaults to `True`.
        tensorboard: Write TensorBoard logs to `<run>/tensorboard/` (the same
            logs as `tracking.tensorboard`; one writer when both are set).
            Defaults to `False`.
        execution: See `ExecutionConfig`: mixed precision, XLA and steps per
            execution, each `"auto"` by default.
        deterministic: Enable TensorFlow op determinism (slower, bit-for-bit
            repeatable with a seed). Defaults to `False`.
        verbose: Keras progress output: 0 silent, 1 progress bar, 2 one line
            per epoch, `"auto"`. Defaults to `"auto"`.
        class_weight: Weights of the classes in the training loss (sample
            weights in the training batches, so they apply under gradient
            accumulation and mixup too): `"balanced"` (each class weighs
            `rows / (classes * rows of the class)`, counted on the rows trained
            on), or a mapping from a label (class name or index) to a weight
            > 0, classes not named weighing 1. Classification only.
            Defaults to `None` (every row weighs 1).

    The flat keys of earlier releases (`warmup_epochs`, `warmup_steps`,
    `warmup_method`, `warmup_learning_rate`, `resume`, `backup_frequency`,
    `backup_interval`, `mixed_precision`, `jit_compile`, `steps_per_execution`,
    `ema_momentum`) are still read, with a `DeprecationWarning` naming the
    new key; they stop working in the next release.
    """

    _path: ClassVar[str] = "train"
    _moved: ClassVar[dict[str, str]] = {
        "warmup_epochs": "warmup.epochs",
        "warmup_steps": "warmup.steps",
        "warmup_method": "warmup.method",
        "warmup_learning_rate": "warmup.start_learning_rate",
        "resume": "backup.resume",
        "backup_frequency": "backup.frequency",
        "backup_interval": "backup.interval",
        "mixed_precision": "execution.mixed_precision",
        "jit_compile": "execution.jit_compile",
        "steps_per_execution": "execution.steps_per_execution",
        "ema_momentum": "ema.momentum",
    }

    epochs: int = option(20, gt=0)
    batch_size: int | Literal["auto"] | None = option(None, gt=0)
    optimizer: Optimizer = "adam"
    optimizer_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    learning_rate: float | Literal["find"] | Any = option(1e-3, gt=0.0)
    weight_decay: float = option(0.0, ge=0.0)
    schedule: Literal["auto"] | Schedule = "constant"
    schedule_options: ScheduleOptions | dict[str, Any] = option(
        default_factory=dict, chosen_by="schedule", sections=SCHEDULE_CHOICES
    )
    warmup: WarmupConfig = dataclasses.field(default_factory=WarmupConfig)
    lr_finder: LRFinderConfig = dataclasses.field(default_factory=LRFinderConfig)
    early_stopping: bool | int | EarlyStoppingConfig | None = 5
    gradient_accumulation: int = option(1, ge=1)
    recompute: bool | int = option(False, ge=0)
    memory_limit_mb: float | None = option(None, gt=0)
    ema: bool | EMAConfig | None = False
    clipnorm: float | None = option(None, gt=0.0)
    global_clipnorm: float | None = option(None, gt=0.0)
    loss: str = "auto"
    label_smoothing: float = option(0.0, ge=0.0, lt=1.0)
    backup: BackupConfig = dataclasses.field(default_factory=BackupConfig)
    checkpoints: bool = True
    blowup_guard: bool | int | BlowupGuardConfig | None = True
    tensorboard: bool = False
    execution: ExecutionConfig = dataclasses.field(default_factory=ExecutionConfig)
    deterministic: bool = False
    verbose: Literal["auto", 0, 1, 2] = "auto"
    class_weight: Literal["balanced"] | dict[Any, float] | None = None

    def validate(self) -> None:
        object.__setattr__(
            self, "early_stopping", _shorthand(self.early_stopping, EarlyStoppingConfig, "patience")
        )
        object.__setattr__(
            self, "blowup_guard", _shorthand(self.blowup_guard, BlowupGuardConfig, "retries")
        )
        object.__setattr__(self, "ema", _shorthand(self.ema, EMAConfig))
        self._check_learning_rate()
        self._check_optimizer_options()
        self._check_schedule()
        check_class_weight_values(self.class_weight)

    def _check_learning_rate(self) -> None:
        lr = self.learning_rate
        if (
            isinstance(lr, bool)
            or (isinstance(lr, str) and lr != "find")
            or not (isinstance(lr, (int, float, str)) or is_schedule_object(lr))
        ):
            raise config_error(
                "train.learning_rate",
                lr,
                "a number > 0, 'find', or a tf_keras LearningRateSchedule" + number_as_text(lr),
                ["find"],
            )
        if isinstance(lr, int):
            object.__setattr__(self, "learning_rate", float(lr))

    def _check_optimizer_options(self) -> None:
        for key in ("learning_rate", "weight_decay"):
            if key in self.optimizer_options:
                raise config_error(
                    f"train.optimizer_options.{key}",
                    self.optimizer_options[key],
                    f"set as 'train.{key}', not inside optimizer_options",
                )
        allowed = OPTIMIZER_OPTIONS[self.optimizer] + COMMON_OPTIMIZER_OPTIONS
        for key in self.optimizer_options:
            if key not in allowed:
                raise ConfigError(
                    f"Unknown option 'train.optimizer_options.{key}' for optimizer "
                    f"{self.optimizer!r}. It accepts: {', '.join(allowed)}."
                    + did_you_mean(key, allowed)
                )
        for key in ("clipnorm", "global_clipnorm"):
            if key in self.optimizer_options and getattr(self, key) is not None:
                raise config_error(
                    f"train.optimizer_options.{key}",
                    self.optimizer_options[key],
                    f"set once, as 'train.{key}', not also inside optimizer_options",
                )
        norms = [
            k
            for k in ("clipnorm", "global_clipnorm")
            if getattr(self, k) is not None or k in self.optimizer_options
        ]
        if len(norms) > 1:
            raise ConfigError(
                "Both 'train.clipnorm' and 'train.global_clipnorm' were given; "
                "clip each gradient by norm or all of them by their global norm, "
                "not both."
            )

    def _check_schedule(self) -> None:
        if self.warmup.epochs >= self.epochs:
            raise config_error(
                "train.warmup.epochs",
                self.warmup.epochs,
                f"< train.epochs ({self.epochs}), so that training goes past warmup",
            )
        if self.schedule == "plateau":
            if is_schedule_object(self.learning_rate) or self.warmup.enabled:
                given = (
                    "train.learning_rate is a LearningRateSchedule object"
                    if is_schedule_object(self.learning_rate)
                    else "warmup was asked for"
                )
                raise ConfigError(
                    f"schedule='plateau' (ReduceLROnPlateau) cannot be combined with a schedule "
                    f"object: {given}. ReduceLROnPlateau sets the optimizer's learning rate "
                    "itself, which a schedule would fight. Use a number as learning_rate and no "
                    "warmup, or choose a schedule other than 'plateau'."
                )
        elif is_schedule_object(self.learning_rate) and self.schedule not in ("constant", "auto"):
            raise ConfigError(
                f"train.learning_rate is a LearningRateSchedule object, so it already is the "
                f"schedule; schedule={self.schedule!r} would replace it. Leave schedule as "
                "'constant', or give learning_rate as a number."
            )


def check_class_weight_values(class_weight: Any) -> None:
    """Refuses a `train.class_weight` mapping with a weight that is not a
    number > 0, naming the label (which labels exist is checked once the
    data is read: `kerastrain.data.balance.class_weight_vector`).

    Raises:
        ConfigError: For an empty mapping, or a weight that is not a finite
            number > 0.
    """
    if not isinstance(class_weight, dict):
        return
    if not class_weight:
        raise config_error(
            "train.class_weight", class_weight, "'balanced', None, or a mapping label -> weight"
        )
    for label, weight in class_weight.items():
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight > 0:
            raise config_error(
                f"train.class_weight[{label!r}]",
                weight,
                "a number > 0 (the weight of that class in the training loss)",
            )


def resolve_schedule(train: TrainConfig) -> TrainConfig:
    """``train`` with ``schedule="auto"`` replaced by the schedule it stands for.

    `"cosine"` (decay to 0 over the epochs after warmup), with a linear warmup
    over `AUTO_WARMUP_FRACTION` of the planned epochs (at most
    `AUTO_WARMUP_MAX_EPOCHS`) unless a warmup was given: a short warmup keeps
    the first updates of a fresh Adam (or of a larger batch's scaled rate)
    from overshooting, and the decay reaches a given accuracy in fewer epochs
    than a constant rate. A `LearningRateSchedule` object as `learning_rate`
    is the schedule already: `"constant"`. Any other schedule is returned
    unchanged.

    Example:
        >>> resolve_schedule(TrainConfig(epochs=10, schedule="auto")).schedule
        'cosine'
        >>> resolve_schedule(TrainConfig(schedule="step")).schedule
        'step'
    """
    if train.schedule != "auto":
        return train
    if is_schedule_object(train.learning_rate):
        return train.replace(schedule="constant")
    if train.warmup.enabled:
        return train.replace(schedule="cosine")
    warmup = min(AUTO_WARMUP_FRACTION * train.epochs, AUTO_WARMUP_MAX_EPOCHS)
    return train.replace(
        schedule="cosine", warmup=train.warmup.replace(epochs=round(warmup, 4), steps=None)
    )
