"""Saliency metrics (docs/numerics.md "Metric conventions"): a pure per-image function and a mergeable aggregator.

``image_scores`` turns one (prediction, mask) pair into per-image quantities; ``aggregate`` averages a
list of them into dataset numbers. Images can therefore be scored in any order, in parallel processes
or shards, and merged by concatenating the lists.

Conventions (each reported under its own name, never mixed):

* Thresholds ``THRESHOLDS = 0..255``: ``t = k/255``, foreground where ``pred_u8 > k``. A float map is
  first rounded to uint8 (``to_uint8``), so float and uint8 inputs give identical scores.
* Convention A (TokenCut), ``fmax_dataset`` = max_t mean_i F_i(t) with beta^2 = 0.3.
* Convention B (SelfMask / FOUND / Selfment code), ``fmax_image`` = mean_i max_t F_i(t) with the code's
  ``(1 + b^2) P R / (b^2 P + R)``, b = 0.3, i.e. an effective beta^2 = 0.09.
* Precision = TP / (TP + FP), recall = TP / (TP + FN), F = (1 + beta^2) P R / (beta^2 P + R); every 0/0
  is 0 (as the reference codes' ``+ eps`` denominators and PySODMetrics' safe division give). Hence a
  threshold with no predicted pixel has P = 0 and F = 0, and an image with an empty mask has R = 0 and
  F = 0 at every threshold (it can only lower F_max, whatever the prediction).
* Convention T (the MATLAB saliency toolbox of the supervised SOD papers: DSS, Amulet, PiCANet and their
  contemporaries), ``fmax_toolbox``: foreground where ``pred_u8 >= k`` (k = 0..255), precision and recall
  averaged over the images whose map is not all zero (an all-zero map is left out of both means), then
  F(t) = 1.3 mP(t) mR(t) / (0.3 mP(t) + mR(t)) from the two means, max over t. The toolbox's ground truth
  is foreground at >= 0.1 of its range; for the binary masks of the benchmarks that is the mask used here.
* IoU and Acc: prediction binarised at 0.5 (``pred_u8 > 127``, i.e. ``round(255 p) >= 128``, p >= 0.5
  up to the uint8 rounding), IoU = |P & G| / |P | G| with an empty union defined as 1.0, Acc = mean(P == G);
  both averaged over images.
* COD / PySODMetrics (``cod=True``): fresh ``Smeasure`` (alpha 0.5), ``WeightedFmeasure`` (beta 1),
  ``MAE``, ``Emeasure`` and ``FmeasureV2`` + ``FmeasureHandler(beta=0.3)`` (beta there is beta^2) are
  stepped on the single image, so averaging the per-image results reproduces the library's dataset
  result exactly (its convention C: per-image min-max normalised prediction, curves averaged over
  images, then max / mean).

Ground truth: a boolean mask is used as is; any other dtype is foreground where ``gt > 127`` (the
``>= 128`` of ``pipeline.core.datasets.load_mask``). PySODMetrics itself binarises raw uint8 masks at
``> 128``; the library gets our boolean mask as 0/255, so all metrics of one call see the same mask.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.core.errors import PipelineError

THRESHOLDS = np.arange(256)  # t = k / 255, foreground where pred_u8 > k
BETA2_A = 0.3                # convention A: beta^2
BETA2_B = 0.3 ** 2           # convention B: the code's beta = 0.3 enters squared -> 0.09
BETA2_T = 0.3                # convention T (toolbox): beta^2, on the mean precision and recall
COD_KEYS = ("sm", "wfm", "mae", "em_adp", "em_curve", "fm_adp", "fm_curve")


class MetricsError(PipelineError):
    """Bad metric input (shape mismatch, non-finite prediction, inconsistent score lists)."""


def to_uint8(prob: np.ndarray) -> np.ndarray:
    """[0, 1] float map -> uint8 ``round(clip(p, 0, 1) * 255)``; uint8 input passes through.

    The saved PNG maps hold exactly this (``pipeline.core.maps.save_png``)."""
    prob = np.asarray(prob)
    if prob.dtype == np.uint8:
        return prob
    if prob.dtype == bool:
        return prob.astype(np.uint8) * np.uint8(255)
    p = prob.astype(np.float64, copy=False)
    if not np.all(np.isfinite(p)):
        raise MetricsError("prediction contains NaN or inf")
    return np.round(np.clip(p, 0.0, 1.0) * 255).astype(np.uint8)


def _binary_gt(gt: np.ndarray) -> np.ndarray:
    gt = np.asarray(gt)
    return gt if gt.dtype == bool else gt > 127


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den elementwise with 0 where den == 0 (float64)."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.zeros(np.broadcast(num, den).shape, dtype=np.float64)
    np.divide(num, den, out=out, where=den != 0)
    return out


def f_measure(precision: np.ndarray, recall: np.ndarray, beta2: float) -> np.ndarray:
    """(1 + beta2) P R / (beta2 P + R), 0 where the denominator is 0."""
    return _safe_div((1 + beta2) * precision * recall, beta2 * precision + recall)


def _cod_scores(pred_u8: np.ndarray, gt: np.ndarray) -> dict:
    """PySODMetrics results of one image (fresh objects, one ``step`` each)."""
    import py_sod_metrics as psm

    gt_u8 = gt.astype(np.uint8) * np.uint8(255)  # the library re-binarises at > 128: same mask
    sm, wfm, mae, em = psm.Smeasure(), psm.WeightedFmeasure(), psm.MAE(), psm.Emeasure()
    fm = psm.FmeasureV2(metric_handlers={"fm": psm.FmeasureHandler(with_dynamic=True, with_adaptive=True,
                                                                   beta=BETA2_A)})
    for m in (sm, wfm, mae, em, fm):
        m.step(pred=pred_u8, gt=gt_u8)
    em_res, fm_res = em.get_results()["em"], fm.get_results()["fm"]
    # The library's curves run from its highest threshold (>= 255) down to the lowest; max/mean ignore order.
    return {
        "sm": float(sm.get_results()["sm"]),
        "wfm": float(wfm.get_results()["wfm"]),
        "mae": float(mae.get_results()["mae"]),
        "em_adp": float(em_res["adp"]),
        "em_curve": np.asarray(em_res["curve"], dtype=np.float64),
        "fm_adp": float(fm_res["adaptive"]),
        "fm_curve": np.asarray(fm_res["dynamic"], dtype=np.float64),
    }


def image_scores(pred: np.ndarray, gt: np.ndarray, *, cod: bool = False) -> dict:
    """Per-image quantities of one (H, W) saliency map against its (H, W) mask (see module docstring).

    pred: uint8 0..255 or float in [0, 1] (rounded by ``to_uint8``); gt: bool, or gray values (> 127).
    Returns 'precision', 'recall', 'f_a' (beta^2 0.3), 'f_b' (effective beta^2 0.09) as (256,) float64
    curves over ``THRESHOLDS`` (pred_u8 > k), the toolbox's 'precision_ge', 'recall_ge' (pred_u8 >= k) and
    'nonzero' (the map has a pixel above 0), 'iou' and 'acc' at 0.5 (empty union -> IoU 1.0), and with
    ``cod`` the PySODMetrics results 'sm', 'wfm', 'mae', 'em_adp', 'em_curve', 'fm_adp', 'fm_curve'.
    """
    u = to_uint8(pred)
    g = _binary_gt(gt)
    if u.ndim != 2 or u.shape != g.shape:
        raise MetricsError(f"prediction {u.shape} and mask {g.shape} must be the same (H, W)")

    # Histograms of prediction values over mask fg / bg; #(value > k) = total - cumsum up to k.
    h_fg = np.bincount(u[g], minlength=256)
    h_bg = np.bincount(u[~g], minlength=256)
    n_fg, n_bg = int(h_fg.sum()), int(h_bg.sum())
    tp = n_fg - np.cumsum(h_fg)
    fp = n_bg - np.cumsum(h_bg)
    precision = _safe_div(tp, tp + fp)
    recall = _safe_div(tp, np.full(256, n_fg))

    # The toolbox's >= k: #(value >= k) = #(value > k - 1), all pixels at k = 0.
    tp_ge, fp_ge = np.concatenate([[n_fg], tp[:-1]]), np.concatenate([[n_bg], fp[:-1]])

    # Binary at 0.5 = threshold index 127.
    tp5, fp5 = int(tp[127]), int(fp[127])
    fn5 = n_fg - tp5
    union = tp5 + fp5 + fn5
    out = {
        "precision": precision,
        "recall": recall,
        "f_a": f_measure(precision, recall, BETA2_A),
        "f_b": f_measure(precision, recall, BETA2_B),
        "precision_ge": _safe_div(tp_ge, tp_ge + fp_ge),
        "recall_ge": _safe_div(tp_ge, np.full(256, n_fg)),
        "nonzero": bool(u.max() > 0),
        "iou": 1.0 if union == 0 else tp5 / union,
        "acc": (u.size - fp5 - fn5) / u.size,
    }
    if cod:
        out.update(_cod_scores(u, g))
    return out


def _stack(scores: list[dict], key: str) -> np.ndarray:
    return np.array([s[key] for s in scores], dtype=np.float64)


def toolbox_fmax(precision_ge: np.ndarray, recall_ge: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Convention T for each row of ``weights`` (B, n): images weighted by how often they are drawn, an
    all-zero map already given weight 0; precision and recall (n, 256) averaged first, F from the means,
    max over the thresholds. 0 where no image has a non-zero map."""
    total = weights.sum(axis=1, keepdims=True)
    mp, mr = _safe_div(weights @ precision_ge, total), _safe_div(weights @ recall_ge, total)
    return f_measure(mp, mr, BETA2_T).max(axis=1)


