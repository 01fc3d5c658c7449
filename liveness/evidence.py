"""Per-track evidence and the decision rule, shared by the fusion service and offline evaluation.

Face scores are turned into clipped log-likelihood ratios around a neutral point, whose mean
counts for at most ``face_cap`` crops, with a discount (frames of one track are strongly
correlated, and a long track must not pile up a small bias); eye windows fill a histogram
whose low quantile says whether the track ever blinked. The sum is compared with two
thresholds: a spoof needs less evidence than a live face, since a false "spoof" is the cheaper
error. A track's most attack-like moment (a few crops in a row at the top of the evidence) decides
spoof for good, whatever its mean says: a replay may look live on most frames and not on all. The ``last_scores`` rule (the last eye score says fake -> fake, else the last face score
decides: the original project's) is kept for comparison.

The neutral point is where the light of a camera's room puts it, not where training put it:
a camera with enough live tracks labelled by an operator (``liveness label``) is calibrated,
its neutral point is ``face_margin`` log-odds above the median face score of those live
tracks; an uncalibrated camera uses ``face_threshold``. A threshold chosen in one room
rejects most live faces in a dimmer one; the distance between live faces and attacks
carries across rooms much better (``models/artifacts/fusion.md``).

Every path that decides (live fusion, ``evaluate --model fused``, clip jobs) takes its policy
from ``load_policy``, so one config decides the same scores the same way everywhere.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Literal, NamedTuple

import redis
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from liveness.config import FusionSettings
from liveness.contract import Keys, Verdict, is_id
from liveness.defaults import artifact_path
from liveness.errors import ConfigError, CorruptStateError

if TYPE_CHECKING:
    from redis.typing import EncodableT, FieldT

EYE_BINS = 20
"""Bins of the per-track histogram of eye-window scores over [0, 1]."""

LLR_CLIP = 3.0
"""Largest evidence one score may carry, in log-odds."""

MOMENT_CROPS = 3
"""Face crops in a row whose mean evidence is one moment of a track (``Policy.moment_at``)."""


class Policy(BaseModel):
    """Decision thresholds, chosen from data (``models/artifacts/fusion.json``), overridable in config."""

    model_config = ConfigDict(extra="forbid")

    face_threshold: float = Field(0.5, gt=0, lt=1, description="Face score at which one crop is neutral (uncalibrated)")
    face_margin: float = Field(3.0, description="Log-odds above a calibrated camera's live median: neutral")
    calibration_tracks: int = Field(3, ge=1, description="Labelled live tracks before a camera counts as calibrated")
    face_weight: float = Field(0.35, gt=0, description="Discount on each crop's log-odds (correlated frames)")
    face_cap: int = Field(8, ge=1, description="Crops beyond which face evidence stops growing (mean x cap)")
    eye_threshold: float = Field(0.5, gt=0, lt=1, description="Track eye quantile at which eyes are neutral")
    eye_quantile: float = Field(0.25, gt=0, lt=1, description="Quantile of a track's window scores used")
    eye_weight: float = Field(1.0, ge=0, description="Weight of the eye evidence")
    eye_min_windows: int = Field(10, ge=1, description="Windows before eye evidence counts")
    spoof_at: float = Field(2.0, gt=0, description="Total evidence at or above which a track is spoof")
    live_at: float = Field(3.0, gt=0, description="Total evidence at or below minus this is live")
    min_face: int = Field(3, ge=1, description="Face scores needed before any decision")
    moment_at: float | None = Field(None, gt=0, le=LLR_CLIP, description=(
        f"Mean evidence of {MOMENT_CROPS} face crops in a row at or above which a track is spoof, whatever "
        "the rest of it says (a replay may look live on most frames and betray itself on a few); none: off"))

    @classmethod
    def load(cls, path: str | Path) -> "Policy":
        return cls.model_validate(json.loads(Path(path).read_text(encoding="utf-8")))


def load_policy(fusion: FusionSettings) -> Policy:
    """The config's policy: the file ``fusion.policy`` (default: the one stored with the models, or
    the documented defaults before one is), with ``fusion.spoof_threshold`` and
    ``fusion.live_threshold`` over it."""
    path = Path(fusion.policy) if fusion.policy else artifact_path("fusion.json")
    if fusion.policy and not path.is_file():
        raise ConfigError(f"fusion.policy: no such file {path}")
    overrides = {"spoof_at": fusion.spoof_threshold, "live_at": fusion.live_threshold}
    try:
        stored = Policy.load(path).model_dump() if path.is_file() else {}
        return Policy.model_validate({**stored, **{k: v for k, v in overrides.items() if v is not None}})
    except (ValueError, ValidationError) as e:  # JSONDecodeError is a ValueError
        raise ConfigError(f"fusion policy {path} with the config's thresholds: {e}") from None


def _logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


_MAX_LOGIT = _logit(1.0)
"""Largest log-odds of one score (scores are clipped to [1e-6, 1 - 1e-6])."""


def _llr(p: float, threshold: float) -> float:
    return _clip(_logit(p) - _logit(threshold))


def _clip(llr: float) -> float:
    return max(-LLR_CLIP, min(LLR_CLIP, llr))


def live_baseline(live_means: list[float], policy: Policy) -> float | None:
    """A camera's calibration: the median face log-odds of its labelled live tracks, once there are enough."""
    return statistics.median(live_means) if len(live_means) >= policy.calibration_tracks else None


