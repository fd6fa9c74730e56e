"""Writes the small synthetic example files of this folder (numpy only; the same files every time):

    python examples/make_examples.py [FOLDER]     # default: this folder

tests/test_examples.py holds the committed files to what this script writes. GunPoint_TRAIN.ts,
GunPoint_TEST.ts and activity.csv are not made here (examples/README.md says where they come from)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from pipeline.data.synthetic import waveforms  # the embedded default data's generator

HERE = Path(__file__).resolve().parent
RHYTHMS = ("normal", "afib", "other")
FOCAL_FILTER = np.array([0.8, -1.1, 0.4, 1.3, -0.6])


def write_ts(path: Path, X: np.ndarray, labels: np.ndarray, name: str) -> None:
    """A UCR/UEA .ts file of univariate series with class labels."""
    classes = " ".join(sorted(set(labels.tolist())))
    with open(path, "w") as f:
        f.write(f"@problemName {name}\n@timeStamps false\n@missing false\n@univariate true\n@equalLength true\n"
                f"@seriesLength {X.shape[-1]}\n@classLabel true {classes}\n@data\n")
        for series, label in zip(X[:, 0], labels):
            f.write(",".join(f"{v:.5f}" for v in series) + f":{label}\n")


def prices(n: int = 200, length: int = 32, seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """Series of daily returns and a closing price around 1000 that a short filter's mean response moves."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, length))
    response = np.stack([np.convolve(x, FOCAL_FILTER, mode="valid").mean() for x in X])
    close = 1000.0 + 50.0 * response / response.std()
    return X.astype(np.float32), close


def heartbeats(n: int = 90, length: int = 96, seed: int = 11) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic beat trains (not real ECG) in three rhythm classes, 60 / 25 / 15 %: 'normal' beats at a steady
    interval, 'afib' at irregular ones, 'other' at a steady faster one; each beat a narrow spike with noise."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(3), [int(0.6 * n), int(0.25 * n), n - int(0.6 * n) - int(0.25 * n)])
    rng.shuffle(labels)
    t = np.arange(length)
    X = rng.normal(0.0, 0.15, size=(n, length))
    for i, label in enumerate(labels):
        interval = {0: 16.0, 1: 16.0, 2: 9.0}[int(label)]
        beat = rng.uniform(0, interval)
        while beat < length:
            X[i] += 1.5 * np.exp(-0.5 * ((t - beat) / 1.2) ** 2)
            beat += interval * (rng.uniform(0.45, 1.55) if label == 1 else rng.uniform(0.95, 1.05))
    return X.astype(np.float32), np.array(RHYTHMS)[labels]


def demand(sites: int, samples: int = 600, seed: int = 5) -> dict[str, np.ndarray]:
    """Hourly-like load of `sites` sites at levels from 20 to 2000: a 12-sample and a 36-sample season, a trend
    and noise (each in proportion to the site's level), and a temperature channel that leads the load by 3 samples
    (an input only)."""
    rng = np.random.default_rng(seed)
    t = np.arange(samples, dtype=np.float64)
    rows = {"site": [], "t": [], "load": [], "temp": []}
    for s in range(sites):
        level = 20.0 * 100.0 ** (s / max(sites - 1, 1))  # 20 .. 2000
        phase = rng.uniform(0, 2 * np.pi)
        trend = rng.uniform(-0.2, 0.4) * t / samples
        weather = np.sin(2 * np.pi * (t + 3) / 36 + phase)
        load = level * (1.0 + trend + 0.25 * np.sin(2 * np.pi * t / 12) + 0.15 * weather
                        + 0.03 * rng.normal(size=samples))
        rows["site"] += [f"site{s}"] * samples
        rows["t"].append(t)
        rows["load"].append(load)
        rows["temp"].append(15.0 + 8.0 * np.sin(2 * np.pi * t / 36 + phase) + rng.normal(0, 0.5, samples))
    return {"site": np.array(rows["site"]), **{k: np.concatenate(rows[k]) for k in ("t", "load", "temp")}}


def write_demand(path: Path, sites: int, seed: int) -> None:
    d = demand(sites, seed=seed)
    with open(path, "w") as f:
        f.write("site,t,load,temp\n")
        for site, t, load, temp in zip(d["site"], d["t"], d["load"], d["temp"]):
            f.write(f"{site},{int(t)},{load:.3f},{temp:.3f}\n")


GAITS = ("rest", "walk", "run", "stairs")


