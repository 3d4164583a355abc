"""Neural-network building blocks: encoders, decoders, coordinate grids, affine warps, likelihoods, the low-pass filter."""

from .affine import (Pose, canonicalise, compose_affine, coordinate_grid, identity_affine, invert_affine,
                     pose_matrix, render, rotation_matrix, transform_grid, warp, wrap_angle)
from .layers import DECODERS, ENCODERS, ConvDecoder, ConvEncoder, MLPDecoder, MLPEncoder
from .equivariant import EquivariantEncoder, EquivariantFeatures, GroupConv, LiftingConv
from .circular import RotationPosterior
from .likelihoods import LIKELIHOODS
from .lowpass import GaussianLowpass, noise_gain
from .signal import Conv1dEncoder, pose_shift, shift_pose

__all__ = [
    "Pose", "canonicalise", "compose_affine", "coordinate_grid", "identity_affine", "invert_affine",
    "pose_matrix", "render", "rotation_matrix", "transform_grid", "warp", "wrap_angle",
    "DECODERS", "ENCODERS", "ConvDecoder", "ConvEncoder", "MLPDecoder", "MLPEncoder", "LIKELIHOODS",
    "EquivariantEncoder", "EquivariantFeatures", "GroupConv", "LiftingConv", "RotationPosterior",
    "Conv1dEncoder", "pose_shift", "shift_pose", "GaussianLowpass", "noise_gain",
]