def face_neutral(policy: Policy, baseline: float | None) -> float:
    """The face log-odds at which one crop is neutral, for a camera with ``baseline`` (None: uncalibrated).

    A calibration only ever lowers it (makes the camera stricter): labels, right or wrong, can never
    make a camera accept an attack the uncalibrated policy would refuse.
    """
    uncalibrated = _logit(policy.face_threshold)
    return uncalibrated if baseline is None else min(uncalibrated, baseline + policy.face_margin)


@dataclass
class TrackEvidence:
    """What is known of one track; serialisable to a flat Redis hash."""

    camera: str = ""
    label: str = ""
    first_capture_ts: float = 0.0
    last_capture_ts: float = 0.0
    face_n: int = 0
    face_llr: float = 0.0
    face_logit: float = 0.0
    """Sum of the raw face log-odds: a labelled live track's mean calibrates its camera."""
    last_face: float = -1.0
    face_recent: list[float] = field(default_factory=list)
    """The evidence of the last ``MOMENT_CROPS`` face crops, in the order they arrived."""
    face_moment: float = -LLR_CLIP
    """The highest mean of ``face_recent`` so far: the track's most attack-like moment."""
    eye_n: int = 0
    eye_hist: list[int] = field(default_factory=lambda: [0] * EYE_BINS)
    last_eye: float = -1.0
    verdict: Verdict = "undecided"
    decisions: int = 0
    first_decision_ts: float = 0.0

    @property
    def frames(self) -> int:
        return self.face_n + self.eye_n

    @property
    def face_logit_mean(self) -> float | None:
        return self.face_logit / self.face_n if self.face_n else None

    def add(self, kind: Literal["face", "eye"], score: float, capture_ts: float, policy: Policy,
            baseline: float | None = None) -> None:
        """Count one score; ``baseline`` is the camera's calibration (``live_baseline``), if any."""
        if not self.first_capture_ts or capture_ts < self.first_capture_ts:
            self.first_capture_ts = capture_ts
        self.last_capture_ts = max(self.last_capture_ts, capture_ts)
        if kind == "face":
            self.face_n += 1
            logit = _logit(score)
            self.face_logit += logit
            llr = _clip(logit - face_neutral(policy, baseline))
            self.face_llr += llr
            self.last_face = score
            self.face_recent = [*self.face_recent, llr][-MOMENT_CROPS:]
            if len(self.face_recent) == MOMENT_CROPS:
                self.face_moment = max(self.face_moment, sum(self.face_recent) / MOMENT_CROPS)
        else:
            self.eye_n += 1
            self.eye_hist[min(int(score * EYE_BINS), EYE_BINS - 1)] += 1
            self.last_eye = score

    def eye_quantile(self, q: float) -> float:
        """The ``q`` quantile of the track's eye-window scores (bin centre)."""
        need = q * self.eye_n
        seen = 0
        for i, count in enumerate(self.eye_hist):
            seen += count
            if seen >= need and count:
                return (i + 0.5) / EYE_BINS
        return 1.0

    def evidence(self, policy: Policy) -> tuple[float, float]:
        """(face, eye) evidence in log-odds; positive says spoof."""
        # the mean log-odds times at most face_cap crops: a long track must not pile up evidence
        # from a small bias (a shift of light moves every score a little), a short one still decides
        face = policy.face_weight * (self.face_llr / self.face_n) * min(self.face_n, policy.face_cap) if self.face_n else 0.0
        eye = 0.0
        if self.eye_n >= policy.eye_min_windows:
            eye = policy.eye_weight * _llr(self.eye_quantile(policy.eye_quantile), policy.eye_threshold)
        return face, eye

    def decide(self, policy: Policy, rule: str = "evidence") -> tuple[Verdict, float]:
        """The verdict and its confidence (probability of the verdict, from the total log-odds)."""
        if self.face_n < policy.min_face:
            return "undecided", 0.0
        if rule == "last_scores":
            eye_fake = self.last_eye >= 0 and self.last_eye >= policy.eye_threshold
            spoof = eye_fake or self.last_face >= policy.face_threshold
            return ("spoof" if spoof else "live"), max(self.last_face, 1 - self.last_face)
        if policy.moment_at is not None and self.face_moment >= policy.moment_at:
            return "spoof", 1.0 / (1.0 + math.exp(-self.face_moment))
        face, eye = self.evidence(policy)
        total = face + eye
        confidence = 1.0 / (1.0 + math.exp(-abs(total)))
        if total >= policy.spoof_at:
            return "spoof", confidence
        if total <= -policy.live_at:
            return "live", confidence
        return "undecided", confidence

    def step(self, kind: Literal["face", "eye"], score: float, capture_ts: float, policy: Policy,
             baseline: float | None, rule: str, now: float) -> "Change | None":
        """Count the track's next score and decide: the change of verdict it brings, if any.

        The one stepper from scores to verdicts: fusion steps each score it receives, offline
        replay each score a camera would have sent, so both reach the same verdicts in the same
        order. A verdict, once reached, changes only to the other one (never back to undecided).
        """
        self.add(kind, score, capture_ts, policy, baseline)
        verdict, confidence = self.decide(policy, rule)
        if verdict == "undecided" or verdict == self.verdict:
            return None
        self.verdict = verdict
        self.decisions += 1
        if not self.first_decision_ts:
            self.first_decision_ts = now
        return Change(verdict, confidence)

    def to_hash(self) -> dict[FieldT, EncodableT]:
        # fields() and getattr, not asdict(): asdict deep-copies, and was a fifth of fusion's CPU
        out: dict[FieldT, EncodableT] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = json.dumps(value) if isinstance(value, list) else str(value)
        return out

    @classmethod
    def from_hash(cls, raw: dict[bytes, bytes]) -> "TrackEvidence":
        """The state ``to_hash`` wrote; fields it lacks (an older schema) keep their defaults.

        CorruptStateError names the first field that does not parse or breaks an invariant of
        ``add``: garbage must never be read as evidence.
        """
        ev = cls()
        for f in fields(ev):
            value = raw.get(f.name.encode())
            if value is None:
                continue
            default = getattr(ev, f.name)
            try:
                text = value.decode()
                setattr(ev, f.name, json.loads(text) if isinstance(default, list) else type(default)(text))
            except ValueError:  # UnicodeDecodeError and JSONDecodeError are ValueErrors too
                kind = type(default).__name__
                raise CorruptStateError(f"field {f.name}: {value[:40]!r} does not parse as {kind}") from None
        problem = ev._invalid()
        if problem:
            raise CorruptStateError(problem)
        return ev

    def _invalid(self) -> str | None:
        """What breaks an invariant that ``add`` and ``decide`` keep, if anything."""
        if self.label not in ("", "live", "spoof") or self.verdict not in ("live", "spoof", "undecided"):
            return f"label {self.label[:20]!r} or verdict {self.verdict[:20]!r} unknown"
        if self.camera and not is_id(self.camera):  # it goes into keys, decisions and metrics
            return f"camera {self.camera[:20]!r} is not an id the stream contract allows"
        if min(self.face_n, self.eye_n, self.decisions) < 0:
            return "a negative count"
        numbers = (self.first_capture_ts, self.last_capture_ts, self.face_llr, self.face_logit, self.last_face,
                   self.last_eye, self.first_decision_ts)
        if not all(math.isfinite(x) for x in numbers):
            return "a number that is not finite"
        if (abs(self.face_llr) > LLR_CLIP * self.face_n + 1e-6
                or abs(self.face_logit) > _MAX_LOGIT * self.face_n + 1e-6):
            return f"face evidence {self.face_llr:g}, {self.face_logit:g} beyond what {self.face_n} scores carry"
        if not (-1.0 <= self.last_face <= 1.0 and -1.0 <= self.last_eye <= 1.0):
            return "a last score outside [0, 1]"
        recent = self.face_recent
        if (not isinstance(recent, list) or len(recent) > min(MOMENT_CROPS, self.face_n)
                or not all(type(x) in (int, float) and abs(x) <= LLR_CLIP for x in recent)
                or not -LLR_CLIP <= self.face_moment <= LLR_CLIP):
            return f"face_recent or face_moment is not the evidence of at most {MOMENT_CROPS} crops"
        hist = self.eye_hist
        if (not isinstance(hist, list) or len(hist) != EYE_BINS
                or not all(type(c) is int and c >= 0 for c in hist) or sum(hist) != self.eye_n):
            return f"eye_hist is not {EYE_BINS} counts summing to eye_n {self.eye_n}"
        return None


