"""Tests for mie_jax.metrics, with scikit-learn as the reference."""

import warnings

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import accuracy_score, average_precision_score, f1_score

from mie_jax import metrics

# Three classes; class 2 occurs in neither the labels nor the argmax predictions.
LABELS = np.array([0, 0, 1, 1, 3, 3, 3])
PROBS = np.array(
    [
        [0.7, 0.1, 0.1, 0.1],
        [0.2, 0.5, 0.2, 0.1],
        [0.1, 0.6, 0.2, 0.1],
        [0.3, 0.3, 0.1, 0.3],  # tie between classes 0, 1 and 3: argmax picks 0
        [0.1, 0.1, 0.1, 0.7],
        [0.25, 0.25, 0.25, 0.25],
        [0.1, 0.2, 0.3, 0.4],
    ]
)


def sklearn_mean_average_precision(labels, probs):
    """Mean of sklearn's per-class AP over classes with at least one positive."""
    return np.mean([average_precision_score(labels == c, probs[:, c]) for c in np.unique(labels)])


@st.composite
def labels_and_probs(draw):
    """Random labels and float64 scores; coarse scores make ties likely."""
    num_classes = draw(st.integers(min_value=2, max_value=6))
    batch = draw(st.integers(min_value=1, max_value=40))
    labels = draw(hnp.arrays(np.int64, batch, elements=st.integers(0, num_classes - 1)))
    scores = st.one_of(
        st.floats(0.0, 1.0, allow_nan=False, width=64),
        st.sampled_from([0.0, 0.25, 0.5, 1.0]),
    )
    probs = draw(hnp.arrays(np.float64, (batch, num_classes), elements=scores))
    return labels, probs


# --- Agreement with scikit-learn -------------------------------------------


def test_accuracy_matches_sklearn_on_fixed_input():
    expected = accuracy_score(LABELS, np.argmax(PROBS, axis=1))
    assert metrics.accuracy(LABELS, PROBS) == pytest.approx(expected, abs=1e-12)


def test_macro_f1_matches_sklearn_default_on_fixed_input():
    predictions = np.argmax(PROBS, axis=1)
    expected = f1_score(LABELS, predictions, average="macro")
    assert metrics.macro_f1(LABELS, PROBS, num_classes=4) == pytest.approx(expected, abs=1e-12)
    assert metrics.macro_f1(LABELS, predictions, num_classes=4) == pytest.approx(expected, abs=1e-12)


def test_macro_f1_leaves_out_classes_absent_from_labels_and_predictions():
    labels = np.array([0, 0, 1, 1])
    predictions = np.array([0, 1, 1, 1])
    # Classes 0 and 1 only: F1 = 2/3 and 4/5.
    assert metrics.macro_f1(labels, predictions, num_classes=4) == pytest.approx((2 / 3 + 4 / 5) / 2, abs=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns about the absent classes.
        counting_absent_as_zero = f1_score(labels, predictions, average="macro", labels=range(4))
    assert metrics.macro_f1(labels, predictions, num_classes=4) != pytest.approx(counting_absent_as_zero)


def test_mean_average_precision_matches_sklearn_on_fixed_input():
    expected = sklearn_mean_average_precision(LABELS, PROBS)
    assert metrics.mean_average_precision(LABELS, PROBS) == pytest.approx(expected, abs=1e-12)


def test_mean_average_precision_of_perfect_ranking_is_one():
    labels = np.array([0, 1, 2, 1])
    assert metrics.mean_average_precision(labels, np.eye(3)[labels]) == pytest.approx(1.0)


def test_classification_metrics_bundles_the_three_metrics():
    assert metrics.classification_metrics(LABELS, PROBS) == {
        "accuracy": metrics.accuracy(LABELS, PROBS),
        "macro_f1": metrics.macro_f1(LABELS, PROBS, num_classes=4),
        "map": metrics.mean_average_precision(LABELS, PROBS),
    }


@settings(max_examples=60, deadline=None)
@given(labels_and_probs())
def test_metrics_match_sklearn_on_random_inputs(data):
    labels, probs = data
    predictions = np.argmax(probs, axis=1)
    result = metrics.classification_metrics(labels, probs)

    np.testing.assert_allclose(result["accuracy"], accuracy_score(labels, predictions))
    np.testing.assert_allclose(result["macro_f1"], f1_score(labels, predictions, average="macro"))
    np.testing.assert_allclose(result["map"], sklearn_mean_average_precision(labels, probs))


# --- Input validation ------------------------------------------------------


def test_probs_must_be_2d():
    with pytest.raises(ValueError, match="probs must be 2-D"):
        metrics.accuracy(np.array([0, 1]), np.array([0.3, 0.7]))


def test_labels_must_be_1d():
    with pytest.raises(ValueError, match="labels must be 1-D"):
        metrics.mean_average_precision(np.array([[0], [1]]), np.eye(2))


def test_labels_must_be_integers():
    with pytest.raises(ValueError, match="labels must have an integer dtype"):
        metrics.accuracy(np.array([0.0, 1.0]), np.eye(2))


def test_labels_must_be_non_empty():
    with pytest.raises(ValueError, match="labels must be non-empty"):
        metrics.accuracy(np.array([], dtype=np.int64), np.zeros((0, 2)))


def test_labels_and_probs_must_have_the_same_length():
    with pytest.raises(ValueError, match="labels and probs must have the same length"):
        metrics.classification_metrics(np.array([0, 1, 1]), np.eye(2))


@pytest.mark.parametrize("bad_label", [-1, 2])
def test_labels_must_be_in_range(bad_label):
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
        metrics.accuracy(np.array([0, bad_label]), np.eye(2))


def test_macro_f1_predictions_must_be_in_range():
    with pytest.raises(ValueError, match=r"predictions_or_probs must lie in \[0, 2\)"):
        metrics.macro_f1(np.array([0, 1]), np.array([0, 2]), num_classes=2)


def test_macro_f1_probs_must_have_num_classes_columns():
    with pytest.raises(ValueError, match="predictions_or_probs has 3 classes"):
        metrics.macro_f1(np.array([0, 1]), np.ones((2, 3)), num_classes=2)


def test_macro_f1_labels_and_predictions_must_have_the_same_length():
    with pytest.raises(ValueError, match="labels and predictions_or_probs must have the same length"):
        metrics.macro_f1(np.array([0, 1]), np.array([0]), num_classes=2)
