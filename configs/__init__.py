"""The run configs shipped with the package (installed as `sare_configs`; see pipelines.shipped_configs)."""
