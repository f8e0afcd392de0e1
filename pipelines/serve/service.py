"""Starting the localiser service: `start(ServeConfig)` deploys it on Ray Serve and returns its URL;
`run(ServeConfig)` starts it and serves until interrupted (what `sare serve` does)."""

from __future__ import annotations

import logging
import time

from pydantic import BaseModel, ConfigDict, Field

from sare_core.index.faiss_index import SearchParams

from .. import ray_session

log = logging.getLogger(__name__)

APPLICATION = "sare"


class ServeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str = Field(description="a saved model")
    index: str = Field(description="an index of that model's descriptors (`sare index build`)")
    host: str = Field("127.0.0.1", description="address to listen on (loopback by default; 0.0.0.0 for all)")
    port: int = Field(8000, ge=0, le=65535)
    replicas: int = Field(1, ge=1, description="model + index copies serving requests")
    replica_cpus: float = Field(1.0, gt=0)
    use_gpu: bool | None = Field(None, description="a GPU per replica (default: when the cluster has GPUs)")
    k: int = Field(10, ge=1, description="matches per photo")
    radius: float = Field(25.0, gt=0)
    max_batch_size: int = Field(8, ge=1, description="photos per batched model pass")
    max_upload_bytes: int = Field(10 << 20, ge=1)
    search: SearchParams = Field(default_factory=SearchParams, description="search-time index settings "
                                 "(nprobe, ef_search, rerank; default: the index's own)")
    ray_address: str | None = None


def start(config: ServeConfig) -> str:
    """Deploy (or redeploy) the application; returns the URL it answers on."""
    import ray
    from ray import serve

    from sare_core.index.store_index import LocalizationIndex
    from sare_core.models.io import load_model, model_hash

    # Fail here, in the driver, on a model and an index that do not belong together (not in every replica).
    index = LocalizationIndex.load(config.index, expected_model_hash=model_hash(load_model(config.model)))
    index.set_search_params(**config.search.model_dump(exclude_none=True))  # a bad setting fails here
    del index
    ray_session.connect(config.ray_address)
    use_gpu = config.use_gpu if config.use_gpu is not None else ray.cluster_resources().get("GPU", 0) >= 1
    serve.start(http_options={"host": config.host, "port": config.port})
    from .app import LocalizerDeployment

    deployment = LocalizerDeployment.options(
        num_replicas=config.replicas,
        ray_actor_options={"num_cpus": config.replica_cpus, "num_gpus": 1 if use_gpu else 0})
    serve.run(deployment.bind(config.model, config.index, config.k, config.radius, config.max_upload_bytes,
                              config.max_batch_size, config.search.model_dump(exclude_none=True)),
              name=APPLICATION, route_prefix="/")
    url = f"http://{config.host}:{config.port}"
    log.info("serving %s on %s (%d replica(s), %s)", config.index, url, config.replicas, "GPU" if use_gpu else "CPU")
    return url


def stop() -> None:
    from ray import serve

    serve.delete(APPLICATION)


def run(config: ServeConfig) -> None:
    url = start(config)
    print(f"sare serve: {url}/ (POST an image to {url}/locate); Ctrl+C to stop", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        stop()