def gait_recordings(recordings: int, samples: int = 1500, seed: int = 21) -> dict[str, np.ndarray]:
    """Synthetic three-axis accelerometer recordings at 50 Hz whose activity changes every 150 to 400 samples:
    rest (gravity and sensor noise), walk (a 1.8 Hz stride), run (2.8 Hz, larger, with a harmonic) and stairs
    (1.3 Hz, with a vertical step); the amplitude, phase and orientation vary by recording, every sample labelled."""
    rng = np.random.default_rng(seed)
    rows = {"subject": [], "time": [], "ax": [], "ay": [], "az": [], "activity": []}
    for r in range(recordings):
        labels = np.empty(samples, dtype=np.int64)
        at, last = 0, -1
        while at < samples:
            gait = int(rng.choice([g for g in range(len(GAITS)) if g != last]))
            length = int(rng.integers(150, 401))
            labels[at:at + length] = gait
            at, last = at + length, gait
        t = np.arange(samples) / 50.0
        gain, tilt = rng.uniform(0.8, 1.25), rng.uniform(-0.3, 0.3)
        signal = np.zeros((3, samples))
        signal[2] += 1.0  # gravity
        for gait, (hz, amp, harmonic, step) in enumerate(((0.0, 0.0, 0.0, 0.0), (1.8, 0.6, 0.0, 0.0),
                                                           (2.8, 1.4, 0.5, 0.0), (1.3, 0.5, 0.0, 0.6))):
            on = labels == gait
            phase = rng.uniform(0, 2 * np.pi)
            wave = amp * np.sin(2 * np.pi * hz * t + phase) + harmonic * np.sin(4 * np.pi * hz * t + phase)
            signal[0, on] += gain * wave[on]
            signal[1, on] += gain * 0.5 * np.cos(2 * np.pi * hz * t[on] + phase) * amp
            signal[2, on] += gain * (step * np.sign(np.sin(2 * np.pi * hz * t[on] + phase)) + 0.3 * wave[on])
        signal[0] += tilt * signal[2]
        signal += rng.normal(0.0, 0.08, size=signal.shape)
        rows["subject"] += [f"p{seed}-{r}"] * samples
        rows["time"].append(t)
        for axis, values in zip(("ax", "ay", "az"), signal):
            rows[axis].append(values)
        rows["activity"].append(np.array(GAITS)[labels])
    return {"subject": np.array(rows["subject"]), **{k: np.concatenate(v) for k, v in rows.items() if k != "subject"}}


def write_gait(path: Path, recordings: int, seed: int) -> None:
    d = gait_recordings(recordings, seed=seed)
    with open(path, "w") as f:
        f.write("subject,time,ax,ay,az,activity\n")
        for row in zip(d["subject"], d["time"], d["ax"], d["ay"], d["az"], d["activity"]):
            f.write(f"{row[0]},{row[1]:.2f},{row[2]:.3f},{row[3]:.3f},{row[4]:.3f},{row[5]}\n")


def machine_recordings(recordings: int, samples: int = 3000, seed: int = 31) -> dict[str, np.ndarray]:
    """A machine's vibration (a 25-sample cycle with noise, its level drifting by recording) with 2 % of the
    samples anomalous, in bursts of 10 to 30 samples: a knock (a fast, decaying 4-sample ring) or a stall (the
    cycle flat); `anomaly` is 1 on those samples."""
    rng = np.random.default_rng(seed)
    rows = {"machine": [], "vibration": [], "anomaly": []}
    for r in range(recordings):
        t = np.arange(samples)
        x = np.sin(2 * np.pi * t / 25 + rng.uniform(0, 2 * np.pi)) + rng.normal(0, 0.1, samples)
        label = np.zeros(samples, dtype=np.int64)
        while label.sum() < 0.02 * samples:
            length = int(rng.integers(10, 31))
            start = int(rng.integers(50, samples - length - 50))
            if label[start - 40:start + length + 40].any():
                continue
            label[start:start + length] = 1
            if rng.random() < 0.5:
                ring = np.arange(length)
                x[start:start + length] += 2.0 * np.sin(2 * np.pi * ring / 4) * np.exp(-ring / (2.0 * length))
            else:
                x[start:start + length] = 0.1 * x[start:start + length] + rng.normal(0, 0.05, length)
        rows["machine"] += [f"m{seed}-{r}"] * samples
        rows["vibration"].append(x * rng.uniform(0.9, 1.1) + rng.uniform(-0.2, 0.2))
        rows["anomaly"].append(label)
    return {"machine": np.array(rows["machine"]), **{k: np.concatenate(v) for k, v in rows.items() if k != "machine"}}


def write_machine(path: Path, recordings: int, seed: int) -> None:
    d = machine_recordings(recordings, seed=seed)
    with open(path, "w") as f:
        f.write("machine,vibration,anomaly\n")
        for machine, x, y in zip(d["machine"], d["vibration"], d["anomaly"]):
            f.write(f"{machine},{x:.3f},{y}\n")


def write_all(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    # the embedded data's kind drawn with other seeds, so none of these series is among the training series
    test = waveforms(n=40, seed=2026)
    write_ts(folder / "waveforms_test.ts", test.X, test.y, "waveforms")
    np.save(folder / "waveforms_new.npy", waveforms(n=16, seed=2027).X)
    X, close = prices()
    header = ",".join([f"r{j}" for j in range(X.shape[1])] + ["close"])
    np.savetxt(folder / "prices.csv", np.column_stack([X, close]), delimiter=",", header=header, comments="",
               fmt="%.5f")
    X, labels = heartbeats()
    np.savez(folder / "heartbeats.npz", X=X, y=labels)
    write_demand(folder / "demand.csv", sites=6, seed=5)
    write_demand(folder / "demand_test.csv", sites=3, seed=6)  # other sites: the test recordings are unseen
    write_gait(folder / "gait.csv", recordings=8, seed=21)
    write_gait(folder / "gait_test.csv", recordings=3, seed=22)  # other subjects: unseen
    write_machine(folder / "machine.csv", recordings=10, seed=31)
    write_machine(folder / "machine_test.csv", recordings=3, seed=32)
    return [folder / name for name in ("waveforms_test.ts", "waveforms_new.npy", "prices.csv", "heartbeats.npz",
                                       "demand.csv", "demand_test.csv", "gait.csv", "gait_test.csv", "machine.csv",
                                       "machine_test.csv")]


if __name__ == "__main__":
    for path in write_all(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE):
        print(path)
