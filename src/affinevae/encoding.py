"""Run a trained model's encoder over data sets, patch sets and stacks larger than memory.

Everything goes through one batched loop, :func:`encode_dataset`; the others prepare its input
or arrange its output:

- :func:`encode_dataset`: any images (:func:`affinevae.data.as_images` forms) -> dict of arrays;
- :func:`encode_patches`: (N, w, w) / (N, C, w, w) patches -> the same dict, for an
  unconditional model whose input is the patch (:func:`check_model_input`);
- :func:`encode_patchset`: a :class:`~affinevae.data.patches.PatchSet` -> :class:`ObjectEncoding`
  (codes plus where each object is);
- :func:`iter_encode` / :func:`stream_encode`: cut and encode a stack chunk by chunk of frames,
  memory bounded by the chunk.

**The rule for pose latents.** The result of :func:`encode_dataset` holds ``angle`` (N,)
radians (counter-clockwise on screen), ``shift`` (N, 2) (right, down) in half image widths and
``scale`` (N,) zoom factors exactly for the pose latents the model infers (the fields of
``model.encode(x).pose`` that are not None), and no key for the others; a model without pose
latents gives none of them. For 1-D signals (a model whose image shape is (C, 1, L), shift invariance)
``shift`` is (N,) in samples (``model.encode(x).parts['shift']``). :class:`ObjectEncoding`, whose fields are fixed because they are
saved as ``maps.npz``, stores an absent ``angle`` or ``shift`` as NaN (:meth:`ObjectEncoding.from_codes`).

Only the models' public API is used: ``model.encode(x, y)`` (``z_mean``, ``z_std``, ``pose``),
``model.elbo(x, y)``, ``model.config.image_shape`` / ``latent_dim`` and ``model.conditional``.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Iterator, Optional, Sequence

import numpy as np
import torch

from .data.imageset import summary_repr
from .data.inputs import as_images, check_image_shape, check_int
from .data.patches import PatchSet, concat_chunks, iter_patches, nothing_found
from .data.stacks import open_stack
from .errors import AffineVAEError
from .models.base import check_model
from .nn.modes import module_mode
from .rng import seeded

__all__ = ["POSE_FIELDS", "PART_FIELDS", "ObjectEncoding", "check_model_input", "encode_dataset", "encode_patches",
           "encode_patchset", "iter_encode", "stream_encode"]

#: Patches :func:`encode_patches` hands to :func:`encode_dataset` at a time (bounds the memory of
#: its input checks and tensor conversion for patch sets of millions of objects).
ENCODE_BLOCK = 32768
#: Pose latents a result may hold, as named in ``model.encode(x).pose`` (the shear: an AVAE's
#: 'rotation-scale-shear' and 'affine' transforms).
POSE_FIELDS = ("angle", "shift", "scale", "shear")

#: Family-specific posterior tensors (``model.encode(x).parts``) a result holds when the model has
#: them: the class posterior of joint/semi-supervised models, the target posterior of regression ones.
PART_FIELDS = ("class_prob", "target_mean", "target_std")


@torch.no_grad()
def encode_dataset(model, data, labels=None, batch_size: int = 512, elbo: bool = True, seed: int = 0,
                   where: str = "images") -> dict[str, np.ndarray]:
    """Encode every image of ``data`` in batches (no gradients, the model in eval mode meanwhile).

    Args:
        model: a trained model. data, labels: any input :func:`affinevae.data.as_images` accepts
            (an ImageSet's labels come along); class-conditional models need labels.
        batch_size: images per forward pass. elbo: also score each image.
        seed: seeds the ELBO's posterior sample, drawn batch by batch (another ``batch_size`` draws another
            sample for an image; the global RNG is left as it was).
        where: names the images in error messages.

    Returns:
        dict of numpy arrays: ``z_mean``, ``z_std`` (N, D) float32; ``elbo`` (N,) nats (one
        posterior sample) if ``elbo``; ``angle``/``shift``/``scale`` by the rule for pose latents
        (module docstring); ``labels`` (N,) int64 when known (-1: unknown, for models that are
        not class-conditional); for joint and semi-supervised models ``class_prob`` (N, K) float32
        (q(class | x)) and ``class`` (N,) int64 (its argmax); for semi-supervised regression models
        ``target_mean`` and ``target_std`` (N, M) float32 (q(target | x)); ``image_file`` (N,) str, each
        image's file, when ``data`` is an :class:`~affinevae.data.ImageSet` that records it (``names``:
        a folder's or a list's image files).

    Raises:
        AffineVAEError: input :func:`~affinevae.data.as_images` refuses (including a shape other
            than the model's), a bad ``batch_size``, or a conditional model without labels.
    """
    bs = check_int("batch_size", batch_size, 1)
    check_model(model, f"{where}: model")
    x, y = as_images(data, labels, image_shape=model.config.image_shape, where=where,
                     min_label=0 if model.conditional else -1,
                     num_classes=model.config.num_classes if model.conditional else None)  # (naming the labels file)
    if model.conditional and y is None:
        raise AffineVAEError(f"model '{model.family_label}' is class-conditional: encoding needs labels (--labels on "
                             "the command line)")
    parts: dict[str, list] = {}

    def add(name: str, value: Optional[torch.Tensor]) -> None:
        if value is not None:
            parts.setdefault(name, []).append(value.detach().cpu().float().numpy())

    with module_mode(model), seeded(seed, model.device):
        for i in range(0, len(x), bs):
            xb = x[i:i + bs]
            yb = None if y is None or not model.conditional else y[i:i + bs]
            enc = model.encode(xb, yb)
            add("z_mean", enc.z_mean)
            add("z_std", enc.z_std)
            for name in POSE_FIELDS:  # a family's own units (``parts``) win: the 1-D shift in samples
                add(name, enc.parts.get(name, None if enc.pose is None else getattr(enc.pose, name)))
            for name in PART_FIELDS:
                add(name, enc.parts.get(name))
            if elbo:
                add("elbo", model.elbo(xb, yb))
    out = {k: np.concatenate(v) for k, v in parts.items()}
    if "class_prob" in out:
        out["class"] = out["class_prob"].argmax(1).astype(np.int64)
    if y is not None:
        out["labels"] = y.cpu().numpy()
    names = getattr(data, "names", None)  # an ImageSet read from several files
    if names is not None and len(names) == len(x):
        out["image_file"] = np.asarray(names, dtype=str)
    return out


@dataclasses.dataclass
class ObjectEncoding:
    """Per-object model outputs with their places in the stack.

    Attributes:
        z_mean, z_std: (N, D) float32 content posterior.
        angle: (N,) float32 radians (counter-clockwise on screen), NaN for models without a rotation.
        shift: (N, 2) float32 (right, down) in half patch widths, NaN without a translation latent.
        positions: (N, 2) float32 refined object positions (row, col) in pixels: the patch centre moved
            by the inferred shift (equal to ``centers`` when there is no shift).
        centers: (N, 2) int64 patch centres (row, col) pixels; frames: (N,) int64.
        window: patch size; image_shape: (H, W); n_frames: F; grid_shape: (gh, gw) in grid mode.
        n_found: objects found before edge patches were dropped, or None.
        model_class: (N,) int64 class inferred by a joint or semi-supervised model (the argmax of
            its q(class | x)), or None for other models; saved as ``class``.
        peak_positions: (N, 2) float64 (row, col) pixels: the patch set's own sub-pixel positions
            (:attr:`~affinevae.data.patches.PatchSet.positions`: a fit around each detected maximum, or the
            given coordinates, or the objects' brightness centres where ``patches`` re-centred them), or None (a grid, an older patch set). On ``bench_lattice.py``'s lattices
            (atoms 8 px apart, window 16, noise 0.1, a trained rVAE) 0.11 px from the true atoms on average,
            ``positions`` 0.21 px, ``centers`` 0.51 px.
        n_masked: objects left out because their window held a masked (NaN) pixel (``drop_masked``), or None.
    """

    z_mean: np.ndarray
    z_std: np.ndarray
    angle: np.ndarray
    shift: np.ndarray
    positions: np.ndarray
    centers: np.ndarray
    frames: np.ndarray
    window: int
    image_shape: tuple = (0, 0)
    n_frames: int = 1
    grid_shape: Optional[tuple] = None
    n_found: Optional[int] = None
    model_class: Optional[np.ndarray] = None
    peak_positions: Optional[np.ndarray] = None
    n_masked: Optional[int] = None

    def __repr__(self) -> str:
        return summary_repr(self)

    def __len__(self) -> int:
        return len(self.z_mean)

    @property
    def has_angle(self) -> bool:
        """True when the model inferred a rotation angle."""
        return len(self.angle) > 0 and bool(np.isfinite(self.angle).all())

    def arrays(self) -> dict[str, np.ndarray]:
        """Every array, shapes and units as the attributes above: ``z_mean``, ``z_std`` (N, D), ``angle`` (N,)
        radians, ``shift``, ``positions``, ``centers`` (N, 2), ``frames`` (N,); plus ``window``, ``image_shape``
        (2,), ``n_frames``, and ``grid_shape`` (2,), ``class`` (N,) (the model's inferred classes) and
        ``peak_positions`` (N, 2) when set."""
        out = {k: getattr(self, k) for k in ("z_mean", "z_std", "angle", "shift", "positions", "centers", "frames")}
        out.update(window=np.int64(self.window), image_shape=np.asarray(self.image_shape, dtype=np.int64),
                   n_frames=np.int64(self.n_frames))
        if self.grid_shape is not None:
            out["grid_shape"] = np.asarray(self.grid_shape, dtype=np.int64)
        if self.model_class is not None:
            out["class"] = self.model_class
        if self.peak_positions is not None:
            out["peak_positions"] = np.asarray(self.peak_positions, dtype=np.float64)
        return out

    @classmethod
    def from_codes(cls, codes: dict[str, np.ndarray], ps: PatchSet) -> "ObjectEncoding":
        """Join :func:`encode_dataset`'s result for the patches of ``ps`` with their places.

        An absent ``angle``/``shift`` (the model has no such latent) becomes NaN; ``class`` (joint
        and semi-supervised models) becomes ``model_class``. The refined position (pixels) is the
        patch's centre pixel ``centers`` moved by the shift, a shift of 1 being half a patch width
        (``w / 2`` pixels). A shift is relative to where the model's canonical object sits, which it
        learns where its training objects sat on average: for patches cut around detected maxima (or
        rounded coordinates), the centre pixel, index ``w // 2`` of the patch, not its geometric centre
        ``(w - 1) / 2``, which lies half a pixel before it for an even window. (Measured from the
        geometric centre, on a 192 x 192 square-lattice micrograph, window 16, the refined positions
        missed the true atoms by 0.84 px on average against 0.47 px for the integer centres; from the
        centre pixel by 0.22 px.) Without a shift latent the position is the patch set's sub-pixel
        ``positions`` where it has them (detected maxima refined by a fit, given coordinates), else the
        centre pixel.
        """
        n, w = len(ps), ps.window
        angle = codes.get("angle", np.full(n, np.nan, np.float32))
        shift = codes.get("shift", np.full((n, 2), np.nan, np.float32))
        if "shift" not in codes and ps.positions is not None:
            pos = np.asarray(ps.positions, dtype=np.float32)
        else:
            sh = np.nan_to_num(shift, nan=0.0)
            pos = ps.centers.astype(np.float32) + np.stack([sh[:, 1], sh[:, 0]], 1) * (w / 2.0)   # shift is (right, down)
        return cls(codes["z_mean"], codes["z_std"], angle, shift, pos.astype(np.float32), ps.centers, ps.frames,
                   w, ps.image_shape, ps.n_frames, ps.grid_shape, ps.n_found, codes.get("class"),
                   None if ps.positions is None else np.asarray(ps.positions, dtype=np.float64), ps.n_masked)

    @staticmethod
    def concat(parts: Sequence["ObjectEncoding"]) -> "ObjectEncoding":
        """Join per-chunk results (in order; :func:`~affinevae.data.patches.concat_chunks`)."""
        return concat_chunks(parts)


def check_model_input(model, patch_shape: Sequence[int], where: str = "patches") -> None:
    """Raise :class:`AffineVAEError` unless ``model`` can encode patches of shape (w, w) or (C, w, w).

    The shape is checked as :func:`~affinevae.data.as_images` checks it (with a hint to cut
    patches of the model's size); class-conditional models are refused (patches have no labels).
    """
    check_model(model, f"{where}: model")
    want = tuple(model.config.image_shape)
    check_image_shape(patch_shape, want, where, f"; cut patches with --window {want[-1]}")
    if model.conditional:
        raise AffineVAEError(f"model '{model.family}' is class-conditional; mapping needs an unconditional model "
                             "(ae, vae, rvae, avae)")


def encode_patches(model, patches: np.ndarray, batch_size: int = 256, where: str = "patches") -> dict[str, np.ndarray]:
    """Encode (N, w, w) or (N, C, w, w) patches with an unconditional model (no ELBO); ``where``
    names them in error messages (e.g. the patch-set file).

    Returns:
        :func:`encode_dataset`'s dict without ``elbo``: ``z_mean``, ``z_std`` (N, D) float32 and
        the pose latents the model has (module docstring).
    """
    check_model_input(model, np.shape(patches)[1:], where)
    # Blocks of ENCODE_BLOCK patches: encode_dataset's input checks then never copy a huge patch set whole.
    parts = [encode_dataset(model, patches[i:i + ENCODE_BLOCK], batch_size=batch_size, elbo=False, where=where)
             for i in range(0, max(len(patches), 1), ENCODE_BLOCK)]
    return parts[0] if len(parts) == 1 else {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _encode_chunk(model, ps: PatchSet, batch_size: int, where: str = "patches") -> ObjectEncoding:
    """:class:`ObjectEncoding` of one chunk's patches (an empty chunk gives empty arrays)."""
    if len(ps):
        codes = encode_patches(model, ps.patches, batch_size, where)
    else:
        d = int(model.config.latent_dim)
        codes = {"z_mean": np.zeros((0, d), np.float32), "z_std": np.zeros((0, d), np.float32)}
        if getattr(model, "discrete_classes", False):  # joint / semi-supervised: chunks join with the others
            codes["class"] = np.zeros(0, np.int64)
    return ObjectEncoding.from_codes(codes, ps)


def encode_patchset(model, ps: PatchSet, batch_size: int = 256, where: str = "patches") -> ObjectEncoding:
    """Encode a :class:`~affinevae.data.patches.PatchSet` in batches into an :class:`ObjectEncoding`;
    ``where`` names the patches in error messages (e.g. the patch-set file)."""
    if not isinstance(ps, PatchSet):
        raise AffineVAEError(f"{where}: encode_patchset needs a PatchSet (cut_patches, PatchSet.load), got "
                             f"{type(ps).__name__} (arrays of patches: encode_dataset)")
    if len(ps) == 0:
        raise AffineVAEError(f"{where}: no patches to encode")
    return _encode_chunk(model, ps, batch_size, where)


#: The options :func:`iter_encode` and :func:`stream_encode` pass on to :func:`~affinevae.data.patches.iter_patches`
#: (its keywords, read from its signature).
PATCH_OPTIONS = frozenset(inspect.signature(iter_patches).parameters) - {"source", "window", "chunk_frames"}


def iter_encode(model, source, window: int, chunk_frames: int = 8, batch_size: int = 256,
                **options: Any) -> Iterator[ObjectEncoding]:
    """Cut and encode patches chunk by chunk of frames, never holding the whole stack.

    Args:
        model: a trained unconditional model whose ``image_shape`` is (C, window, window).
        source: anything :func:`~affinevae.data.stacks.open_stack` accepts (a path is opened lazily).
        window: patch size in pixels. chunk_frames: frames per chunk. batch_size: patches per forward pass.
        **options: object finding and edge options of :func:`~affinevae.data.patches.iter_patches`
            (``coords``, ``stride``, ``min_distance``, ``threshold``, ``absolute``, ``sigma``,
            ``noise_floor``, ``edge``, ``progress``, ``key``, ``background``, ``drop_masked``, ``centre``).

    Yields:
        One :class:`ObjectEncoding` per chunk (frame indices global).
    """
    unknown = sorted(set(options) - PATCH_OPTIONS)
    if unknown:
        raise AffineVAEError(f"iter_encode: unknown option {unknown[0]!r}; the patch options are "
                             f"{', '.join(sorted(PATCH_OPTIONS))}")
    src = open_stack(source, key=options.pop("key", None))
    try:
        check_model_input(model, (src.channels, window, window), src.path)
        for ps in iter_patches(src, window, chunk_frames=chunk_frames, **options):
            yield _encode_chunk(model, ps, batch_size)
    finally:
        if src is not source:
            src.close()


def stream_encode(model, source, window: int, chunk_frames: int = 8, batch_size: int = 256,
                  **options: Any) -> ObjectEncoding:
    """Collect :func:`iter_encode` into one :class:`ObjectEncoding` (only per-object results are kept);
    ``window`` (the patch side, pixels), ``chunk_frames``, ``batch_size`` and ``options`` as :func:`iter_encode`.

    Raises:
        AffineVAEError: when no object was found in the whole stack (suggesting a lower threshold),
            besides the errors of :func:`~affinevae.data.patches.iter_patches` and a model/window
            mismatch.
    """
    src = open_stack(source, key=options.get("key"))  # opened once: the error below reads what the cutting did
    try:
        parts = list(iter_encode(model, src, window, chunk_frames, batch_size,
                                 **{k: v for k, v in options.items() if k != "key"}))
        if sum(len(p) for p in parts) == 0:
            raise nothing_found(src, parts, window, options)
    finally:
        if src is not source:
            src.close()
    return ObjectEncoding.concat(parts)
