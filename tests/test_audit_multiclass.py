"""The one-column target-leakage rule with more than two classes: a column
must tell every class from the rest, not one class on average."""

from __future__ import annotations

import numpy as np

from kerastrain.config import DataConfig
from kerastrain.data.audit import audit_data
from kerastrain.data.prepare import prepare_data


def test_iris_petals_are_not_leakage_but_a_copy_of_a_multiclass_label_is():
    p = prepare_data("iris", DataConfig(), seed=0)
    # Petal width sets setosa apart (mean one-vs-rest ROC-AUC 0.99) but
    # tells versicolor from the rest at 0.98: a strong feature, not a copy
    # of the label. (Iris's rows 101 and 142 are the
    # same flower: that cross-split duplicate is real and still reported.)
    quality = audit_data(p.x, p.y, p.task, p.splits, feature_names=p.feature_names)
    assert not quality.of("target_leakage")
    leaks = [f.check for f in quality.findings if f.severity == "leakage"]
    assert leaks == ["cross_split_duplicates"]
    # A column that is the label plus noise (3 classes) still is.
    rng = np.random.default_rng(0)
    copy = p.y + rng.normal(scale=0.1, size=len(p.y))
    x = np.column_stack([p.x, copy])
    names = [*p.feature_names, "copy"]
    found = audit_data(x, p.y, p.task, p.splits, feature_names=names).of("target_leakage")
    assert [f.columns for f in found] == [("copy",)]
    assert "worst one-vs-rest ROC-AUC" in found[0].message
