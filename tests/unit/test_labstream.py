"""lab_stream's window counts (engine/lab/labstream.summarize)."""
from ansible_collections.xdplb.katran.plugins.module_utils.engine.lab import labstream


def test_summarize_counts_answers_per_backend_and_failures_in_the_window():
    attempts = [[1.0, "be1", ""], [2.0, "be2", ""], [3.0, "", "connection refused"], [4.0, "be2", ""],
                [5.0, "", "timed out"], [6.0, "be1", ""]]
    out = labstream.summarize(attempts, since=2.0, until=5.0)
    assert out["attempts"] == 4 and out["answered"] == 2 and out["failures"] == 2
    assert out["servers"] == {"be2": {"count": 2, "first": 2.0, "last": 4.0}}
    assert out["errors"] == {"connection refused": 1, "timed out": 1}
    assert (out["first_failure"], out["last_failure"]) == (3.0, 5.0)
    assert labstream.summarize(attempts)["servers"]["be1"] == {"count": 2, "first": 1.0, "last": 6.0}
