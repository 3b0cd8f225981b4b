"""Weight clustering (TF-MOT `cluster_weights`) and its inverse.

`cluster(model, ...)` wraps the chosen layers so that each kernel shares at
most `clusters` values, fine-tuned centroids; `strip(model)` leaves a plain
model whose kernels hold only those values, which compresses well. After
pruning, clustering preserves the zeros (TF-MOT's sparsity-preserving
clustering).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np

from kerastrain._keras import keras, tf
from kerastrain.compress.common import kernel_names, rebuild, select_layers, tfmot
from kerastrain.config.compress import ClusterConfig

logger = logging.getLogger(__name__)

__all__ = [
    "clusterable",
    "clusterable_layers",
    "cluster",
    "clustering_callbacks",
    "strip",
    "unique_values",
    "CENTROID_INITS",
]

#: `ClusterConfig.init` -> TF-MOT's `CentroidInitialization` member name.
CENTROID_INITS = {
    "kmeans++": "KMEANS_PLUS_PLUS",
    "linear": "LINEAR",
    "density": "DENSITY_BASED",
    "random": "RANDOM",
}


def _registry() -> Any:
    from tensorflow_model_optimization.python.core.clustering.keras import clustering_registry

    return clustering_registry.ClusteringRegistry


def clusterable(layer: keras.layers.Layer) -> bool:
    """Whether TF-MOT clusters some weight of ``layer``."""
    return bool(kernel_names(layer, _registry()))


def clusterable_layers(model: keras.Model, config: ClusterConfig) -> list[str]:
    """The layers ``config`` selects (see `LayerSelection`)."""
    return select_layers(model, config, clusterable, "compress.cluster", "clustered")


def cluster(
    model: keras.Model,
    config: ClusterConfig,
    *,
    preserve_sparsity: bool = False,
    strategy: tf.distribute.Strategy | None = None,
) -> keras.Model:
    """Wraps the selected layers for clustering; the inverse is `strip`.

    Args:
        model: A trained (or pruned and stripped) functional model.
        config: Cluster count, centroid init and layer selection.
        preserve_sparsity: Keep zero weights at zero (after pruning).
            Defaults to `False`.
        strategy: The strategy whose scope owns the new variables.
            Defaults to `None` (the current one).

    Returns:
        A new, uncompiled model to fine-tune.

    Raises:
        ConfigError: For a layer selection that names unknown or
            unclusterable layers, or selects none.
    """
    from tensorflow_model_optimization.python.core.clustering.keras.experimental import (
        cluster as experimental,
    )

    strategy = strategy or tf.distribute.get_strategy()
    selected = clusterable_layers(model, config)
    init = getattr(tfmot().clustering.keras.CentroidInitialization, CENTROID_INITS[config.init])

    def wrap(layer: keras.layers.Layer) -> keras.layers.Layer:
        # The experimental entry point is the public one plus preserve_sparsity.
        return experimental.cluster_weights(
            layer,
            number_of_clusters=config.clusters,
            cluster_centroids_init=init,
            preserve_sparsity=preserve_sparsity,
        )

    logger.info(
        "Clustering %s into %d values (%s init%s).",
        ", ".join(selected),
        config.clusters,
        config.init,
        ", zeros kept" if preserve_sparsity else "",
    )
    return rebuild(model, strategy, wrap, selected)


def clustering_callbacks(
    log_dir: str | os.PathLike | None = None,
) -> list[keras.callbacks.Callback]:
    """`ClusteringSummaries` when ``log_dir`` is given, else nothing."""
    if log_dir is None:
        return []
    return [tfmot().clustering.keras.ClusteringSummaries(log_dir=os.fspath(log_dir))]


def strip(model: keras.Model, strategy: tf.distribute.Strategy | None = None) -> keras.Model:
    """Removes the clustering wrappers (the inverse of `cluster`), keeping the
    clustered weights. The result is uncompiled and reloads with no scopes."""
    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():
        return tfmot().clustering.keras.strip_clustering(model)


def unique_values(model: keras.Model, layers: list[str] | None = None) -> dict[str, int]:
    """The number of distinct values in each layer's kernel.

    Args:
        model: A stripped model.
        layers: Layer names, or None for every layer with a `kernel`.

    Returns:
        Layer name -> distinct kernel values.
    """
    result = {}
    for layer in model.layers:
        inner = getattr(layer, "layer", layer)
        kernel = getattr(inner, "kernel", None)
        if kernel is not None and (layers is None or inner.name in layers):
            result[inner.name] = int(np.unique(kernel.numpy()).size)
    return result
