"""The training application: command line, training loop, data, synthetic data, models,
plotting and multi-GPU helpers. Needs the ``train`` extra (tqdm, matplotlib, imageio); the
library (:mod:`satloss_gpu.persistence`, :mod:`~satloss_gpu.matching`,
:mod:`~satloss_gpu.losses`, :mod:`~satloss_gpu.metrics`) imports nothing from here."""
