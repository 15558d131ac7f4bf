"""Sequence stage: bursts of one car lend a confident identity to the frames
where it is hidden.

Photographers shoot a passing car as a burst, a few tenths of a second
apart; the number is legible in some frames and the view clear in others.
Photos from one camera whose capture times lie within `max_gap_s` of the
previous one form a burst. Inside it, a vehicle is linked to the vehicle of
the next frame that it resembles most, when that resemblance is mutual and
clears `link_similarity` (the embedder's own match threshold): the chains
are tracks. A track whose confident members (matched, no conflict) all name
one car gives that car to its members that appearance and number left
unknown, or ambiguous with that car among their candidates. A track naming
two cars changes nothing: it is better left to the user.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

Vectors = Callable[[list[int]], np.ndarray]


@dataclass(frozen=True)
class Sighting:
    """One vehicle of a photo, as tagging decided it."""

    key: int
    """The caller's id for it (the stored detection's)."""
    decision: str
    car_id: str | None
    candidates: list[str]
    conflict: bool
    """Its number contradicted its appearance: the user's to settle, not the sequence's."""

    def open_to(self, car: str) -> bool:
        return self.decision == "unknown" or (self.decision == "ambiguous" and not self.conflict and car in self.candidates)


@dataclass(frozen=True)
class Shot:
    camera: str | None
    time: float | None
    sightings: list[Sighting]


@dataclass(frozen=True)
class FromSequence:
    key: int
    car_id: str
    frames: int
    """Photos in the track."""
    confident: int
    """Of them, those matched to the car on their own."""


def bursts(shots: list[Shot], max_gap_s: float) -> list[list[Shot]]:
    """Shots of one camera, in capture order, each within `max_gap_s` of the previous one (two or more)."""
    by_camera: dict[str, list[Shot]] = defaultdict(list)
    for shot in shots:
        if shot.camera is not None and shot.time is not None:
            by_camera[shot.camera].append(shot)
    found = []
    for camera_shots in by_camera.values():
        camera_shots.sort(key=lambda s: s.time or 0.0)
        current = [camera_shots[0]]
        for previous, shot in zip(camera_shots, camera_shots[1:]):
            if (shot.time or 0.0) - (previous.time or 0.0) <= max_gap_s:
                current.append(shot)
            else:
                found.append(current)
                current = [shot]
        found.append(current)
    return [burst for burst in found if len(burst) > 1]


def tracks(burst: list[Shot], link_similarity: float, vectors: Vectors) -> list[list[Sighting]]:
    """Chains of sightings, one per frame, linked by mutual best resemblance between consecutive frames."""
    parent: dict[int, int] = {}

    def root(key: int) -> int:
        while parent.setdefault(key, key) != key:
            key = parent[key]
        return key

    for shot, following in zip(burst, burst[1:]):
        if not shot.sightings or not following.sightings:
            continue
        similarity = vectors([s.key for s in shot.sightings]) @ vectors([s.key for s in following.sightings]).T
        for i, j in enumerate(similarity.argmax(axis=1)):
            if similarity[:, j].argmax() == i and similarity[i, j] >= link_similarity:
                parent[root(following.sightings[j].key)] = root(shot.sightings[i].key)
    members: dict[int, list[Sighting]] = defaultdict(list)
    for shot in burst:
        for sighting in shot.sightings:
            members[root(sighting.key)].append(sighting)
    return [track for track in members.values() if len(track) > 1]


def propagate(shots: list[Shot], max_gap_s: float, link_similarity: float, vectors: Vectors) -> list[FromSequence]:
    """The sightings a track's confident identity decides. `vectors`: the
    unit appearance vectors of sightings by key (read when a burst needs
    them, so a long event's vectors are never all in memory)."""
    decided = []
    for burst in bursts(shots, max_gap_s):
        for track in tracks(burst, link_similarity, vectors):
            cars = {car for s in track if s.decision == "match" and (car := s.car_id) is not None}
            if len(cars) != 1:
                continue
            (car,) = cars
            confident = sum(s.decision == "match" for s in track)
            decided += [FromSequence(s.key, car, len(track), confident) for s in track if s.open_to(car)]
    return decided
