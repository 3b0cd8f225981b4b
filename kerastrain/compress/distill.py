"""Knowledge distillation: a small student learns from a teacher's outputs.

TF-MOT has no distillation API; this is kerastrain's own. `Distiller` wraps a
student and a frozen teacher into one tf_keras model whose loss is

    alpha * loss(labels, student) + (1 - alpha) * T^2 * KL(teacher_T || student_T)

where `_T` is the output distribution softened by the temperature T (the
factor T^2 keeps the gradient scale independent of T, as in Hinton et al.).
It trains with the spine's ``model.fit``, under any strategy; the student
then takes the teacher's place.

The softened distributions are computed from the models' *outputs*
(probabilities), so any kerastrain model works unchanged: for a softmax,
``softmax(log(p) / T)`` is exactly the softmax of the logits divided by T;
for a sigmoid, the logit is ``log(p / (1 - p))``. Regression students match
the teacher's outputs by squared error.
"""

from __future__ import annotations

import logging
from typing import Any

from kerastrain._keras import ensure_tf_keras, keras, tf
from kerastrain.config import PipelineConfig
from kerastrain.config.compress import DistillConfig
from kerastrain.task import Task
from kerastrain.training import build_compiled_model

logger = logging.getLogger(__name__)

__all__ = ["Distiller", "soft_loss", "build_student"]

_EPS = 1e-7


def _tempered_log_probs(probs: tf.Tensor, temperature: float, binary: bool) -> tf.Tensor:
    probs = tf.clip_by_value(tf.cast(probs, tf.float32), _EPS, 1.0 - _EPS)
    if binary:
        logit = tf.math.log(probs) - tf.math.log1p(-probs)
        scaled = logit / temperature
        return tf.concat([tf.math.log_sigmoid(-scaled), tf.math.log_sigmoid(scaled)], axis=-1)
    return tf.nn.log_softmax(tf.math.log(probs) / temperature, axis=-1)


def soft_loss(task: Task, teacher: tf.Tensor, student: tf.Tensor, temperature: float) -> tf.Tensor:
    """The per-batch mean distillation loss between two models' outputs.

    Classification: `T^2` times the KL divergence between the softened
    teacher and student distributions. Regression: mean squared error.
    """
    if not task.is_classification:
        gap = tf.cast(teacher, tf.float32) - tf.cast(student, tf.float32)
        return tf.reduce_mean(tf.square(gap))
    binary = task.kind == "binary"
    log_t = _tempered_log_probs(teacher, temperature, binary)
    log_s = _tempered_log_probs(student, temperature, binary)
    kl = tf.reduce_sum(tf.exp(log_t) * (log_t - log_s), axis=-1)
    return temperature**2 * tf.reduce_mean(kl)


class Distiller(keras.Model):
    """A student trained on the labels and on a frozen teacher's outputs.

    `call` is the student's, so metrics and predictions are the student's.
    Compile it like any model (the compiled loss is the loss on the labels),
    fit it, then use `.student`.

    Args:
        student: The model being trained.
        teacher: The model whose outputs it learns; never trained.
        task: The task (how outputs become distributions).
        temperature: Softening of both distributions. Defaults to `4.0`.
        alpha: Weight of the loss on the labels. Defaults to `0.5`.
    """

    def __init__(
        self,
        student: keras.Model,
        teacher: keras.Model,
        task: Task,
        temperature: float = 4.0,
        alpha: float = 0.5,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.student = student
        self.teacher = teacher
        self.teacher.trainable = False
        self.task = task
        self.temperature = float(temperature)
        self.alpha = float(alpha)

    def call(self, inputs: Any, training: bool | None = None) -> tf.Tensor:
        return self.student(inputs, training=training)

    def compute_loss(
        self, x: Any = None, y: Any = None, y_pred: Any = None, sample_weight: Any = None
    ) -> tf.Tensor:
        # The compiled loss is already scaled for the replicas; the soft term
        # is a per-replica mean, so it is scaled the same way.
        hard = super().compute_loss(x, y, y_pred, sample_weight)
        soft = soft_loss(self.task, self.teacher(x, training=False), y_pred, self.temperature)
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        return self.alpha * hard + (1.0 - self.alpha) * soft / replicas


def build_student(
    config: PipelineConfig, distill: DistillConfig, prepared: Any, strategy: tf.distribute.Strategy
) -> keras.Model:
    """Builds the student inside the strategy scope, through the same
    `build_compiled_model` the run used: the run's factory with the run's
    `model_options` updated by the student's, or, when
    `distill.student["model"]` names another factory, that one with the
    student's options alone.

    Raises:
        ConfigError: For an unknown factory or option (named as
            `model_options.<key>` of the student's factory).
    """
    options = dict(distill.student)
    spec = options.pop("model", config.model)
    if spec == config.model:
        options = {**config.model_options, **options}
    student = build_compiled_model(
        config.train,
        prepared,
        strategy,
        model_spec=spec,
        model_options=options,
        batch_size=config.batch_size,
        distribute=config.distribute,
    )
    ensure_tf_keras(student, "compress.distill.student")
    return student
