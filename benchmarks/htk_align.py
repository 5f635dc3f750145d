"""Another acoustic model for ``--phonetic`` (issue 23 item 3): the Penn Phonetics Lab Forced Aligner's HTK models,
aligned in numpy, against pocketsphinx, on recorded windows (``benchmarks.record_windows``).

The only MFA-grade English acoustic model found in PyPI, Debian or npm that needs neither torch nor a model hub
is P2FA's (monophone GMM-HMMs, 32 Gaussians a state, PLP features), inside the ``fave`` wheel (GPL-3.0; ~30 MB);
HTK, which FAVE runs it with, is not redistributable. This script reads its ``hmmdefs``, computes HTK-style
PLP_0_D_A_Z features (HTK's recipe: per-frame mean removal, pre-emphasis 0.97, Hamming, power spectrum, 20 mel
channels, equal loudness, cube-root compression, LPC order 12, cepstra liftered by 22, C0 the log residual energy,
utterance mean removed, deltas and accelerations over +-2 frames) and runs a Viterbi pass over ``sil word sp word
sp ... sil`` (``sp`` is HTK's skippable short pause; ``--variants`` lets each word take one of its first CMUdict
pronunciations). The model files are not in the repository; fetch them once:

    pip download --no-deps -d /tmp/fave fave==2.0.2
    unzip -q /tmp/fave/fave-2.0.2-py3-none-any.whl 'fave/align/model/*' -d /tmp/fave

Whisper's words, combined as ``PhoneticAligner`` combines pocketsphinx's (the same guard), scored by ``app eval``'s
``score_corpus`` (``--backends mean``: the mean of P2FA's and pocketsphinx's edges); and the reference text aligned
alone (the aligner's own accuracy, no recognition errors):

    PYTHONPATH=. .venv/bin/python -m benchmarks.htk_align words /tmp/edges-ljspeech_mfa-base.pkl \\
        /tmp/edges-timit_dev-base.pkl --model-dir /tmp/fave/fave/align/model
    PYTHONPATH=. .venv/bin/python -m benchmarks.htk_align reference /tmp/edges-timit_dev-base.pkl --model-dir ...
"""

from __future__ import annotations

import argparse
import pickle
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
from attrs import frozen
from numpy.typing import NDArray

from benchmarks.edge_heads import RuleAligner, hypotheses, line, rule_default, unlabelled_lag
from onepass_whisper.adapters.phonetic import aligner as phonetic
from onepass_whisper.adapters.text_metrics import WhisperTextMetrics
from onepass_whisper.application.evaluation import score_corpus
from onepass_whisper.domain.audio import DecodedChunk
from onepass_whisper.domain.model import Word

Array = NDArray[np.float64]
NEG = -1e30  # log of a transition that does not exist
_VOWELS = {"AA", "AE", "AH", "AO", "AW", "AY", "EH", "ER", "EY", "IH", "IY", "OW", "OY", "UH", "UW"}


@frozen
class Gmm:
    log_weights: Array  # (mixtures,)
    means: Array  # (mixtures, dims)
    inverse_variances: Array
    gconsts: Array  # (mixtures,): log((2 pi)^d |Sigma|), as HTK stores it


@frozen
class HtkModel:
    states: Mapping[str, Gmm]
    hmms: Mapping[str, tuple[tuple[str, ...], Array]]  # name -> its emitting states, its transition matrix
    dictionary: Mapping[str, tuple[tuple[str, ...], ...]]  # CMUdict with stress, upper case: its pronunciations
    variants: int = 1  # how many of a word's pronunciations the alignment may choose from

    @staticmethod
    def load(model_dir: Path, folder: str = "16000", variants: int = 1) -> HtkModel:
        states, hmms = _parse_hmmdefs((model_dir / folder / "hmmdefs").read_text())
        dictionary: dict[str, list[tuple[str, ...]]] = {}
        for entry in (model_dir / "dict").read_text(errors="replace").splitlines():
            parts = entry.split()
            if len(parts) >= 2 and tuple(parts[1:]) not in dictionary.setdefault(parts[0], []):
                dictionary[parts[0]].append(tuple(parts[1:]))
        return HtkModel(states, hmms, {w: tuple(p) for w, p in dictionary.items()}, variants)

    def pronunciations(self, word: str) -> list[list[str]]:
        """``word``'s phones, one list a pronunciation: the dictionary's first ``variants``, else ``pronounce``'s
        rough one with primary stress on its vowels; stress marks the model lacks become primary stress."""
        known = self.dictionary.get(word.upper())
        rough = [p + "1" if p in _VOWELS else p for p in phonetic.pronounce(word).split()]
        chosen = [list(p) for p in known[: self.variants]] if known else [rough]
        return [[p if p in self.hmms else re.sub(r"\d", "1", p) for p in phones] for phones in chosen]


