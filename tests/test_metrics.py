import itertools

import numpy as np
import pytest

from crackscan.metrics import classification_metrics, roc_auc


def test_metrics_on_a_known_confusion():
    # Actual: 4 negatives, 6 positives. Predicted: 1 false positive, 2 false negatives.
    labels = [0, 0, 0, 0, 1, 1, 1, 1, 1, 1]
    crack_p = np.array([0.1, 0.2, 0.3, 0.8, 0.9, 0.7, 0.6, 0.95, 0.4, 0.2])
    m = classification_metrics(labels, np.stack([1 - crack_p, crack_p], 1), ("Negative", "Positive"), 1)
    assert m["confusion_matrix"]["matrix"] == [[3, 1], [2, 4]]
    assert m["accuracy"] == pytest.approx(0.7)
    assert m["precision"] == pytest.approx(4 / 5)
    assert m["recall"] == pytest.approx(4 / 6)
    assert m["f1"] == pytest.approx(2 * 0.8 * (4 / 6) / (0.8 + 4 / 6))
    assert m["counts"] == {"Negative": 4, "Positive": 6} and m["errors"] == 3
    assert m["loss"] == pytest.approx(-np.mean(np.log(np.where(np.array(labels) == 1, crack_p, 1 - crack_p))))


def test_positive_class_can_be_first():
    labels = [0, 0, 1]
    p_cracked = np.array([0.9, 0.8, 0.1])  # class 0 is "cracked"
    m = classification_metrics(labels, np.stack([p_cracked, 1 - p_cracked], 1), ("cracked", "sound"), 0)
    assert m["recall"] == 1.0 and m["precision"] == 1.0 and m["roc_auc"] == 1.0


def test_roc_auc_matches_pairwise_definition_with_ties():
    rng = np.random.default_rng(1)
    positive = rng.random(60) < 0.4
    scores = np.round(rng.random(60), 1)  # many ties
    pairs = [(p, n) for p, n in itertools.product(scores[positive], scores[~positive])]
    expected = np.mean([1.0 if p > n else 0.5 if p == n else 0.0 for p, n in pairs])
    assert roc_auc(positive, scores) == pytest.approx(expected)
    assert roc_auc(np.array([True, True]), np.array([0.1, 0.2])) is None


def test_a_mistake_by_a_hair_is_not_shown_as_exactly_the_threshold():
    from crackscan.plots import crack_probability_text

    assert crack_probability_text(0.4996) == "<0.500" and crack_probability_text(0.5004) == ">0.500"
    assert crack_probability_text(0.5) == "0.500" and crack_probability_text(0.9871) == "0.987"


def test_every_option_has_help_and_every_command_examples():
    import argparse

    from crackscan.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in commands.choices.items():
        assert "examples:" in sub.format_help(), name
        for action in sub._actions:
            assert action.help, f"{name} {action.option_strings or action.dest} has no help text"
