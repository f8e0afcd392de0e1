"""Localisation indexes: `faiss_index` (flat, IVF-PQ and HNSW indexes built streaming), `store_index`
(an index over a descriptor store's database: ids, coordinates, model hash; build, save, load, search)
and `position` (a photo's position from its matches)."""
