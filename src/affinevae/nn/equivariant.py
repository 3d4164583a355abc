"""Rotation-equivariant convolutions over the cyclic group C_N and the equivariant encoder.

Group convolutions (Cohen & Welling 2016) over the discrete rotations C_N (N in 4, 8, 16) and
the translations of the convolution grid, written in plain torch: each layer keeps a bank of
base filters and, at every forward pass, expands it into the N rotated copies that an ordinary
``F.conv2d`` then applies, so a layer costs one small matmul (the expansion) plus one plain
convolution.

Conventions (as :mod:`affinevae.nn.affine`): angles are radians, counter-clockwise on screen
(``v`` points down); rotation ``r`` of the group is the angle ``2 pi r / N``; a turn by
``2 pi s / N`` of the input image is ``torch.rot90(x, s * N // 4, (-2, -1))`` when it is a
multiple of a quarter turn.

Feature maps on the group ("regular representation") have shape (B, C, N, H, W): C fields,
each with one channel per rotation. Turning the input by the group element ``s`` turns every
map spatially and shifts its rotation axis cyclically by ``s``:
``f'[:, c, r](p) = f[:, c, r - s](R_s^-1 p)``.

Filters live in a steerable basis: Gaussian rings times angular harmonics ``cos(m phi)``,
``sin(m phi)`` sampled on the k x k grid inside a disc. A rotated filter is the same
continuous function rotated, then sampled, so the N copies are exact rotations for multiples
of 90 degrees (the square grid maps onto itself) and band-limited, evenly smooth rotations
otherwise (no bilinear blur that would favour some rotations over others). The expansion per
rotation is a fixed (k*k, n_basis) matrix.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import AffineVAEError
from .affine import Pose, canonicalise
from .layers import ENCODERS, activation, mlp

#: The rotation group orders the equivariant layers support.
GROUP_ORDERS = (4, 8, 16)
#: Where the equivariant encoder's invariant content outputs come from (see :class:`EquivariantEncoder`).
CONTENT_SOURCES = ("canonical", "pooled")
#: How the equivariant encoder halves its grid between layers (see :class:`EquivariantEncoder`).
DOWNSAMPLING = ("stride", "pool")
# Width of the Gaussian rings of the filter basis, pixels.
_RING_WIDTH = 0.6
# Gain on the attention logits: a fresh encoder then already prefers one rotation bin per image (and,
# being equivariant, the same bin relative to the object whatever its turn), so the decoder starts
# from consistently aligned images instead of random turns.
_ATTENTION_GAIN = 8.0
# Highest angular frequency of the filter basis (4 on a 5 x 5 grid aliases badly under a 45-degree turn).
_MAX_FREQUENCY = 3


def check_group(group_order: int, image_shape: Sequence[int], kernel_size: int = 5) -> None:
    """Raise :class:`AffineVAEError` unless C_``group_order`` can act on images of ``image_shape``.

    The order must be one of :data:`GROUP_ORDERS` (every one holds the quarter turn, which maps
    the pixel grid onto itself only when it is square: H == W), and the image at least
    ``kernel_size`` pixels wide.
    """
    if isinstance(group_order, bool) or group_order not in GROUP_ORDERS:
        raise AffineVAEError(f"group_order must be one of {list(GROUP_ORDERS)}, got {group_order!r}")
    if len(image_shape) != 3:
        raise AffineVAEError(f"image_shape must be (C, H, W), got {tuple(image_shape)}")
    _, h, w = image_shape
    if h != w:
        raise AffineVAEError(f"the equivariant encoder needs square images (C_{group_order} holds the quarter turn, "
                             f"which maps only a square pixel grid onto itself), got {h}x{w}: for objects turned over the full circle "
                             "pad or crop the images square (train --square pad or crop); encoder 'mlp' or "
                             "'conv' take them as they are but do not recover angles over the full circle")
    if h < kernel_size:
        raise AffineVAEError(f"the equivariant encoder needs images at least {kernel_size} pixels wide, got {h}x{w}")


def group_angles(group_order: int) -> Tensor:
    """(N,) angles of the group elements, ``2 pi r / N`` radians (float32)."""
    return torch.arange(group_order, dtype=torch.float64).mul(2 * math.pi / group_order).float()


def filter_basis(kernel_size: int, angles: Sequence[float] | Tensor) -> Tensor:
    """The steerable filter basis sampled on a k x k grid, rotated by each of ``angles``.

    Returns (R, k*k, n_basis) float32: column b of slice r is basis function b rotated
    counter-clockwise (on screen) by ``angles[r]`` radians and sampled at the pixel centres
    (row-major). Basis functions: rings ``exp(-(rho - j)^2 / (2 * 0.6^2))`` times ``cos(m phi)`` and
    ``sin(m phi)``, zero outside the disc of radius (k-1)/2 + 0.5. Odd k (the grid has a centre
    pixel): radii j = 0 .. (k-1)/2, m = 0 .. min(2 j - 1, 3). Even k (the centre lies between four
    pixels; used by the stride-2 layers, whose outputs sit at the centres of 2 x 2 blocks): radii
    j = 1/2, 3/2 .. (k-1)/2, m = 0 .. min(2 j, 3) except m = 2 on the outermost ring (j = (k-1)/2).
    Each column is scaled to unit norm (unrotated).
    The frequency caps keep every rotated copy as strong as the unrotated one (for k = 3 to 6 to
    within 7 % at 45 degrees): higher frequencies alias on so few pixels (m = 2 on the ring of
    radius 1 samples the axis and the diagonal neighbours at different radii; its 45-degree turn
    has 23 % less gain).
    """
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 1:
        raise AffineVAEError(f"kernel_size must be an integer >= 1, got {kernel_size!r}")
    c = (kernel_size - 1) / 2
    idx = np.arange(kernel_size) - c
    v, u = np.meshgrid(idx, idx, indexing="ij")  # v down, u right
    rho = np.hypot(u, v).ravel()
    phi = np.arctan2(-v, u).ravel()  # counter-clockwise on screen
    inside = rho <= c + 0.5
    specs = []  # (ring radius, frequency, 'cos' or 'sin')
    even = kernel_size % 2 == 0
    for j in (np.arange(0.5, c + 0.25) if even else range(int(c) + 1)):
        top = min(int(2 * j), _MAX_FREQUENCY) if even else min(max(2 * j - 1, 0), _MAX_FREQUENCY)
        for m in range(top + 1):
            if even and m == 2 and j == c:  # the outer ring of a 4 x 4 grid: 8 pixels, m = 2 loses 16 % at 45 degrees
                continue
            specs.append((float(j), m, "cos"))
            if m > 0:
                specs.append((float(j), m, "sin"))
    angles = np.asarray(torch.as_tensor(angles, dtype=torch.float64).cpu(), dtype=np.float64).reshape(-1)
    out = np.zeros((len(angles), kernel_size * kernel_size, len(specs)))
    norms = np.ones(len(specs))
    for r, theta in enumerate([0.0, *angles]):
        for b, (j, m, kind) in enumerate(specs):
            ring = np.exp(-((rho - j) ** 2) / (2 * _RING_WIDTH**2)) * inside
            # a filter turned by theta takes at angle phi the value the unturned one has at phi - theta
            wave = np.cos(m * (phi - theta)) if kind == "cos" else np.sin(m * (phi - theta))
            col = ring * wave * ((rho > 1e-9) | (m == 0))  # no angle at the centre: only m = 0 is defined there
            if r == 0:
                norms[b] = np.linalg.norm(col)
            else:
                out[r - 1, :, b] = col / norms[b]
    # exact zeros where the sampled value is round-off (keeps quarter turns exact permutations)
    out[np.abs(out) < 1e-12] = 0.0
    return torch.as_tensor(out, dtype=torch.float32)


def downsampling_kernel(size: int, kernel_size: int) -> tuple[int, int]:
    """(kernel size, padding) of a stride-2 convolution that halves a ``size`` grid symmetrically.

    The outputs must sit on points that a quarter turn of the grid maps onto each other: the
    centres of 2 x 2 blocks for even sizes (an even kernel, ``size / 2`` outputs), the even
    pixels for odd sizes (an odd kernel, ``(size + 1) / 2`` outputs), as :func:`symmetric_pool`.
    ``kernel_size`` is the layer's nominal (odd) size; the even one is the next larger.
    """
    k = kernel_size + 1 if size % 2 == 0 else kernel_size
    return k, (k // 2 - 1 if k % 2 == 0 else k // 2)


def _quarter_turn_exact(basis: Tensor, group_order: int, kernel_size: int) -> Tensor:
    """Replace the slices of ``basis`` (N, k*k, nb) at multiples of 90 degrees by exact ``rot90`` s of slice 0."""
    base = basis[0].T.reshape(-1, kernel_size, kernel_size)  # (nb, k, k)
    out = basis.clone()
    for q in range(4):
        r = q * group_order // 4
        out[r] = torch.rot90(base, q, (1, 2)).reshape(-1, kernel_size * kernel_size).T
    return out


def disk_mask(height: int, width: int) -> Tensor:
    """(H, W) float mask: 1 on pixels whose centre lies in the inscribed disc, 0 outside.

    Applied to the input of the equivariant encoder, it removes the image corners, which a
    turn by a non-multiple of 90 degrees would move out of (or into) the frame.
    """
    r = min(height, width) / 2
    v = torch.arange(height, dtype=torch.float32) - (height - 1) / 2
    u = torch.arange(width, dtype=torch.float32) - (width - 1) / 2
    return ((v[:, None] ** 2 + u[None, :] ** 2) <= r * r).float()


class LiftingConv(nn.Module):
    """Lift planar images (B, C_in, H, W) to group feature maps (B, C_out, N, H, W).

    Output field o at rotation r is the input correlated with base filter o turned by
    ``2 pi r / N`` (zero padding). Turning the input by a group element s turns the output
    spatially and rolls its rotation axis by s (for stride 2: when the output points are placed
    symmetrically, see :func:`downsampling_kernel`).

    Args:
        in_channels: C_in image channels.
        out_fields: C_out fields.
        kernel_size: filter size k (odd for a same-size output).
        group_order: N.
        stride: 1 (same-size output, padding k // 2) or 2 (with ``padding``).
        padding: zero padding in pixels (None: k // 2).
    """

    def __init__(self, in_channels: int, out_fields: int, kernel_size: int, group_order: int, stride: int = 1,
                 padding: Optional[int] = None) -> None:
        super().__init__()
        self.in_channels, self.out_fields, self.kernel_size, self.group_order = in_channels, out_fields, kernel_size, group_order
        self.stride, self.padding = stride, kernel_size // 2 if padding is None else padding
        basis = _quarter_turn_exact(filter_basis(kernel_size, group_angles(group_order)), group_order, kernel_size)
        self.register_buffer("basis", basis, persistent=False)  # (N, k*k, nb)
        nb = basis.shape[-1]
        self.weight = nn.Parameter(torch.randn(out_fields, in_channels, nb) * math.sqrt(2.0 / (in_channels * nb)))
        self.bias = nn.Parameter(torch.zeros(out_fields))

    def expanded_weight(self) -> Tensor:
        """The (C_out*N, C_in, k, k) ``conv2d`` weight: every base filter at every rotation."""
        k, n = self.kernel_size, self.group_order
        w = torch.einsum("oib,rpb->orip", self.weight, self.basis)
        return w.reshape(self.out_fields * n, self.in_channels, k, k)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C_in, H, W) -> (B, C_out, N, H', W') (H' = H for stride 1)."""
        bias = self.bias.repeat_interleave(self.group_order)
        y = F.conv2d(x, self.expanded_weight(), bias, stride=self.stride, padding=self.padding)
        return y.view(x.shape[0], self.out_fields, self.group_order, *y.shape[-2:])


class GroupConv(nn.Module):
    """Group convolution of feature maps (B, C_in, N, H, W) -> (B, C_out, N, H, W) over C_N and the grid.

    Output field o at rotation r sums, over input fields i and rotations t, the input map (i, t)
    correlated with base filter (o, i, t - r mod N) turned by ``2 pi r / N``. The expanded
    (C_out*N, C_in*N, k, k) weight makes it one ``F.conv2d``. kernel_size 1 mixes fields and
    rotation channels at each position (a cyclic correlation along the rotation axis).
    ``stride`` and ``padding`` as :class:`LiftingConv`.
    """

    def __init__(self, in_fields: int, out_fields: int, kernel_size: int, group_order: int, stride: int = 1,
                 padding: Optional[int] = None) -> None:
        super().__init__()
        self.in_fields, self.out_fields, self.kernel_size, self.group_order = in_fields, out_fields, kernel_size, group_order
        self.stride, self.padding = stride, kernel_size // 2 if padding is None else padding
        basis = _quarter_turn_exact(filter_basis(kernel_size, group_angles(group_order)), group_order, kernel_size)
        self.register_buffer("basis", basis, persistent=False)  # (N, k*k, nb)
        n = group_order
        # roll[r, t] = (t - r) mod N: the base filter that output rotation r applies to input rotation t
        roll = (torch.arange(n)[None, :] - torch.arange(n)[:, None]) % n
        self.register_buffer("roll", roll, persistent=False)
        nb = basis.shape[-1]
        self.weight = nn.Parameter(torch.randn(out_fields, in_fields, n, nb) * math.sqrt(2.0 / (in_fields * n * nb)))
        self.bias = nn.Parameter(torch.zeros(out_fields))

    def expanded_weight(self) -> Tensor:
        """The (C_out*N, C_in*N, k, k) ``conv2d`` weight."""
        k, n = self.kernel_size, self.group_order
        rolled = self.weight[:, :, self.roll]  # (C_out, C_in, N_r, N_t, nb)
        w = torch.einsum("oirtb,rpb->oritp", rolled, self.basis)
        return w.reshape(self.out_fields * n, self.in_fields * n, k, k)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C_in, N, H, W) -> (B, C_out, N, H', W') (H' = H for stride 1)."""
        b, c, n, h, w = x.shape
        bias = self.bias.repeat_interleave(n)
        y = F.conv2d(x.reshape(b, c * n, h, w), self.expanded_weight(), bias, stride=self.stride, padding=self.padding)
        return y.view(b, self.out_fields, n, *y.shape[-2:])


class FieldNorm(nn.Module):
    """Group normalisation of group feature maps (B, C, N, H, W) with one scale and bias per field.

    Statistics over groups of whole fields (all rotations and positions), per image, so the
    normalisation commutes with turning the input.
    """

    def __init__(self, fields: int) -> None:
        super().__init__()
        self.groups = math.gcd(8, fields)
        self.weight = nn.Parameter(torch.ones(fields))
        self.bias = nn.Parameter(torch.zeros(fields))

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, N, H, W) -> same shape."""
        b, c, n, h, w = x.shape
        y = F.group_norm(x.reshape(b, c * n, h, w), self.groups, self.weight.repeat_interleave(n),
                         self.bias.repeat_interleave(n), eps=1e-5)
        return y.view(b, c, n, h, w)


def symmetric_pool(x: Tensor) -> Tensor:
    """Halve the grid of (B, C, N, H, W) maps with a max-pool that commutes with quarter turns.

    Even sizes: 2 x 2 blocks (H -> H/2); odd sizes: 3 x 3 windows at stride 2 centred on the
    even pixels (H -> (H+1)/2), so the pooled grid stays symmetric about the image centre.
    """
    b, c, n, h, w = x.shape
    flat = x.reshape(b, c * n, h, w)
    y = F.max_pool2d(flat, 2, 2) if h % 2 == 0 else F.max_pool2d(flat, 3, 2, padding=1)
    return y.view(b, c, n, *y.shape[-2:])


def _pooled_centres(centres: np.ndarray) -> np.ndarray:
    """Pixel-centre coordinates after :func:`symmetric_pool` of a grid with ``centres``."""
    if len(centres) % 2 == 0:
        return 0.5 * (centres[0::2] + centres[1::2])
    return centres[0::2]


@dataclasses.dataclass
class EquivariantFeatures:
    """What :class:`EquivariantEncoder` says about a batch of B images (N = group order, h x w = final grid).

    Attributes:
        content: (B, out_dim) rotation-invariant outputs (e.g. content means and log-variances).
        rotation_logits: (B, N) unnormalised log-probabilities of the rotation bins, bin k
            centred on ``2 pi k / N`` radians; turning the input by 2 pi s / N rolls them by s.
        offset_mean: (B, N) mean of the angle offset inside each bin, radians in (-pi/N, pi/N).
        offset_logstd: (B, N) log standard deviation of that offset (log radians).
        position_logits: (B, h, w) log-probabilities (normalised) of the object's position on the
            final convolution grid (marginal over the rotation bins).
        shift: (B, 2) the soft-argmax of that position, (right, down) in half image widths.
    """

    content: Tensor
    rotation_logits: Tensor
    offset_mean: Tensor
    offset_logstd: Tensor
    position_logits: Tensor
    shift: Tensor


@ENCODERS.register("equivariant")
class EquivariantEncoder(nn.Module):
    """Rotation-equivariant encoder: a lifting conv and group convs over C_N, then invariant and equivariant heads.

    Args:
        image_shape: (C, H, W), square (H == W).
        out_dim: width of the invariant ``content`` output.
        hidden: widths of the content MLP.
        act: activation name.
        cond_dim: width of the condition vector (one-hot class); it joins the content MLP's input
            and scales every field of the last feature map (a per-field FiLM, so equivariance holds).
        channels: fields per layer (a lifting 5 x 5 conv then 3 x 3 group convs), e.g. (8, 16, 16);
            every layer but the last halves the grid while it is >= 8 (see ``downsample``).
        norm: 'group' (:class:`FieldNorm` after each conv) or 'none'.
        group_order: N, the number of rotation bins (4, 8 or 16).
        content: where the invariant outputs come from: 'canonical' (default) or 'pooled' (below).
        downsample: how a layer halves the grid (:data:`DOWNSAMPLING`): 'pool' (default: a same-size
            conv, then a symmetric 2 x 2 max-pool before the norm and activation) or 'stride' (the conv
            itself at stride 2, its kernel one larger on even grids so that the outputs sit on the
            centres of 2 x 2 blocks, :func:`downsampling_kernel`; 4x fewer outputs to compute: the
            encoder's forward and backward 2x faster on 28 x 28 digits). Both keep quarter turns exact;
            for turns between them the strided layers alias more (untrained, the bin logits of an image
            turned by 45 degrees follow by one bin with a correlation of about 0.5 against 0.87 for
            'pool'), and trained on full-circle digits they measured lower (bench_full_circle.py, lr 3e-3,
            seeds 0 and 1: k-means accuracy 0.40 / 0.42 against 0.53 / 0.49, angle concentration 0.65 / 0.66
            against 0.71 / 0.65).

    The input is masked to its inscribed disc. The last map F (B, C, N, h, w) feeds:

    - an attention map A = GroupConv1x1(F) -> (B, N, h, w), joint logits over rotation bin and
      position: ``rotation_logits = logsumexp_positions A``, ``position_logits`` = the
      log-softmax of ``logsumexp_rotations A``;
    - offsets: GroupConv1x1(F) -> 2 maps per bin, averaged over positions with the position
      weights of that bin, ``offset_mean = (pi/N) tanh(.)``;
    - content 'canonical': the masked input turned back by the posterior-mean angle (the most
      probable bin's centre plus its offset mean) with a bilinear warp, then MLP(hidden) ->
      out_dim (outputs that describe a direction, such as a shift, are then in the canonical
      frame: turn them by that angle to get the image frame). A turn of the input by
      a group element moves the argmax bin by the same element and leaves the offsets, so the
      canonical image (sampled at the same points) and the content are unchanged; other turns
      are undone up to the offset's accuracy and the interpolation.
    - content 'pooled': F averaged and maxed over positions -> (B, 2C, N); the copy read from
      bin k (rotation axis rolled by -k) is weighted by q(k) = softmax(rotation_logits) and
      summed, so a turn of the input by a group element (which rolls both by the same s) leaves
      it unchanged; then MLP(hidden) -> out_dim.

    Unlike the 'mlp' and 'conv' encoders it returns :class:`EquivariantFeatures`, not a flat
    vector (``flat_output`` is False): the rVAE/crVAE use it, and the joint and semi-supervised
    models whose classifier is a network of its own.
    """

    flat_output = False

    def __init__(self, image_shape: Sequence[int], out_dim: int, hidden: Sequence[int] = (128,),
                 act: str = "relu", cond_dim: int = 0, channels: Sequence[int] = (8, 16, 16), norm: str = "group",
                 group_order: int = 8, content: str = "canonical", downsample: str = "pool") -> None:
        super().__init__()
        check_group(group_order, image_shape)
        if content not in CONTENT_SOURCES:
            raise AffineVAEError(f"content must be one of {list(CONTENT_SOURCES)}, got {content!r}")
        if downsample not in DOWNSAMPLING:
            raise AffineVAEError(f"downsample must be one of {list(DOWNSAMPLING)}, got {downsample!r}")
        self.content = content
        if len(channels) < 1 or not all(isinstance(c, int) and c > 0 for c in channels):
            raise AffineVAEError(f"equivariant encoder channels must be one or more positive integers, got {tuple(channels)}")
        if norm not in ("group", "none"):
            raise AffineVAEError(f"norm must be 'group' or 'none', got {norm!r}")
        c_in, h, w = (int(v) for v in image_shape)
        self.group_order = n = group_order
        self.register_buffer("mask", disk_mask(h, w), persistent=False)
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        self.acts = nn.ModuleList()
        self.pool_after: list[bool] = []
        centres = (np.arange(h) * 2 + 1) / h - 1  # normalised pixel centres (square grid)
        size = h
        prev = None
        for i, ch in enumerate(channels):
            halve = i < len(channels) - 1 and size >= 8
            k, stride, pad = (5 if i == 0 else 3), 1, None
            if halve and downsample == "stride":
                (k, pad), stride = downsampling_kernel(size, k), 2
            self.convs.append(LiftingConv(c_in, ch, k, n, stride, pad) if i == 0 else GroupConv(prev, ch, k, n, stride, pad))
            self.norms.append(FieldNorm(ch) if norm == "group" else nn.Identity())
            self.acts.append(activation(act))
            self.pool_after.append(halve and downsample == "pool")
            if halve:
                size = (size + 1) // 2
                centres = _pooled_centres(centres)
            prev = ch
        self.fields = prev
        self.grid_size = size
        cu = torch.as_tensor(centres, dtype=torch.float32)
        self.register_buffer("grid_u", cu[None, :].expand(size, size).reshape(-1).clone(), persistent=False)
        self.register_buffer("grid_v", cu[:, None].expand(size, size).reshape(-1).clone(), persistent=False)
        self.film = nn.Linear(cond_dim, prev) if cond_dim > 0 else None
        self.attention = GroupConv(prev, 1, 1, n)
        self.offset = GroupConv(prev, 2, 1, n)
        with torch.no_grad():  # start with small offsets and a posterior width of about a quarter bin
            self.offset.weight.mul_(0.1)
            self.offset.bias.copy_(torch.tensor([0.0, math.log(0.25 * math.pi / n)]))
        # roll index: read[k, t] = (t + k) mod N, the rotation axis as seen from bin k
        self.register_buffer("read", (torch.arange(n)[None, :] + torch.arange(n)[:, None]) % n, persistent=False)
        self.register_buffer("bin_angles", group_angles(n), persistent=False)
        n_in = c_in * h * w if content == "canonical" else 2 * prev * n
        self.head = mlp([n_in + cond_dim, *hidden, out_dim], act)

    def features(self, x: Tensor) -> Tensor:
        """The last group feature map (B, C, N, h, w) of images x (B, C_in, H, W)."""
        f = x * self.mask
        for conv, norm, act, pool in zip(self.convs, self.norms, self.acts, self.pool_after):
            f = conv(f)
            if pool:  # pooled before the norm and activation: 4x fewer values to normalise
                f = symmetric_pool(f)
            f = act(norm(f))
        return f

    def forward(self, x: Tensor, cond: Optional[Tensor] = None) -> EquivariantFeatures:
        """Images x (B, C, H, W) (and condition ``cond`` (B, K)) -> :class:`EquivariantFeatures`."""
        f = self.features(x)
        b, c, n, h, w = f.shape
        if self.film is not None and cond is not None:
            f = f * (1 + self.film(cond.to(f.dtype)))[:, :, None, None, None]
        att = _ATTENTION_GAIN * self.attention(f).reshape(b, n, h * w)  # (B, N, P) joint logits
        rotation_logits = torch.logsumexp(att, 2)  # (B, N)
        position_logits = torch.log_softmax(torch.logsumexp(att, 1), 1)  # (B, P)
        p = position_logits.exp()
        shift = torch.stack([p @ self.grid_u, p @ self.grid_v], 1)  # (B, 2)
        given_bin = torch.softmax(att, 2)  # (B, N, P): position weights of each bin
        off = (self.offset(f).reshape(b, 2, n, h * w) * given_bin[:, None]).sum(3)  # (B, 2, N)
        offset_mean = (math.pi / n) * torch.tanh(off[:, 0])
        offset_logstd = off[:, 1].clamp(-12.0, 3.0)
        if self.content == "canonical":
            k = rotation_logits.argmax(1, keepdim=True)
            angle = self.bin_angles[k[:, 0]] + offset_mean.gather(1, k)[:, 0]
            inv = canonicalise(x * self.mask, Pose(angle=angle)).flatten(1)  # (B, C*H*W), invariant
        else:
            flat = f.reshape(b, c, n, h * w)
            pooled = torch.cat([flat.mean(3), flat.amax(3)], 1)  # (B, 2C, N)
            seen = pooled[:, :, self.read]  # (B, 2C, N_k, N_t): the rotation axis as seen from bin k
            q = torch.softmax(rotation_logits, 1)
            inv = torch.einsum("bckt,bk->bct", seen, q).reshape(b, -1)  # (B, 2C*N), invariant
        if cond is not None and self.film is not None:
            inv = torch.cat([inv, cond.to(inv.dtype)], 1)
        content = self.head(inv)
        return EquivariantFeatures(content, rotation_logits, offset_mean, offset_logstd,
                                   position_logits.reshape(b, h, w), shift)
