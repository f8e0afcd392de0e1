"""SARE core: the science of the project as a plain library (torch, numpy, faiss, pyarrow; never Ray).

Modules, one concept each:
  losses            SARE (ind/joint, three kernels), triplet and contrastive losses, and their registry
  models            backbones, NetVLAD and GeM pooling, the embedding model, preprocessing, save/load
  whitening         PCA whitening fitted from descriptors, and truncation of descriptors
  data              PlaceDataset, dataset readers, ground truth, the synthetic city
"""

__version__ = "0.1.0"
