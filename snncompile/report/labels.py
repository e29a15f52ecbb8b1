"""The names the report gives its accuracies, shared by report.md (build) and report.html (html)."""

from __future__ import annotations


def accuracy_labels(d: dict) -> list[tuple[str, str]]:
    mode = (d.get("calibration") or {}).get("mode", "none")
    cal = "" if mode == "none" else f"{mode} calibration"
    return [("ann_accuracy", "ANN (float)"),
            ("float_snn_accuracy", "SNN (float, one step of delay per synaptic layer"
             + (f", before {cal})" if cal else ")")),
            ("snn_accuracy", "SNN (Loihi 2 fixed point" + (f" after {cal}" if cal else "") + ", reference)")]