Decider = Literal["face", "eye", "both", "moment"]
"""The kind of evidence that carried a decision; ``both`` when only their sum reached the threshold,
``moment`` when neither did and the track's most attack-like moment decided spoof."""


def decided_by(face: float, eye: float, verdict: Verdict, policy: Policy, moment: float = -LLR_CLIP) -> Decider:
    """Which evidence carried a decision of ``verdict`` with evidence (``face``, ``eye``) and the track's
    ``face_moment``: the kind that alone reaches the verdict's threshold (the larger, when each does),
    else both, else (a spoof) the moment.

    What an operator needs to see per camera: whether the face model decides alone, or the eyes
    (or another cue) turn decisions.
    """
    sign, need = (1.0, policy.spoof_at) if verdict == "spoof" else (-1.0, policy.live_at)
    face_alone, eye_alone = sign * face >= need, sign * eye >= need
    if face_alone and eye_alone:
        return "face" if sign * face >= sign * eye else "eye"
    if face_alone or eye_alone:
        return "face" if face_alone else "eye"
    moment_alone = verdict == "spoof" and policy.moment_at is not None and moment >= policy.moment_at
    return "moment" if moment_alone and face + eye < need else "both"


class Change(NamedTuple):
    """A track's verdict changed: the decision event fusion publishes."""

    verdict: Verdict
    confidence: float


