"""scikit-learn's common estimator checks on FakeSpotter with a tiny backbone.

FakeSpotter's X is a stack of uint8 face crops (N x S x S x 3) and its y is 0 real / 1 fake,
while the common checks can only make 2-D numeric tables and arbitrary class labels. So the
checks run on a view whose input tag says "2-D", and every check that cannot apply to crops
is listed below as an expected failure, with the reason (strict: a check that starts to pass
fails the suite). The rest (cloning, parameters, repr, tags, init, unfitted errors, ...) must
pass. The classifier part on its own, on plain tables, passes the checks in full
(tests/test_classifier.py).
"""

from __future__ import annotations

import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks
from test_detector import tiny_backbone

from fakespotter.detector import FakeSpotter

TABLE = "feeds a 2-D numeric table; X is uint8 face crops N x S x S x 3"
LABELS = "uses class labels other than 0 (real) and 1 (fake), e.g. 1/2 or three classes"
MESSAGE = "expects scikit-learn's own wording for an error FakeSpotter reports in its own words"
SPARSE = "feeds sparse input; face crops are dense images"
ARRAY_LIKE = "feeds a non-array sequence wrapper; X is a numpy stack of crops"

EXPECTED_FAILURES = {
    "check_fit_score_takes_y": LABELS,
    "check_estimators_overwrite_params": LABELS,
    "check_dont_overwrite_parameters": LABELS,
    "check_estimators_fit_returns_self": LABELS,
    "check_readonly_memmap_input": LABELS,
    "check_n_features_in_after_fitting": LABELS,
    "check_positive_only_tag_during_fit": TABLE,
    "check_estimators_dtypes": LABELS,
    "check_complex_data": MESSAGE,
    "check_dtype_object": LABELS,
    "check_estimators_empty_data_messages": MESSAGE,
    "check_pipeline_consistency": TABLE,
    "check_estimators_nan_inf": TABLE,
    "check_estimator_sparse_array": SPARSE,
    "check_estimator_sparse_matrix": SPARSE,
    "check_estimators_pickle": TABLE,
    "check_f_contiguous_array_estimator": LABELS,
    "check_classifier_data_not_an_array": ARRAY_LIKE,
    "check_classifiers_one_label": MESSAGE,
    "check_classifiers_classes": LABELS,
    "check_classifiers_train": TABLE,
    "check_classifiers_regression_target": MESSAGE,
    "check_supervised_y_2d": LABELS,
    "check_decision_proba_consistency": TABLE,
    "check_transformer_data_not_an_array": ARRAY_LIKE,
    "check_transformer_general": TABLE,
    "check_transformer_preserve_dtypes": TABLE,
    "check_methods_sample_order_invariance": LABELS,
    "check_methods_subset_invariance": LABELS,
    "check_fit2d_1sample": MESSAGE,
    "check_fit2d_1feature": MESSAGE,
    "check_dict_unchanged": LABELS,
    "check_fit_idempotent": TABLE,
    "check_fit_check_is_fitted": TABLE,
    "check_n_features_in": TABLE,
    "check_fit2d_predict1d": LABELS,
    "check_requires_y_none": MESSAGE,
}


class CheckedAsTable(FakeSpotter):
    """FakeSpotter whose input tag lets the common checks run (see the module docstring)."""

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = True
        return tags


@pytest.mark.slow
@parametrize_with_checks(
    [CheckedAsTable(backbone=tiny_backbone(), Cs=(1e-2,), cv=2)],
    expected_failed_checks=lambda estimator: EXPECTED_FAILURES,
)
def test_sklearn_common_checks(estimator, check):
    check(estimator)
