"""Host-side classification metrics: accuracy, macro-F1 and mean average precision.

The functions take NumPy (or JAX) arrays, compute in float64 on the host and
return Python floats. They are reference implementations written to agree with
scikit-learn's definitions, without depending on scikit-learn.
"""

import numpy as np

# The keys of classification_metrics, in the order tables list them.
METRIC_NAMES = ("accuracy", "macro_f1", "map")


def _as_labels(labels) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {labels.shape}.")
    if labels.size == 0:
        raise ValueError("labels must be non-empty.")
    if labels.dtype == np.bool_ or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must have an integer dtype, got {labels.dtype}.")
    return labels


def _as_probs(probs) -> np.ndarray:
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2:
        raise ValueError(f"probs must be 2-D [batch, classes], got shape {probs.shape}.")
    if not np.all(np.isfinite(probs)):
        raise ValueError("probs must be finite.")
    return probs


def _check_same_length(labels: np.ndarray, other: np.ndarray, name: str) -> None:
    if labels.shape[0] != other.shape[0]:
        raise ValueError(f"labels and {name} must have the same length, got {labels.shape[0]} and {other.shape[0]}.")


def _check_in_range(values: np.ndarray, num_classes: int, name: str) -> None:
    if values.min() < 0 or values.max() >= num_classes:
        raise ValueError(f"{name} must lie in [0, {num_classes}), got values in [{values.min()}, {values.max()}].")


def _validated_labels_and_probs(labels, probs) -> tuple[np.ndarray, np.ndarray]:
    labels, probs = _as_labels(labels), _as_probs(probs)
    _check_same_length(labels, probs, "probs")
    _check_in_range(labels, probs.shape[1], "labels")
    return labels, probs


def accuracy(labels, probs) -> float:
    """Fraction of samples whose highest-scoring class is the label.

    Ties in `probs` resolve to the lowest class index (`np.argmax`).

    Args:
        labels: integer class indices, shape [batch].
        probs: class probabilities (or any per-class scores), shape
            [batch, classes].

    Returns:
        The accuracy in [0, 1].

    Raises:
        ValueError: if a shape is wrong, the lengths differ or a label is not in
            [0, classes).
    """
    labels, probs = _validated_labels_and_probs(labels, probs)
    return float(np.mean(np.argmax(probs, axis=1) == labels))


def macro_f1(labels, predictions_or_probs, num_classes: int) -> float:
    """Unweighted mean over classes of the per-class F1 score.

    Per class c, F1 = 2 TP / (2 TP + FP + FN). As in scikit-learn's
    `f1_score(average="macro")` with its default `labels=None`, the mean runs
    over the classes that occur in `labels` or in the predictions; a class
    absent from both has no defined F1 and is left out, rather than counted as
    0 (which is what passing `labels=range(num_classes)` to scikit-learn does).

    Args:
        labels: integer class indices, shape [batch].
        predictions_or_probs: either predicted class indices, shape [batch], or
            class probabilities (or any per-class scores), shape
            [batch, num_classes], which are turned into predictions by argmax.
        num_classes: the number of classes.

    Returns:
        The macro-averaged F1 score in [0, 1].

    Raises:
        ValueError: if a shape is wrong, the lengths differ, or a label or
            prediction is not in [0, num_classes).

    References:
        scikit-learn, `sklearn.metrics.f1_score`.
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}.")
    labels = _as_labels(labels)
    predictions = np.asarray(predictions_or_probs)
    if predictions.ndim == 2:
        probs = _as_probs(predictions)
        if probs.shape[1] != num_classes:
            raise ValueError(f"predictions_or_probs has {probs.shape[1]} classes, expected num_classes={num_classes}.")
        predictions = np.argmax(probs, axis=1)
    elif predictions.ndim != 1:
        raise ValueError(f"predictions_or_probs must be 1-D predictions or 2-D probs, got shape {predictions.shape}.")
    elif predictions.dtype == np.bool_ or not np.issubdtype(predictions.dtype, np.integer):
        raise ValueError(f"1-D predictions_or_probs must have an integer dtype, got {predictions.dtype}.")
    _check_same_length(labels, predictions, "predictions_or_probs")
    _check_in_range(labels, num_classes, "labels")
    _check_in_range(predictions, num_classes, "predictions_or_probs")

    true_positives = np.bincount(labels[labels == predictions], minlength=num_classes)
    label_counts = np.bincount(labels, minlength=num_classes)
    prediction_counts = np.bincount(predictions, minlength=num_classes)
    # 2 TP + FP + FN == (#labelled c) + (#predicted c); zero only for absent classes.
    denominators = (label_counts + prediction_counts).astype(np.float64)
    present = denominators > 0
    f1_per_class = 2.0 * true_positives[present] / denominators[present]
    return float(np.mean(f1_per_class))


def _binary_average_precision(is_positive: np.ndarray, scores: np.ndarray) -> float:
    """Average precision of one class, AP = sum_n (R_n - R_{n-1}) P_n.

    Thresholds are the distinct scores in decreasing order; tied scores form a
    single threshold, as in scikit-learn's `average_precision_score` (no
    interpolation of the precision-recall curve).
    """
    order = np.argsort(-scores, kind="stable")
    scores, is_positive = scores[order], is_positive[order]
    # Position of the last sample of each run of equal scores.
    threshold_ends = np.append(np.flatnonzero(np.diff(scores)), scores.size - 1)
    true_positives = np.cumsum(is_positive)[threshold_ends]
    precision = true_positives / (threshold_ends + 1)
    recall = true_positives / true_positives[-1]
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


def mean_average_precision(labels, probs) -> float:
    """Mean over classes of the one-vs-rest average precision.

    Each class c is scored as a binary problem (positives: `labels == c`,
    scores: `probs[:, c]`) with scikit-learn's `average_precision_score`
    definition. The mean runs over the classes with at least one positive in
    `labels`: for a class with no positives AP is undefined (scikit-learn warns
    and scores it 0), so such classes are left out instead of pulling the mean
    down.

    Args:
        labels: integer class indices, shape [batch].
        probs: class probabilities (or any per-class scores), shape
            [batch, classes].

    Returns:
        The mean average precision in [0, 1].

    Raises:
        ValueError: if a shape is wrong, the lengths differ or a label is not in
            [0, classes).

    References:
        scikit-learn, `sklearn.metrics.average_precision_score`.
    """
    labels, probs = _validated_labels_and_probs(labels, probs)
    return float(np.mean([_binary_average_precision(labels == c, probs[:, c]) for c in np.unique(labels)]))


def classification_metrics(labels, probs) -> dict[str, float]:
    """Accuracy, macro-F1 and mAP of class probabilities.

    Args:
        labels: integer class indices, shape [batch].
        probs: class probabilities (or any per-class scores), shape
            [batch, classes].

    Returns:
        A dict with keys "accuracy", "macro_f1" and "map"; see `accuracy`,
        `macro_f1` and `mean_average_precision`.

    Raises:
        ValueError: if a shape is wrong, the lengths differ or a label is not in
            [0, classes).
    """
    labels, probs = _validated_labels_and_probs(labels, probs)
    return {
        "accuracy": accuracy(labels, probs),
        "macro_f1": macro_f1(labels, probs, num_classes=probs.shape[1]),
        "map": mean_average_precision(labels, probs),
    }
