"""Releasing what a sweep leaves on the Ray cluster.

Ray Tune stops a trial (ASHA, the end of the sweep, Ctrl+C) by ending the trial's actor, and the trial's
Ray Train controller, an actor that trial owns, dies with it. Two things the controller started outlive it:

- the placement group of its workers. A group made by an actor lasts until both that actor and its job
  (the driver) are dead, so its CPUs/GPUs stay reserved until `sare tune` exits; on a Ray instance that
  outlives the sweep (a notebook, the test session) the next training waits for them forever. Reports from
  the workers cannot name every such group: Ray Train restarts a failed worker group in a new placement
  group, and a controller torn down in the middle of that registers a group no worker ever ran in (the tiny
  sweep's diverging trial did; so did trials stopped by Ctrl+C while they started). The GCS flags a group
  when its maker dies, but not one registered by a maker already being torn down: Ray keeps such a group
  even after the job ends, until the whole Ray instance stops.
- Ray Train's `PlacementGroupCleaner`, a detached actor that would remove that group once the controller
  is dead, but learns of the death through Ray's State API, i.e. the dashboard. Without it (`sare tune`
  starts Ray with `include_dashboard=False`, and so do the tests) it polls forever.

The GCS tables say who made each placement group and actor and whether that maker is dead. `SweepReleaser`
removes the placement groups whose maker actor is dead (this job's since the sweep began, and any of a job
that ended), and ends the detached helpers this job started whose maker is dead (after a grace period in
which a working cleaner ends itself), while the sweep runs (`ReleaseCallback`, a Tune callback) and once it
returns or raises (`release_all`, which also waits, bounded, until the actors the sweep started are gone
and the CPUs/GPUs are free again, and warns naming what is still held).

The tables come from Ray's GCS accessor (`ray._private.state`, since the public State API needs the
dashboard). That is private API: `private_api_problems` checks the Ray version and every table field read
against what this module was tested with (pyproject.toml bounds Ray to those releases, and a test fails
on any change); should the check or the read fail, a warning says so and nothing is released.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from dataclasses import dataclass

import ray
from ray.tune import Callback

log = logging.getLogger(__name__)

HELPER_GRACE_S = 5.0  # a working PlacementGroupCleaner removes its group and ends within ~2 s of its maker
RELEASE_TIMEOUT_S = 60.0
RESOURCES_SETTLE_S = 10.0  # freed bundles reach ray.available_resources() within about a second
POLL_S = 0.5
RELEASE_INTERVAL_S = 2.0  # how often the callback looks for orphans while the sweep runs
COUNTED_RESOURCES = ("CPU", "GPU")


@dataclass(frozen=True)
class _Actor:
    id: str
    job: str
    class_name: str
    named: bool
    detached: bool
    dead: bool
    worker: str  # the worker process that hosts it
    owner_worker: str  # the worker that made it
    pid: int
    node: str


@dataclass(frozen=True)
class _Group:
    id: str
    job: str  # the job that made it
    job_dead: bool
    maker: str | None  # the actor that made it; None for a driver (Tune's per-trial groups)
    maker_flagged_dead: bool
    bundles: tuple[dict, ...]
    removed: bool
    detached: bool


@dataclass(frozen=True)
class _Tables:
    actors: dict[str, _Actor]  # by actor id, every job, dead ones included
    groups: tuple[_Group, ...]  # every job, removed ones included

    def maker_dead(self, group: _Group) -> bool:
        """Whether the actor that made the group is dead. The GCS flags a group when its maker dies, so a
        group that a Train controller registers while it is being torn down (it restarts its worker group
        in the last milliseconds) is never flagged, and Ray keeps it even after the job ends; the actor
        table tells the truth."""
        if group.maker is None:
            return False
        if group.maker_flagged_dead:
            return True
        maker = self.actors.get(group.maker)
        return maker.dead if maker is not None else group.job_dead


def _nil(binary_id: bytes) -> bool:
    return not binary_id or all(b == 0xFF for b in binary_id)


# Ray's private GCS accessor and table fields this module reads, and the Ray releases it was tested with
# (pyproject.toml bounds Ray to them). tests/pipelines/tune/test_cleanup.py fails when any of them changes.
TESTED_RAY_MINOR_VERSIONS = ((2, 60),)
ACTOR_FIELDS = ("actor_id", "job_id", "class_name", "name", "is_detached", "state", "address", "owner_address", "pid")
GROUP_FIELDS = ("placement_group_id", "creator_job_id", "creator_job_dead", "creator_actor_id",
                "creator_actor_dead", "bundles", "state", "is_detached")


class RayInternalsChanged(RuntimeError):
    """The installed Ray is not one whose private GCS tables this module was written against."""


def private_api_problems() -> list[str]:
    """What differs, in the installed Ray, from the private API `_read_tables` relies on ([] when nothing)."""
    problems = []
    version = tuple(int(part) for part in ray.__version__.split(".")[:2])
    if version not in TESTED_RAY_MINOR_VERSIONS:
        tested = ", ".join(f"{a}.{b}" for a, b in TESTED_RAY_MINOR_VERSIONS)
        problems.append(f"Ray {ray.__version__} is not a tested release ({tested})")
    try:
        from ray._private import state
        from ray.core.generated import gcs_pb2
    except ImportError as exc:
        return problems + [f"cannot import Ray's GCS state module or its protobufs ({exc})"]
    if not hasattr(state, "state") or not hasattr(state.state, "_connect_and_get_accessor"):
        problems.append("ray._private.state.state._connect_and_get_accessor is gone")
    for message, fields in ((gcs_pb2.ActorTableData, ACTOR_FIELDS), (gcs_pb2.PlacementGroupTableData, GROUP_FIELDS)):
        missing = [f for f in fields if f not in message.DESCRIPTOR.fields_by_name]
        if missing:
            problems.append(f"{message.__name__} lacks the fields {missing}")
    for enum, value in ((gcs_pb2.ActorTableData, "DEAD"), (gcs_pb2.PlacementGroupTableData, "REMOVED")):
        if not hasattr(enum, value):
            problems.append(f"{enum.__name__}.{value} is gone")
    return problems


def _read_tables() -> _Tables:
    """Every actor and placement group as the GCS records them (dead and removed ones included);
    RayInternalsChanged when the installed Ray is not one this reader was tested with."""
    problems = private_api_problems()
    if problems:
        raise RayInternalsChanged("; ".join(problems))
    from ray._private import state
    from ray.core.generated import gcs_pb2

    accessor = state.state._connect_and_get_accessor()
    actors = {}
    for raw in accessor.get_actor_table(None, None):
        a = gcs_pb2.ActorTableData.FromString(raw)
        actors[a.actor_id.hex()] = _Actor(
            id=a.actor_id.hex(),
            job=a.job_id.hex(),
            class_name=a.class_name,
            named=bool(a.name),
            detached=a.is_detached,
            dead=a.state == gcs_pb2.ActorTableData.DEAD,
            worker=a.address.worker_id.hex(),
            owner_worker=a.owner_address.worker_id.hex(),
            pid=a.pid,
            node=a.address.node_id.hex(),
        )
    groups = []
    for raw in accessor.get_placement_group_table():
        g = gcs_pb2.PlacementGroupTableData.FromString(raw)
        groups.append(
            _Group(
                id=g.placement_group_id.hex(),
                job=g.creator_job_id.hex(),
                job_dead=g.creator_job_dead,
                maker=None if _nil(g.creator_actor_id) else g.creator_actor_id.hex(),
                maker_flagged_dead=g.creator_actor_dead,
                bundles=tuple(dict(b.unit_resources) for b in g.bundles),
                removed=g.state == gcs_pb2.PlacementGroupTableData.REMOVED,
                detached=g.is_detached,
            )
        )
    return _Tables(actors, tuple(groups))


def _free() -> dict[str, float]:
    available = ray.available_resources()
    return {k: available.get(k, 0.0) for k in COUNTED_RESOURCES}


def _remove_group(group_id: str) -> None:
    from ray.util.placement_group import PlacementGroup, remove_placement_group

    try:
        remove_placement_group(PlacementGroup(ray.PlacementGroupID.from_hex(group_id)))
    except Exception as exc:  # removed meanwhile (a working Ray Train cleaner)
        log.debug("placement group %s: %s", group_id, exc)


def _describe_groups(groups) -> str:
    return ", ".join(f"{g.id[:12]} {list(g.bundles)}" for g in groups)


class SweepReleaser:
    """What this Ray job starts from now on (taken at construction) and its release."""

    def __init__(self, name: str):
        context = ray.get_runtime_context()
        self.name = name
        self.job = context.get_job_id()
        self.node = context.get_node_id()
        self.free_before = _free()
        self.broken = False
        self.orphaned_at: dict[str, float] = {}  # helper actor id -> when first seen without its maker
        self.ended: set[str] = set()  # helpers signalled to end
        self.removed: set[str] = set()  # placement groups removed
        tables = self._tables()
        self.known_actors = set(tables.actors) if tables else set()
        self.known_groups = {g.id for g in tables.groups} if tables else set()

    def _tables(self) -> _Tables | None:
        if self.broken:
            return None
        try:
            return _read_tables()
        except Exception as exc:
            self.broken = True
            log.warning(
                "sweep %s: cannot read Ray's actor and placement group tables (%s: %s); placement groups "
                "and actors that stopped trials leave behind are not released",
                self.name,
                type(exc).__name__,
                exc,
            )
            return None

    def _started(self, tables: _Tables) -> list[_Group]:
        """The live placement groups this job made since the sweep began."""
        return [
            g
            for g in tables.groups
            if g.job == self.job and g.id not in self.known_groups and not g.removed and not g.detached
        ]

    def _orphaned_groups(self, tables: _Tables) -> list[_Group]:
        """Live placement groups whose maker actor is dead: the sweep's own, and those of jobs that ended
        (an interrupted `sare tune` whose stopped trials left them; Ray removes them with neither)."""
        return [
            g
            for g in tables.groups
            if not g.removed
            and not g.detached
            and (g.job_dead or (g.job == self.job and g.id not in self.known_groups))
            and tables.maker_dead(g)
        ]

    def _running(self, tables: _Tables) -> list[_Actor]:
        """The sweep's actors still alive: trials, their Train controllers and workers."""
        return [
            a
            for a in tables.actors.values()
            if a.job == self.job and a.id not in self.known_actors and not a.dead and not a.detached
        ]

    def _orphaned_helpers(self, tables: _Tables) -> list[_Actor]:
        """Unnamed detached actors the sweep started whose maker (an actor of this job) is dead."""
        makers = {a.worker: a for a in tables.actors.values() if a.job == self.job}
        return [
            a
            for a in tables.actors.values()
            if a.job == self.job
            and a.id not in self.known_actors
            and a.detached
            and not a.named  # named detached actors are shared singletons (Ray Train's state actor)
            and not a.dead
            and a.owner_worker in makers
            and makers[a.owner_worker].dead
        ]

    def release_orphans(self, tables: _Tables | None = None) -> None:
        """Remove the placement groups whose maker died (see `_orphaned_groups`); end the sweep's detached
        helpers whose maker died at least HELPER_GRACE_S ago (SIGTERM: there is no handle to them; only on
        this node)."""
        tables = tables or self._tables()
        if tables is None:
            return
        for group in self._orphaned_groups(tables):
            if group.id not in self.removed:
                self.removed.add(group.id)
                _remove_group(group.id)
                log.info(
                    "sweep %s: released placement group %s (%s) left by a stopped trial%s",
                    self.name,
                    group.id,
                    list(group.bundles),
                    "" if group.job == self.job else f" of the ended job {group.job}",
                )
        now = time.monotonic()
        for actor in self._orphaned_helpers(tables):
            since = self.orphaned_at.setdefault(actor.id, now)
            if now - since >= HELPER_GRACE_S and actor.id not in self.ended:
                self._end(actor)

    def _end(self, actor: _Actor) -> None:
        self.ended.add(actor.id)
        if actor.node != self.node or actor.pid <= 0:
            log.warning(
                "sweep %s: %s actor %s of a stopped trial runs on another node (%s); it stays until it "
                "ends itself (it needs Ray's dashboard to notice its trial is gone)",
                self.name,
                actor.class_name,
                actor.id,
                actor.node[:12],
            )
            return
        log.info(
            "sweep %s: ending %s actor %s (pid %d) left by a stopped trial (Ray reports its worker as "
            "killed)",
            self.name,
            actor.class_name,
            actor.id,
            actor.pid,
        )
        try:
            os.kill(actor.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass

    def release_all(self, timeout_s: float = RELEASE_TIMEOUT_S) -> bool:
        """At the end of the sweep: wait until the actors it started are gone, release what they leave, then
        wait until the CPUs/GPUs free before the sweep are free again. Bounded by `timeout_s`; a warning
        names whatever is still held. True when everything came back."""
        deadline = time.monotonic() + timeout_s
        while True:
            tables = self._tables()
            if tables is None:
                return False
            running = self._running(tables)
            groups = {g.id: g for g in self._started(tables) + self._orphaned_groups(tables)}
            helpers = self._orphaned_helpers(tables)
            if not (running or groups or helpers):
                break
            if time.monotonic() > deadline:
                log.warning(
                    "sweep %s: %.0f s after the sweep, still on the Ray cluster: %d placement group(s) [%s], "
                    "%d actor(s) [%s]; what they hold stays reserved until this Ray job ends",
                    self.name,
                    timeout_s,
                    len(groups),
                    _describe_groups(groups.values()),
                    len(running) + len(helpers),
                    ", ".join(f"{a.class_name} {a.id[:12]}" for a in running + helpers),
                )
                return False
            self.release_orphans(tables)
            if not running:  # Tune is done: the groups its driver made for trials go too, should any be left
                for group in groups.values():
                    if group.maker is None and group.id not in self.removed:
                        self.removed.add(group.id)
                        _remove_group(group.id)
            time.sleep(POLL_S)
        settle = time.monotonic() + min(RESOURCES_SETTLE_S, max(deadline - time.monotonic(), 1.0))
        while True:
            now = _free()
            short = {k: self.free_before[k] - now[k] for k in COUNTED_RESOURCES if now[k] < self.free_before[k]}
            if not short:
                return True
            if time.monotonic() > settle:
                log.warning(
                    "sweep %s: nothing of the sweep is left, but %s of the resources free before it are "
                    "still in use (other jobs on the cluster?)",
                    self.name,
                    short,
                )
                return False
            time.sleep(POLL_S)


class ReleaseCallback(Callback):
    """Releases, while the sweep runs, what stopped trials leave (see the module docstring): every
    RELEASE_INTERVAL_S, the placement groups and detached helpers whose maker died.

    Tune saves its callbacks with the experiment and restores them on resume; the state that belongs to one
    process (job, snapshot) is made anew by `setup`, which Tune calls at the start of every run."""

    def __init__(self, name: str, interval_s: float = RELEASE_INTERVAL_S):
        self.name = name
        self.interval_s = interval_s
        self._releaser: SweepReleaser | None = None
        self._next = 0.0

    def __getstate__(self) -> dict:
        return {"name": self.name, "interval_s": self.interval_s}

    def __setstate__(self, state: dict) -> None:
        self.__init__(**state)

    def setup(self, **info) -> None:
        self._releaser = SweepReleaser(self.name)

    def on_step_begin(self, iteration: int, trials: list, **info) -> None:
        if self._releaser is None or time.monotonic() < self._next:
            return
        self._next = time.monotonic() + self.interval_s
        self._releaser.release_orphans()