def _parse_hmmdefs(text: str) -> tuple[dict[str, Gmm], dict[str, tuple[tuple[str, ...], Array]]]:
    """HTK's text ``hmmdefs``: ``~s`` state macros and ``~h`` models of diagonal Gaussian mixtures."""
    tokens = [m.group(0) for m in re.finditer(r'"[^"]*"|<[^>]+>|~\w|[^\s<>"~]+', text)]
    pos = 0
    states: dict[str, Gmm] = {}
    hmms: dict[str, tuple[tuple[str, ...], Array]] = {}

    def take(n: int) -> Array:
        nonlocal pos
        pos += n
        return np.array([float(t) for t in tokens[pos - n : pos]])

    def state(name: str) -> str:
        nonlocal pos
        if tokens[pos] == "~s":
            pos += 2
            return tokens[pos - 1].strip('"')
        mixtures = 1
        if tokens[pos].upper() == "<NUMMIXES>":
            mixtures = int(tokens[pos + 1])
            pos += 2
        weights, means, variances, gconsts = [], [], [], []
        for _ in range(mixtures):
            weight = 1.0
            if tokens[pos].upper() == "<MIXTURE>":
                weight = float(tokens[pos + 2])
                pos += 3
            pos += 2  # <MEAN> n
            mean = take(int(tokens[pos - 1]))
            pos += 2  # <VARIANCE> n
            variance = take(len(mean))
            gconst = float(len(mean) * np.log(2 * np.pi) + np.log(variance).sum())
            if tokens[pos].upper() == "<GCONST>":
                gconst = float(tokens[pos + 1])
                pos += 2
            weights.append(weight)
            means.append(mean)
            variances.append(variance)
            gconsts.append(gconst)
        states[name] = Gmm(
            np.log(np.maximum(weights, 1e-30)), np.array(means), 1.0 / np.array(variances), np.array(gconsts)
        )
        return name

    while pos < len(tokens):
        if tokens[pos] == "~s":
            pos += 2
            state(tokens[pos - 1].strip('"'))
        elif tokens[pos] == "~h":
            name = tokens[pos + 1].strip('"')
            count = int(tokens[pos + 4])  # ~h "name" <BEGINHMM> <NUMSTATES> n
            pos += 5
            emitting = []
            for i in range(count - 2):
                pos += 2  # <STATE> i
                emitting.append(state(f"{name}[{i}]"))
            pos += 2  # <TRANSP> n
            hmms[name] = (tuple(emitting), take(count * count).reshape(count, count))
            pos += 1  # <ENDHMM>
        else:
            pos += 1
    return states, hmms


def _mel(hz: Array | float) -> Array:
    return np.asarray(1127.0 * np.log(1.0 + np.asarray(hz) / 700.0))


def _regression(x: Array, width: int = 2) -> Array:
    """HTK's deltas: the regression slope over +-``width`` frames, the first and last frames repeated."""
    n = len(x)
    padded = np.concatenate([np.repeat(x[:1], width, 0), x, np.repeat(x[-1:], width, 0)])
    slope = sum(
        k * (padded[width + k : width + k + n] - padded[width - k : width - k + n]) for k in range(1, width + 1)
    )
    return np.asarray(slope / (2 * sum(k * k for k in range(1, width + 1))))


