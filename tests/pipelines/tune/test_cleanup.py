"""The sweep's cleanup reads Ray's private GCS tables: any change of Ray's internals fails here, loudly."""

import ray

from pipelines.tune.cleanup import TESTED_RAY_MINOR_VERSIONS, _read_tables, private_api_problems


def test_the_installed_ray_is_a_tested_release_with_the_tables_the_cleanup_reads():
    assert private_api_problems() == [], (
        "Ray's private GCS API differs from what pipelines/tune/cleanup.py was written against: "
        f"{private_api_problems()}; check the reader against this Ray, then add it to TESTED_RAY_MINOR_VERSIONS "
        f"({TESTED_RAY_MINOR_VERSIONS}) and to pyproject.toml's bound")


def test_the_tables_show_a_live_actor_and_placement_group_and_their_makers(ray_local):
    @ray.remote(num_cpus=0)
    class Probe:
        def pid(self):
            import os

            return os.getpid()

    probe = Probe.remote()
    pid = ray.get(probe.pid.remote())
    group = ray.util.placement_group([{"CPU": 0.01}])
    ray.get(group.ready())
    try:
        tables = _read_tables()
        job = ray.get_runtime_context().get_job_id()
        (actor,) = [a for a in tables.actors.values() if a.pid == pid]
        assert actor.job == job and actor.class_name.endswith("Probe") and not actor.dead and not actor.detached
        (mine,) = [g for g in tables.groups if g.id == group.id.hex()]
        assert mine.job == job and mine.maker is None and not mine.removed and mine.bundles == ({"CPU": 0.01},)
    finally:
        ray.util.remove_placement_group(group)
        ray.kill(probe)
    after = _read_tables()
    assert next(g for g in after.groups if g.id == group.id.hex()).removed
