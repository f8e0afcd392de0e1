"""The synthetic city: a procedural, reproducible street-view dataset (see `city` for the generator).

Modules: city (generate_city, city_is_current, query_times: the images, .mat files and manifest),
presets (sizes: tiny, small, pitts30k, pitts250k), layout (streets, buildings, styles), views (camera
poses and conditions), render (ray-cast facades and streets), facade, street, texture, effects (camera
and occluders), streams (random values keyed by seed, split, role and image).
"""
