"""A label for every time step (train --window-label each), defined once (numpy only): the per-step targets of
windows, how overlapping windows are stitched into one answer per sample, the stream that answers each sample
once it is final, and the segment (event) metrics.

Stitching, the one rule every path and host follows: a sample's probabilities are the mean of the per-step
probabilities of every window that covers it; its label is the task's decision on that mean (multiclass: the
most probable class; binary and multilabel: probability > 0.5). A sample no window covers (the last samples of a
recording when no whole window ends there) is labelled by one more window, the tail window, which ends at the
recording's last sample and answers only those samples; so every sample of a recording at least one window long
gets an answer. A stream answers a sample once every window that covers it has arrived, so it answers exactly
what `predict` on the whole recording answers, in any chunking; `finish()` answers the rest when the recording
ends (the tail window's samples among them).
"""

from __future__ import annotations

import numpy as np

from runtime.metrics import sigmoid


def step_rows(values: np.ndarray) -> np.ndarray:
    """Per-step arrays as one row per step: (N, W) class indices -> (N * W,); (N, K, W) scores or 0/1 targets ->
    (N * W, K), so every per-window metric and base rate reads them as series of one step each."""
    values = np.asarray(values)
    if values.ndim == 2:
        return values.reshape(-1)
    return values.transpose(0, 2, 1).reshape(-1, values.shape[1])


def step_targets(encoded: np.ndarray, first: np.ndarray, length: int) -> np.ndarray:
    """The targets of windows starting at samples `first` (N,), from per-sample encoded targets: (T,) class
    indices -> (N, W); (T, K) 0/1 -> (N, K, W), the model's per-step layout."""
    at = first[:, None] + np.arange(length)  # (N, W)
    if encoded.ndim == 1:
        return encoded[at]
    return np.ascontiguousarray(encoded[at].transpose(0, 2, 1))


