"""Everything about the pose when it is *searched* (the affine VAE's pose source).

- :mod:`~affinevae.pose.search`: the batched search of the pose that maximises the ELBO
  (:class:`SearchConfig`, :func:`search_poses`);
- :mod:`~affinevae.pose.align`: :func:`align` (poses, ELBO before/after, aligned images) and its file;
- :mod:`~affinevae.pose.nets`: the pose networks of the amortised start (:class:`PoseHead`,
  :class:`PoseRefiner`);
- :mod:`~affinevae.pose.amortise`: their training (:func:`fit_pose_head`, :func:`fit_pose_refiner`,
  :class:`HeadTrainConfig`);
- :mod:`~affinevae.pose.record`: the per-epoch record of the training images' found poses;
- :mod:`~affinevae.pose.classes`: :func:`aligned_kmeans`, classes of images that turn over the
  full circle (k-means at the best of M turns);
- :mod:`~affinevae.pose.sync`: :func:`synchronise_angles`, one common frame for images that turn
  over the full circle (angular synchronisation of nearest neighbours), and :func:`orientation_spread`,
  whether they do;
- :mod:`~affinevae.pose.cache`: the per-image pose cache of training (warm starts, refined by the
  training step's own pose gradient; :class:`PoseCache`).
"""

from .align import AlignResult, align, load_alignment
from .amortise import AMORTISE_DEFAULTS, AmortiseResult, HeadTrainConfig, amortise, as_avae, fit_pose_head, fit_pose_refiner
from .cache import PoseCache
from .classes import AlignedClusters, aligned_kmeans
from .nets import PoseHead, PoseRefiner
from .record import POSES_FILE, PoseRecord, PoseRecorder, load_pose_record
from .sync import OrientationSpread, SynchronisedAngles, orientation_spread, synchronise_angles, synchronised_kmeans
from .search import SearchConfig, SearchResult, evaluate_candidates, make_starts, refine, search_poses, seeded

__all__ = ["AlignResult", "align", "load_alignment", "AMORTISE_DEFAULTS", "AmortiseResult", "amortise", "as_avae", "HeadTrainConfig", "fit_pose_head", "fit_pose_refiner",
           "AlignedClusters", "aligned_kmeans", "PoseCache", "PoseHead", "PoseRefiner", "POSES_FILE", "PoseRecord", "PoseRecorder", "load_pose_record",
           "SearchConfig", "SearchResult", "evaluate_candidates", "make_starts", "refine", "search_poses", "seeded",
           "OrientationSpread", "SynchronisedAngles", "orientation_spread", "synchronise_angles", "synchronised_kmeans"]
