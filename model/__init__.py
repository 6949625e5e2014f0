"""CT-GLIP model package (torch/MONAI, no Dagster): config, network, data, losses, train, checkpoint.

Public face: ``model.config.TrainConfig`` / ``demo()`` / ``paper()``, ``model.network.CTGlip``,
``model.train.train``, ``model.checkpoint.load_model``. See docs/ARCHITECTURE.md ("Model interface").
"""