def probabilities_of(raw: np.ndarray, scores: str) -> np.ndarray:
    """Per-step probabilities (N, K, W) from raw per-step scores, as the model graph computes them: softmax over
    the classes (axis 1), or each score's sigmoid."""
    raw = np.asarray(raw, dtype=np.float64)
    if scores == "softmax":
        e = np.exp(raw - raw.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    return sigmoid(raw)


def decide(probabilities: np.ndarray, scores: str) -> np.ndarray:
    """Labels of stitched per-sample probabilities (n, K): softmax tasks the most probable class (n,); sigmoid
    tasks each column's probability > 0.5 (n, K) int64."""
    if scores == "softmax":
        return probabilities.argmax(axis=1).astype(np.int64)
    return (probabilities > 0.5).astype(np.int64)


def stitch(probabilities: np.ndarray, starts: np.ndarray, samples: int) -> tuple[np.ndarray, np.ndarray]:
    """(sum (K, samples), windows covering each sample (samples,)) of per-step probabilities (N, K, W) of the
    windows starting at `starts` of a recording of `samples` samples."""
    n, k, w = probabilities.shape
    at = (starts[:, None] + np.arange(w)).reshape(-1)  # (N * W,)
    total = np.stack([np.bincount(at, weights=probabilities[:, j, :].reshape(-1).astype(np.float64),
                                  minlength=samples) for j in range(k)]) if n else np.zeros((k, samples))
    count = np.bincount(at, minlength=samples) if n else np.zeros(samples, dtype=np.int64)
    return total[:, :samples], count[:samples]


def tail(samples: int, length: int, stride: int) -> tuple[int, int] | None:
    """The tail window of a recording of `samples` samples: (its start, the first sample it answers), when the
    windows every `stride` samples end before the last sample; None when they reach it (or none fits)."""
    if samples < length:
        return None
    covered = (samples - length) // stride * stride + length  # the end of the last regular window
    return (samples - length, max(covered, samples - length)) if covered < samples else None


def stitched(probabilities: np.ndarray, starts: np.ndarray, samples: int, scores: str,
             tail_probabilities: np.ndarray | None = None, stride: int = 0) -> dict[str, np.ndarray]:
    """One recording's answer per covered sample: {"sample": (n,), "probabilities": (n, K) float32, "label"}.
    `tail_probabilities` (K, W): the tail window's (see `tail`, with the windows' `stride`), for the samples after
    the last regular window."""
    total, count = stitch(probabilities, starts, samples)
    end = tail(samples, probabilities.shape[2], stride) if tail_probabilities is not None else None
    if end is not None:
        start, first = end
        total[:, first:] += tail_probabilities[:, first - start:]
        count[first:] += 1
    covered = np.flatnonzero(count)
    mean = (total[:, covered] / count[covered]).T.astype(np.float32)  # (n, K)
    return {"sample": covered.astype(np.int64), "probabilities": mean, "label": decide(mean, scores)}


class StepStream:
    """Feed chunks of one live recording; get, per push, every sample that became final: all the windows that
    cover it have arrived (no window yet to come starts at or before it). Holds the running sums of at most one
    window of samples, so its memory does not grow with the recording.

    `windows` is the runtime.windows.Stream of the bundle's windows (not imported: it reads the manifest, which
    reads the tasks, which read this module).

        stream = bundle.stream()                 # a --window-label each bundle
        for chunk in source:
            out = stream.push(chunk)             # {"sample": (n,), "probabilities": (n, K), "label": ...}
        out = stream.finish()                    # the samples the last windows cover
    """

    def __init__(self, windows, probabilities: str, scores: str, classes: int):
        self.windows, self.output, self.scores = windows, probabilities, scores
        self.recent = np.zeros((windows.channels, windows.length), dtype=np.float32)  # for the tail window
        self.base = 0  # the first sample not yet answered
        self.total = np.zeros((classes, 0))  # sums of samples base, base + 1, ...
        self.count = np.zeros(0, dtype=np.int64)

    def push(self, chunk) -> dict[str, np.ndarray]:
        """The final samples after `chunk` (possibly none)."""
        chunk = self.windows._check(chunk)
        out = self.windows.push(chunk)
        keep = min(chunk.shape[1], self.recent.shape[1])
        self.recent = np.concatenate([self.recent[:, keep:], chunk[:, chunk.shape[1] - keep:]], axis=1)
        self._add(out["start"], out[self.output])
        return self._answer(self.windows.next_start)

    def finish(self) -> dict[str, np.ndarray]:
        """The recording has ended: every sample not yet answered, the tail window's among them."""
        end = tail(self.windows.seen, self.windows.length, self.windows.stride)
        if end is not None:
            start, first = end
            probabilities = self.windows.run(self.recent[None])[self.output]  # (1, K, W)
            self._add(np.array([first]), probabilities[:, :, first - start:])
        return self._answer(self.base + self.count.shape[0])

    def _add(self, starts: np.ndarray, probabilities: np.ndarray) -> None:
        if not len(starts):
            return
        end = int(starts[-1]) + probabilities.shape[2] - self.base
        if end > self.count.shape[0]:
            grow = end - self.count.shape[0]
            self.total = np.concatenate([self.total, np.zeros((self.total.shape[0], grow))], axis=1)
            self.count = np.concatenate([self.count, np.zeros(grow, dtype=np.int64)])
        total, count = stitch(probabilities, starts - self.base, end)
        self.total += total
        self.count += count

    def _answer(self, until: int) -> dict[str, np.ndarray]:
        n = max(0, min(until - self.base, self.count.shape[0]))
        count, total = self.count[:n], self.total[:, :n]
        covered = np.flatnonzero(count)
        mean = (total[:, covered] / count[covered]).T.astype(np.float32)
        found = {"sample": (self.base + covered).astype(np.int64), "probabilities": mean,
                 "label": decide(mean, self.scores)}
        self.base += n
        self.total, self.count = self.total[:, n:], self.count[n:]
        return found


def segment_table(found: dict[str, np.ndarray], scores: str, names: list[str]) -> dict[str, np.ndarray]:
    """One row per segment of stitched samples (`stitched`'s dict): a run of consecutive samples with one label
    (multiclass, binary: every class's runs; multilabel: the runs of 1 of each label), as start and end sample
    (end exclusive), the label's name and its mean probability over the run. Samples no window covered end a
    segment."""
    sample, p, label = found["sample"], found["probabilities"], found["label"]
    rows = []
    columns = [(label, None)] if scores == "softmax" else [(label[:, j], j) for j in range(label.shape[1])]
    for values, column in columns:
        breaks = np.flatnonzero((values[1:] != values[:-1]) | (sample[1:] != sample[:-1] + 1)) + 1
        for a, b in zip(np.concatenate([[0], breaks]), np.concatenate([breaks, [len(values)]])):
            if a == b:
                continue
            if column is None:
                name, prob = names[int(values[a])], p[a:b, int(values[a])].mean()
            elif len(columns) == 1:  # binary: both classes, the probability of the one named
                name, prob = names[int(values[a])], (p[a:b, 0] if values[a] else 1.0 - p[a:b, 0]).mean()
            elif values[a] == 1:  # multilabel: where the label is on
                name, prob = names[column], p[a:b, column].mean()
            else:
                continue
            rows.append((int(sample[a]), int(sample[b - 1]) + 1, name, float(prob)))
    rows.sort(key=lambda r: (r[0], r[1]))
    return {"start": np.array([r[0] for r in rows], dtype=np.int64), "end": np.array([r[1] for r in rows], dtype=np.int64),
            "label": np.array([r[2] for r in rows], dtype=object),
            "probability": np.array([r[3] for r in rows], dtype=np.float64)}


def runs(labels: np.ndarray) -> list[tuple[int, int, int]]:
    """The segments of one recording's labels (T,): (start, end, label) for each run of one label, end exclusive."""
    labels = np.asarray(labels)
    if not len(labels):
        return []
    change = np.flatnonzero(labels[1:] != labels[:-1]) + 1
    starts = np.concatenate([[0], change])
    ends = np.concatenate([change, [len(labels)]])
    return [(int(s), int(e), int(labels[s])) for s, e in zip(starts, ends)]


def events(labels: np.ndarray, scores: str) -> list[tuple[int, int, int]]:
    """The events of one recording: every segment for multiclass (label k for its class), the runs of 1 for
    binary ((T,) 0/1) and for each column of multilabel ((T, K): label = the column)."""
    labels = np.asarray(labels)
    if scores == "softmax":
        return runs(labels)
    columns = labels.reshape(len(labels), -1)
    return [(s, e, j) for j in range(columns.shape[1]) for s, e, v in runs(columns[:, j]) if v == 1]


MATCH_IOU = 0.5  # a predicted event matches a true one of the same label when their IoU is at least this


def match_events(true: list[tuple[int, int, int]], predicted: list[tuple[int, int, int]]
                 ) -> list[tuple[tuple[int, int, int], tuple[int, int, int]]]:
    """Pairs (true, predicted) of the same label whose intersection over union is at least MATCH_IOU, each
    event in one pair at most (the best IoU first)."""
    candidates = []
    for i, (ts, te, tl) in enumerate(true):
        for j, (ps, pe, pl) in enumerate(predicted):
            if pl != tl or pe <= ts or ps >= te:
                continue
            iou = (min(te, pe) - max(ts, ps)) / (max(te, pe) - min(ts, ps))
            if iou >= MATCH_IOU:
                candidates.append((-iou, i, j))
    used_true, used_pred, pairs = set(), set(), []
    for _, i, j in sorted(candidates):
        if i not in used_true and j not in used_pred:
            used_true.add(i)
            used_pred.add(j)
            pairs.append((true[i], predicted[j]))
    return pairs


def _f1(precision: float | None, recall: float | None) -> float | None:
    if precision is None or recall is None:
        return None
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def segment_report(true: list[np.ndarray], predicted: list[np.ndarray], scores: str) -> dict[str, float | None]:
    """Per-step accuracy and macro-F1 over every sample, and event precision, recall and F1 (IoU >= 0.5, same
    label) with the median boundary error in samples (|start difference| and |end difference| of every matched
    pair), over recordings given as per-sample label arrays (true[r] and predicted[r] alike)."""
    t_all, p_all = np.concatenate(true), np.concatenate(predicted)
    t2, p2 = t_all.reshape(len(t_all), -1), p_all.reshape(len(p_all), -1)
    if scores == "softmax":
        classes = np.union1d(np.unique(t_all), np.unique(p_all))
        f1s = [_step_f1(p_all == c, t_all == c) for c in classes]
    elif t2.shape[1] == 1:  # binary: both classes
        f1s = [_step_f1(p2[:, 0] == v, t2[:, 0] == v) for v in (0, 1)]
    else:  # multilabel: each column's positives
        f1s = [_step_f1(p2[:, j] == 1, t2[:, j] == 1) for j in range(t2.shape[1])]
    n_true = n_pred = matched = 0
    errors: list[int] = []
    for t, p in zip(true, predicted):
        te, pe = events(t, scores), events(p, scores)
        pairs = match_events(te, pe)
        n_true, n_pred, matched = n_true + len(te), n_pred + len(pe), matched + len(pairs)
        for (ts, tend, _), (ps, pend, _) in pairs:
            errors += [abs(ts - ps), abs(tend - pend)]
    precision = matched / n_pred if n_pred else None
    recall = matched / n_true if n_true else None
    return {"samples": int(len(t_all)), "accuracy": float((t2 == p2).mean()), "macro_f1": float(np.mean(f1s)),
            "events": n_true, "predicted_events": n_pred, "event_precision": precision, "event_recall": recall,
            "event_f1": _f1(precision, recall), "boundary_error": float(np.median(errors)) if errors else None}


def report_line(report: dict) -> str:
    """segment_report as one line for people."""
    def num(key: str) -> str:
        value = report.get(key)
        return "n/a" if value is None else f"{value:.4g}"

    return (f"{report['samples']} samples: accuracy {num('accuracy')}, macro-F1 {num('macro_f1')}; events (IoU >= "
            f"{MATCH_IOU:g}, {report['events']} true, {report['predicted_events']} predicted): precision "
            f"{num('event_precision')}, recall {num('event_recall')}, F1 {num('event_f1')}; median boundary error "
            f"{num('boundary_error')} samples")


def _step_f1(pred: np.ndarray, true: np.ndarray) -> float:
    tp, fp, fn = float((pred & true).sum()), float((pred & ~true).sum()), float((~pred & true).sum())
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0