def plp_features(samples: NDArray[np.float32], rate: int = 16000, channels: int = 20, order: int = 12) -> Array:
    """HTK's PLP_0_D_A_Z (10-ms frames of 25 ms): (frames, 39), C0 after c1..c12 as HTK orders them."""
    size, hop = round(0.025 * rate), round(0.01 * rate)
    x = samples.astype(np.float64) * 32768.0
    count = 1 + (len(x) - size) // hop if len(x) >= size else 0
    if count < 1:
        return np.zeros((0, 3 * (order + 1)))
    frames = x[np.arange(size)[None, :] + hop * np.arange(count)[:, None]]
    frames -= frames.mean(axis=1, keepdims=True)
    frames[:, 1:] -= 0.97 * frames[:, :-1].copy()
    frames[:, 0] *= 1 - 0.97
    frames *= 0.54 - 0.46 * np.cos(2 * np.pi * np.arange(size) / (size - 1))
    nfft = 1 << (size - 1).bit_length()
    spectrum = np.fft.rfft(frames, nfft)[:, : nfft // 2]
    power = spectrum.real**2 + spectrum.imag**2
    mels = _mel(np.arange(nfft // 2) * rate / nfft)
    centres = np.arange(channels + 2) * _mel(rate / 2) / (channels + 1)
    rise = (mels[:, None] - centres[None, :-2]) / np.diff(centres)[None, :-1]
    fall = (centres[None, 2:] - mels[:, None]) / np.diff(centres)[None, 1:]
    bank = np.clip(np.minimum(rise, fall), 0.0, None)
    bank[0] = 0.0  # HTK leaves the DC bin out
    hz = 700.0 * (np.exp(centres[1:-1] / 1127.0) - 1.0)
    sq = hz * hz
    loudness = (sq / (sq + 1.6e5)) ** 2 * (sq + 1.44e6) / (sq + 9.61e6)
    compressed = (np.maximum(power @ bank, 1e-10) * loudness) ** 0.33
    duplicated = np.concatenate([compressed[:, :1], compressed, compressed[:, -1:]], axis=1)
    dim = channels + 2
    cosines = np.cos(np.pi / (dim - 1) * np.arange(order + 1)[:, None] * np.arange(dim)[None, :])
    cosines[:, 1:-1] *= 2.0
    autocorrelation = duplicated @ cosines.T / (2.0 * (dim - 1))
    lpc = np.zeros((count, order))
    energy = autocorrelation[:, 0].copy()
    for i in range(order):  # Durbin's recursion, all frames at once
        k = (autocorrelation[:, i + 1] + (lpc[:, :i] * autocorrelation[:, i:0:-1]).sum(axis=1)) / energy
        energy *= np.maximum(1.0 - k * k, 1e-5)
        lpc[:, :i] = lpc[:, :i] - k[:, None] * lpc[:, i - 1 :: -1][:, :i] if i else lpc[:, :i]
        lpc[:, i] = -k
    cepstrum = np.zeros((count, order))
    for i in range(order):
        inner = sum((i - j) * lpc[:, j] * cepstrum[:, i - j - 1] for j in range(i)) if i else 0.0
        cepstrum[:, i] = -lpc[:, i] - inner / (i + 1)
    cepstrum *= 1.0 + 11.0 * np.sin(np.pi * np.arange(1, order + 1) / 22.0)
    static = np.concatenate([cepstrum, np.log(np.maximum(energy, 1e-30))[:, None]], axis=1)
    static -= static.mean(axis=0)
    deltas = _regression(static)
    return np.concatenate([static, deltas, _regression(deltas)], axis=1)


def _log_likelihoods(features: Array, gmms: Sequence[Gmm]) -> Array:
    """(frames, states) log-likelihoods, every Gaussian of every state in one product."""
    a = np.concatenate([g.inverse_variances for g in gmms])
    b = np.concatenate([g.means * g.inverse_variances for g in gmms])
    c = np.concatenate([(g.means**2 * g.inverse_variances).sum(-1) + g.gconsts for g in gmms])
    q = -0.5 * ((features**2) @ a.T - 2.0 * features @ b.T + c) + np.concatenate([g.log_weights for g in gmms])
    out = np.empty((len(features), len(gmms)))
    start = 0
    for i, g in enumerate(gmms):
        block = q[:, start : start + len(g.log_weights)]
        top = block.max(axis=1)
        out[:, i] = top + np.log(np.exp(block - top[:, None]).sum(axis=1))
        start += len(g.log_weights)
    return out


def align(model: HtkModel, words: Sequence[Sequence[str]], samples: NDArray[np.float32]) -> Array | None:
    """(start, end) seconds of each decoded word (its dictionary words ``words[i]``; NaN where empty), or None.

    The network: ``sil``, each word's pronunciations side by side, a skippable ``sp`` after each word, ``sil``.
    """
    hmm: list[tuple[str, int]] = [("sil", -1)]  # HMM instances: (HMM, decoded word or -1)
    after: list[list[int]] = [[]]  # the instances each one leads to
    tails = [0]
    for index, parts in enumerate(words):
        for part in parts:
            ends = []
            for phones in model.pronunciations(part):
                previous = tails
                for phone in phones:
                    hmm.append((phone, index))
                    after.append([])
                    for t in previous:
                        after[t].append(len(hmm) - 1)
                    previous = [len(hmm) - 1]
                ends += previous
            tails = ends
        if parts:
            hmm.append(("sp", -1))
            after.append([])
            for t in tails:
                after[t].append(len(hmm) - 1)
            tails = [len(hmm) - 1]
    if len(hmm) == 1 or any(name not in model.hmms for name, _ in hmm):
        return None
    hmm[-1] = ("sil", -1)
    firsts = np.cumsum([0] + [len(model.hmms[name][0]) for name, _ in hmm])
    names = [s for name, _ in hmm for s in model.hmms[name][0]]
    owner = np.repeat(np.arange(len(hmm)), np.diff(firsts))
    arcs: dict[tuple[int, int], float] = {}
    entry, leave = np.full(len(names), NEG), np.full(len(names), NEG)

    def onward(targets: Sequence[int], p: float) -> Iterator[tuple[int, float]]:
        """Emitting states reachable on entering ``targets`` with probability ``p``, through skippable (tee) HMMs;
        -1 for the network's end."""
        if not targets:
            yield -1, p
        for m in targets:
            matrix = model.hmms[hmm[m][0]][1]
            for j in range(1, len(matrix) - 1):
                if matrix[0, j] > 0:
                    yield int(firsts[m]) + j - 1, p * matrix[0, j]
            if matrix[0, -1] > 0:
                yield from onward(after[m], p * matrix[0, -1])

    for s, p in onward([0], 1.0):
        if s >= 0:
            entry[s] = max(entry[s], np.log(p))
    for m, (name, _) in enumerate(hmm):
        matrix = model.hmms[name][1]
        for i in range(1, len(matrix) - 1):
            src = int(firsts[m]) + i - 1
            for j in range(1, len(matrix) - 1):
                if matrix[i, j] > 0:
                    arcs[(src, int(firsts[m]) + j - 1)] = np.log(matrix[i, j])
            if matrix[i, -1] > 0:
                for dst, p in onward(after[m], matrix[i, -1]):
                    if dst < 0:
                        leave[src] = max(leave[src], np.log(p))
                    else:
                        arcs[(src, dst)] = max(arcs.get((src, dst), NEG), np.log(p))
    features = plp_features(samples)
    frames, count = len(features), len(names)
    if frames < 2:
        return None
    offsets = sorted({dst - src for src, dst in arcs})
    weights = np.full((len(offsets), count), NEG)
    for (src, dst), lp in arcs.items():
        weights[offsets.index(dst - src), dst] = lp
    unique = sorted(set(names))
    column = {n: i for i, n in enumerate(unique)}
    scores = _log_likelihoods(features, [model.states[n] for n in unique])[:, [column[n] for n in names]]
    back = np.zeros((frames, count), dtype=np.int16)
    best = entry + scores[0]
    candidates = np.full((len(offsets), count), NEG)
    for t in range(1, frames):  # Viterbi: each arc is a shift of the state axis
        for k, off in enumerate(offsets):
            candidates[k] = NEG
            if off >= 0:
                candidates[k, off:] = best[: count - off] + weights[k, off:]
            else:
                candidates[k, :off] = best[-off:] + weights[k, :off]
        back[t] = candidates.argmax(axis=0)
        best = candidates[back[t], np.arange(count)] + scores[t]
    final = best + leave
    s = int(final.argmax())
    if final[s] <= NEG / 2:
        return None
    path = np.empty(frames, dtype=np.int64)
    for t in range(frames - 1, -1, -1):
        path[t] = s
        s -= offsets[back[t, s]]
    word_of = np.array([hmm[m][1] for m in owner[path]])
    spans = np.full((len(words), 2), np.nan)
    for index in range(len(words)):
        at = np.flatnonzero(word_of == index)
        if len(at):  # a frame's time is its window's centre (12.5 ms in), as P2FA reports it
            spans[index] = at[0] * 0.01 + 0.0125, (at[-1] + 1) * 0.01 + 0.0125
    return spans


def _backend(name: str, model: HtkModel) -> Callable[[Sequence[str], NDArray[np.float32]], Array | None]:
    """pocketsphinx's alignment, P2FA's, or the mean of both edges (either alone where the other failed)."""
    if name == "pocketsphinx":
        return phonetic.forced_alignment

    def p2fa(words: Sequence[str], samples: NDArray[np.float32]) -> Array | None:
        return align(model, [phonetic.dictionary_words(w) for w in words], samples)

    if name == "p2fa":
        return p2fa

    def mean(words: Sequence[str], samples: NDArray[np.float32]) -> Array | None:
        ours, theirs = p2fa(words, samples), phonetic.forced_alignment(words, samples)
        return theirs if ours is None else ours if theirs is None else (ours + theirs) / 2

    return mean


def words_command(args: argparse.Namespace) -> None:
    """Whisper's words through ``PhoneticAligner`` with each backend's alignment."""
    model = HtkModel.load(args.model_dir, args.model, args.variants)
    for path in args.records:
        with path.open("rb") as f:
            record = pickle.load(f)
        lag = unlabelled_lag(record, rule_default)
        inner = RuleAligner(rule_default, tuple(map(tuple, record["heads"])), record, True, lag)
        for backend in args.backends:
            aligned: dict[int, Array | None] = {}
            cpu = audio = 0.0
            for chunk in record["chunks"]:
                words = [w.text for segment in inner.align(chunk) for w in segment]
                if words:
                    started = time.process_time()
                    aligned[id(chunk)] = _backend(backend, model)(words, chunk.window.samples)
                    cpu += time.process_time() - started
                    audio += chunk.window.duration
            metrics = score_corpus(record["refs"], hypotheses(record, _Replayed(inner, aligned)), WhisperTextMetrics())
            overall = metrics.overall
            both = overall.recall_50 * overall.reference_words
            ceiling = overall.f1_50 * overall.matched_words / both if both else float("nan")
            print(
                f"{path.name} {backend} (lag {1000 * lag:+.0f} ms): {line('', overall)}, "
                f"both edges <= 50 ms for {both / overall.matched_words:.3f} of matched words, "
                f"F1@50 if all were: {ceiling:.3f}; {cpu / audio:.4f} s CPU a second",
                flush=True,
            )


@frozen
class _Replayed:
    """``PhoneticAligner`` given each window's alignment computed beforehand."""

    inner: Any
    aligned: Mapping[int, Array | None]

    def align(self, chunk: DecodedChunk) -> tuple[tuple[Word, ...], ...]:
        with mock.patch.object(phonetic, "forced_alignment", lambda words, samples: self.aligned.get(id(chunk))):
            return phonetic.PhoneticAligner(self.inner).align(chunk)


def reference_command(args: argparse.Namespace) -> None:
    """The reference text aligned on each file of one window: the aligner alone, no recognition errors."""
    model = HtkModel.load(args.model_dir, args.model, args.variants)
    for path in args.records:
        with path.open("rb") as f:
            record = pickle.load(f)
        chunks: dict[int, list[DecodedChunk]] = {}
        for chunk in record["chunks"]:
            chunks.setdefault(chunk.window.source, []).append(chunk)
        for backend in args.backends:
            errors = []
            for source, windows in chunks.items():
                if len(windows) == 1 and windows[0].window.offset == 0:
                    reference = record["refs"][source]
                    truth = np.array([(w.start, w.end) for w in reference.words])
                    spans = _backend(backend, model)([w.text for w in reference.words], windows[0].window.samples)
                    errors.append(np.full_like(truth, np.nan) if spans is None else spans - truth)
            e = np.concatenate(errors)
            a = np.abs(e[~np.isnan(e).any(axis=1)])
            within = np.count_nonzero((a <= 0.05).all(axis=1)) / len(e)
            print(
                f"{path.name} {backend}, reference text: {len(e)} words, both edges <= 50 ms {within:.3f}, "
                f"start / end MAE {1000 * a[:, 0].mean():.0f} / {1000 * a[:, 1].mean():.0f} ms",
                flush=True,
            )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["words", "reference"])
    parser.add_argument("records", type=Path, nargs="+")
    parser.add_argument("--model-dir", type=Path, required=True, help="fave's align/model folder")
    parser.add_argument("--model", default="16000", help="the folder of hmmdefs under --model-dir")
    parser.add_argument("--variants", type=int, default=1, help="pronunciations a word may take (CMUdict's first)")
    parser.add_argument(
        "--backends", nargs="+", default=["pocketsphinx", "p2fa"], choices=["pocketsphinx", "p2fa", "mean"]
    )
    args = parser.parse_args(argv)
    (words_command if args.command == "words" else reference_command)(args)


if __name__ == "__main__":
    main()
