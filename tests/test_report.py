"""The per-run report: figures and tables drawn from metrics.json alone."""

import json
import re

from hybrid_tfrs.report import REPORT_FILE, write_report


def metrics_of(model, alpha):
    buckets = [
        {
            "bucket": label,
            "users": users,
            "metrics": {"full": {"NDCG@10": ndcg}, "full-unseen": {"NDCG@10": ndcg + 0.01}},
            "alpha": alpha,
        }
        for label, users, ndcg in (("1-5", 30, 0.10), ("6-10", 20, 0.12), ("11+", 5, 0.2))
    ]
    return {
        "dataset": "synthetic",
        "model": model,
        "config": {"output_dir": "runs/x", "learning_rate": 0.001},
        "test": {
            "full": {"HR@10": 0.25, "NDCG@10": 0.1234, "MRR": 0.1},
            "full-unseen": {"HR@10": 0.3, "NDCG@10": 0.2345, "MRR": 0.2},
        },
        "test_buckets": buckets,
        "best_epoch": 2,
        "epochs_trained": 3,
        "train_minutes": 0.5,
        "parameters": 1234,
        "history": [{"epoch": e, "val_ndcg@10": v} for e, v in ((1, 0.1), (2, 0.2), (3, 0.15))],
    }


def images(page):
    return re.findall(r"<h2>([^<]+)</h2><img src='data:image/png;base64,([A-Za-z0-9+/=]+)'>", page)


def test_hybrid_report_has_curve_buckets_alpha_and_the_test_table(tmp_path):
    (tmp_path / "metrics.json").write_text(json.dumps(metrics_of("hybrid", 0.3)))
    path = write_report(str(tmp_path))
    assert path == str(tmp_path / REPORT_FILE)
    page = (tmp_path / REPORT_FILE).read_text()
    titles = [title for title, data in images(page) if len(data) > 1000]
    assert titles == [
        "Validation",
        "Test NDCG@10 by history length",
        "Gate alpha by history length (share of the LinRec branch)",
    ]
    assert "<td>full-unseen</td><td>0.3000</td><td>0.2345</td><td>0.2000</td>" in page
    assert "best epoch 2 of 3" in page
    assert not list(tmp_path.glob("*.tmp*"))


def test_baseline_report_has_no_alpha_figure(tmp_path):
    (tmp_path / "metrics.json").write_text(json.dumps(metrics_of("sasrec", None)))
    page = (tmp_path / REPORT_FILE).read_text() if write_report(str(tmp_path)) else ""
    assert [title for title, _ in images(page)] == ["Validation", "Test NDCG@10 by history length"]