class Shown(NamedTuple):
    """What other services may read of a track's state: its verdict and its last face score."""

    verdict: Verdict
    last_face: float
    """The last face score; -1 before the first."""

    @property
    def decided(self) -> bool:
        return self.verdict != "undecided"


_SHOWN = tuple(Shown._fields)
assert set(_SHOWN) <= {f.name for f in fields(TrackEvidence)}, "Shown reads fields TrackEvidence writes"


def read_verdicts(client: redis.Redis, keys: Keys, tracks: list[str]) -> dict[str, Shown]:
    """The verdicts of ``tracks`` as fusion keeps them (``to_hash``), in one round trip: how ingest
    slows a decided track's crops and how the preview colours it, without knowing fusion's fields.

    A track fusion has not seen, or a state that does not parse (a key of another type, a field
    of garbage), reads as undecided; RedisError when Redis does not answer.
    """
    pipe = client.pipeline(transaction=False)
    for track in tracks:
        pipe.hmget(keys.track_state(track), list(_SHOWN))
    out = {}
    for track, reply in zip(tracks, pipe.execute(raise_on_error=False)):
        verdict, last_face = reply if isinstance(reply, list) else (None, None)
        try:
            score = float(last_face) if last_face is not None else -1.0
        except ValueError:
            score = -1.0
        out[track] = Shown("live" if verdict == b"live" else "spoof" if verdict == b"spoof" else "undecided", score)
    return out
