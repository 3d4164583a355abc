"""See what a model learned: analyses as data (dataclasses) plus the figure of each.

Every analysis is a pair: a function computing a dataclass of numpy arrays from a model and
data, and a ``plot_*`` function turning that dataclass into a matplotlib Figure (pyplot-free,
save it with :func:`affinevae.plots.save_figure`). Angles are radians in the dataclasses and
degrees on the plots; losses are nats per image.

==========================  ================================  ===============================  ==============
analysis                    data                              figure                           module
==========================  ================================  ===============================  ==============
reconstructions             :func:`reconstructions`           :func:`plot_reconstructions`     ``generation``
generation (prior samples)  :func:`generate`                  :func:`plot_generation`          ``generation``
denoising                   :func:`denoise`                   :func:`plot_denoising`           ``generation``
latent space scatter        :func:`latent_codes`              :func:`plot_latent_scatter`      ``latent``
latent statistics           :func:`latent_stats`              :func:`plot_latent_stats`        ``latent``
2-D latent manifold         :func:`latent_manifold`           :func:`plot_manifold`            ``latent``
interpolation (morphing)    :func:`interpolate`               :func:`plot_interpolation`       ``latent``
latent arithmetic a - b + c :func:`latent_arithmetic`         :func:`plot_arithmetic`          ``latent``
learned vs true angle       :func:`angle_comparison`          :func:`plot_angle_comparison`    ``pose``
loss vs rotation            :func:`loss_vs_rotation`          :func:`plot_loss_vs_rotation`    ``pose``
one image turned            :func:`rotation_strip`            :func:`plot_rotation_strip`      ``pose``
rotations during training   :func:`rotation_histograms`       :func:`plot_rotation_histograms` ``pose``
anomaly scores              :func:`anomaly_scores`            :func:`plot_anomaly`             ``quality``
training curves             :func:`training_curves`           :func:`plot_training_curves`     ``quality``
PCA/NMF baseline            :func:`fit_baseline`              :func:`plot_components`          ``baseline``
latents beside PCA/NMF      :func:`latent_vs_baseline`        :func:`plot_latent_vs_baseline`  ``baseline``
cube maps (spectra)         :func:`spectral_maps`             :func:`plot_baseline_comparison` ``spectra``
==========================  ================================  ===============================  ==============

Helpers shared by the analyses (:func:`as_imageset`, :func:`has_learned_angle`,
:func:`model_label` ...) live in :mod:`affinevae.analysis.common`. Every public name of the
theme modules is importable from this package (``from affinevae.analysis import latent_codes``).

Analyses that do not apply to a model (a learned angle of a plain VAE, a pose record of a
run without one) raise :class:`~affinevae.errors.AffineVAEError` with one line saying why.
"""

from .common import as_imageset, has_learned_angle, model_label
from .generation import (Denoising, Generated, Reconstructions, denoise, generate, plot_denoising, plot_generation,
                         plot_reconstructions, reconstructions)
from .latent import (COLOR_BY, UMAP_INSTALL, Arithmetic, Interpolation, LatentCodes, LatentStats, Manifold,
                     angle_color_scale, embed_2d, interpolate, latent_arithmetic, latent_codes, latent_manifold,
                     latent_stats, latent_stats_from_codes, plot_arithmetic, plot_interpolation, plot_latent_scatter,
                     plot_latent_stats, plot_manifold)
from .pose import (AngleComparison, RotationHistograms, RotationStrip, angle_comparison, learned_angles, loss_vs_rotation,
                   plot_rotation_strip, rotation_strip,
                   plot_angle_comparison, plot_loss_vs_rotation, plot_rotation_histograms, rotation_histograms)
from .baseline import (BASELINES, Baseline, LatentVsBaseline, fit_baseline, latent_vs_baseline, plot_components,
                       plot_latent_vs_baseline)
from .spectra import SpectralMaps, plot_baseline_comparison, plot_value_map, spectral_maps, write_spectral_maps
from .quality import AnomalyScores, TrainingCurves, anomaly_scores, plot_anomaly, plot_training_curves, training_curves

__all__ = ["as_imageset", "has_learned_angle", "model_label", "Reconstructions", "reconstructions",
           "plot_reconstructions", "Generated", "generate", "plot_generation", "Denoising", "denoise",
           "plot_denoising", "LatentCodes", "latent_codes", "embed_2d", "angle_color_scale", "plot_latent_scatter",
           "COLOR_BY", "UMAP_INSTALL", "LatentStats", "latent_stats", "latent_stats_from_codes",
           "plot_latent_stats", "Manifold", "latent_manifold", "plot_manifold", "Interpolation", "interpolate",
           "plot_interpolation", "Arithmetic", "latent_arithmetic", "plot_arithmetic", "learned_angles",
           "AngleComparison", "angle_comparison", "plot_angle_comparison", "loss_vs_rotation",
           "plot_loss_vs_rotation", "RotationStrip", "rotation_strip", "plot_rotation_strip", "RotationHistograms", "rotation_histograms", "plot_rotation_histograms",
           "AnomalyScores", "anomaly_scores", "plot_anomaly", "TrainingCurves", "training_curves",
           "plot_training_curves", "BASELINES", "Baseline", "fit_baseline", "plot_components", "LatentVsBaseline",
           "latent_vs_baseline", "plot_latent_vs_baseline", "SpectralMaps",
           "spectral_maps", "plot_baseline_comparison", "plot_value_map", "write_spectral_maps"]