def aggregate(scores: list[dict]) -> dict[str, float]:
    """Dataset metrics from per-image ``image_scores`` (any order, any split into parts).

    'fmax_dataset' (convention A), 'fmax_image' (convention B), 'fmax_toolbox' (convention T), 'iou',
    'acc'; when every image has its
    COD results also 'sm', 'wfm', 'mae', 'em_adp', 'em_mean', 'em_max', 'fm_adp', 'fm_mean', 'fm_max'
    (PySODMetrics: mean of the per-image values / curves, then max or mean over the curve).
    """
    if not scores:
        raise MetricsError("no images to aggregate")
    has_cod = [all(k in s for k in COD_KEYS) for s in scores]
    if any(has_cod) and not all(has_cod):
        raise MetricsError("some images have COD scores and some do not: score them all with the same cod flag")

    out = {
        "fmax_dataset": float(_stack(scores, "f_a").mean(axis=0).max()),
        "fmax_image": float(_stack(scores, "f_b").max(axis=1).mean()),
        "fmax_toolbox": float(toolbox_fmax(_stack(scores, "precision_ge"), _stack(scores, "recall_ge"),
                                           _stack(scores, "nonzero")[None])[0]),
        "iou": float(_stack(scores, "iou").mean()),
        "acc": float(_stack(scores, "acc").mean()),
    }
    if all(has_cod):
        em_curve = _stack(scores, "em_curve").mean(axis=0)
        fm_curve = _stack(scores, "fm_curve").mean(axis=0)
        out.update({
            "sm": float(_stack(scores, "sm").mean()),
            "wfm": float(_stack(scores, "wfm").mean()),
            "mae": float(_stack(scores, "mae").mean()),
            "em_adp": float(_stack(scores, "em_adp").mean()),
            "em_mean": float(em_curve.mean()),
            "em_max": float(em_curve.max()),
            "fm_adp": float(_stack(scores, "fm_adp").mean()),
            "fm_mean": float(fm_curve.mean()),
            "fm_max": float(fm_curve.max()),
        })
    return out


def pr_curve(scores: list[dict]) -> pd.DataFrame:
    """Mean precision / recall / F (convention A ingredient, beta^2 0.3) per threshold t = k/255."""
    if not scores:
        raise MetricsError("no images for a PR curve")
    return pd.DataFrame({
        "threshold": THRESHOLDS / 255.0,
        "precision": _stack(scores, "precision").mean(axis=0),
        "recall": _stack(scores, "recall").mean(axis=0),
        "f_a": _stack(scores, "f_a").mean(axis=0),
    })
