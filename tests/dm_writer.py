"""Test-only writer of minimal Gatan DigitalMicrograph ``.dm3`` / ``.dm4`` files.

rosettasciio reads DM files but cannot write them, and no valid DM file ships with the tests'
dependencies; :func:`write_dm` writes the smallest file that a DM reader treats as a real one.

Layout (version 3; version 4 differences in brackets). The header and every tag structure are
big-endian; the tag *values* and the image data are in the byte order the header names (we write
little-endian, as PC-made files are, so rosettasciio's native-order memory map reads them):

- header: version (uint32: 3 [4]), file length in bytes (uint32 [uint64]), byte order (uint32, 1 =
  little-endian);
- tag group: sorted (uint8), open (uint8), number of tags (uint32 [uint64]), the tags;
- tag: kind (uint8: 20 group, 21 data), name length (uint16), name (ASCII; empty for list items)
  [then the tag's length in bytes, uint64], then a group, or a data tag: ``%%%%``, the number of
  type words n (uint32 [uint64]), n type words, the value. Type words: a simple value ``[type]``;
  an array ``[20, element type, length]``. Simple types: 2 int16, 3 int32, 4 uint16 (also the
  UTF-16 code units of text such as units), 5 uint32, 6 float32, 7 float64, 8 bool, 10 uint8.

Tree written (what ``rsciio.digitalmicrograph`` needs; DM lists axes x first)::

    ImageList: [thumbnail image, image]            (list items are unnamed groups)
      image: ImageData: Calibrations: Brightness {Origin, Scale, Units}
                                      Dimension [{Origin, Scale, Units} per axis x, y(, z)]
                        Data (array), DataType (DM image type), Dimensions [x, y(, z)], PixelDepth
             ImageTags {}, Name (text)
    Thumbnails: [{ImageIndex: 0}]                  (so readers skip the thumbnail)
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

#: numpy dtype -> (DM image DataType, tag element type) of the image data.
IMAGE_TYPES = {np.dtype("int16"): (1, 2), np.dtype("float32"): (2, 6), np.dtype("uint8"): (6, 10),
               np.dtype("int32"): (7, 3), np.dtype("uint16"): (10, 4), np.dtype("uint32"): (11, 5),
               np.dtype("float64"): (12, 7)}
#: numpy dtype of a tag value -> DM simple type.
SIMPLE_TYPES = {np.dtype(k): v for k, v in (("int16", 2), ("int32", 3), ("uint16", 4), ("uint32", 5),
                                            ("float32", 6), ("float64", 7), ("bool", 8), ("uint8", 10))}


def _pack_count(n: int, version: int) -> bytes:
    """A size or count: uint32 in DM3, uint64 in DM4, big-endian."""
    return struct.pack(">I" if version == 3 else ">Q", n)


def _data(value, version: int) -> bytes:
    """A data tag's body after its name: ``%%%%``, type words, value (little-endian)."""
    if isinstance(value, str):
        value = np.frombuffer(value.encode("utf-16-le"), "<u2")
    value = np.asarray(value)
    dtype = value.dtype.newbyteorder("=")
    if value.ndim == 0:
        words = [SIMPLE_TYPES[dtype]]
    else:
        words = [20, IMAGE_TYPES[dtype][1] if dtype in IMAGE_TYPES else SIMPLE_TYPES[dtype], value.size]
    head = b"%%%%" + _pack_count(len(words), version) + b"".join(_pack_count(w, version) for w in words)
    return head + value.astype(dtype.newbyteorder("<"), copy=False).tobytes()


def _group(items, version: int) -> bytes:
    """A tag group from a dict (named tags) or a list (unnamed tags); values: dict/list = group,
    a numpy scalar or 1-D array or a str = data."""
    pairs = items.items() if isinstance(items, dict) else (("", v) for v in items)
    body = []
    for name, value in pairs:
        is_group = isinstance(value, (dict, list))
        inner = _group(value, version) if is_group else _data(value, version)
        size = _pack_count(len(inner), version) if version == 4 else b""
        body.append(struct.pack(">BH", 20 if is_group else 21, len(name)) + name.encode("ascii") + size + inner)
    return struct.pack(">BB", 0, 1) + _pack_count(len(body), version) + b"".join(body)


def _image(data: np.ndarray, scale: float, unit: str, name: str) -> dict:
    """The ImageList entry of one (H, W) or (F, H, W) array, ``scale`` ``unit``s a pixel on x and y."""
    dm_type = IMAGE_TYPES[data.dtype.newbyteorder("=")][0]
    units = [unit, unit, ""][:data.ndim]
    scales = [scale, scale, 1.0][:data.ndim]
    dims = [{"Origin": np.float32(0), "Scale": np.float32(s), "Units": u} for s, u in zip(scales, units)]
    calib = {"Brightness": {"Origin": np.float32(0), "Scale": np.float32(1), "Units": ""}, "Dimension": dims}
    return {"ImageData": {"Calibrations": calib, "Data": data.ravel(),
                          "DataType": np.int32(dm_type), "Dimensions": [np.uint32(n) for n in data.shape[::-1]],
                          "PixelDepth": np.int32(data.dtype.itemsize)},
            "ImageTags": {}, "Name": name}


def write_dm(path, data, scale: float = 1.0, unit: str = "", version: int = 3, thumbnail: bool = True,
             dimensions=None) -> Path:
    """Write ``data`` as a Gatan DigitalMicrograph file that rosettasciio reads back.

    Args:
        path: the file (``.dm3`` for version 3, ``.dm4`` for version 4).
        data: an (H, W) image or (F, H, W) stack of a dtype in :data:`IMAGE_TYPES`, or a list of
            them (several images in one file, in order).
        scale: physical length of one pixel on x and y (in ``unit``); stored as float32, as DM does.
        unit: the length unit written to the calibration (e.g. ``"nm"``, ``"Å"``; ``""`` uncalibrated).
        version: 3 (4-byte sizes and counts) or 4 (8-byte ones, tag lengths after names).
        thumbnail: also write a small uint8 thumbnail of the first image as image 0, listed under
            ``Thumbnails``, as DigitalMicrograph does; readers must skip it.
        dimensions: sizes (x first) written to the first image's ``Dimensions`` instead of its own,
            to craft a file whose dimensions disagree with its data.

    Returns:
        The path written.
    """
    if version not in (3, 4):
        raise ValueError(f"DM version must be 3 or 4, got {version}")
    arrays = [np.ascontiguousarray(a) for a in (data if isinstance(data, list) else [data])]
    for a in arrays:
        if a.ndim not in (2, 3) or a.dtype.newbyteorder("=") not in IMAGE_TYPES:
            raise ValueError(f"write_dm: need 2-D or 3-D arrays of {sorted(map(str, IMAGE_TYPES))}, "
                             f"got {a.shape} {a.dtype}")
    images = [_image(a, scale, unit, f"{Path(path).stem}{i or ''}") for i, a in enumerate(arrays)]
    if dimensions is not None:
        images[0]["ImageData"]["Dimensions"] = [np.uint32(n) for n in dimensions]
    root: dict = {"ImageList": images}
    if thumbnail:
        img = arrays[0] if arrays[0].ndim == 2 else arrays[0][0]
        small = img[::max(1, img.shape[0] // 16), ::max(1, img.shape[1] // 16)].astype(np.float64)
        small = np.round(255 * (small - small.min()) / max(np.ptp(small), 1e-12)).astype(np.uint8)
        images.insert(0, _image(small, 1.0, "", "thumbnail"))
        root["Thumbnails"] = [{"ImageIndex": np.int32(0)}]
    body = _group(root, version)
    head_len = 12 if version == 3 else 16
    length = struct.pack(">I" if version == 3 else ">Q", head_len + len(body))
    path = Path(path)
    path.write_bytes(struct.pack(">I", version) + length + struct.pack(">I", 1) + body)
    return path


def write_dm_spectrum_image(path, cube, scale: float = 1.0, unit: str = "nm", energy_scale: float = 0.5,
                            energy_origin: float = -100.0, energy_unit: str = "eV", signal: str = "EELS",
                            version: int = 3, survey=None) -> Path:
    """Write an (H, W, E) spectrum image as DigitalMicrograph does: dimensions x, y, energy (the numpy
    array (E, H, W)), the energy calibrated (``energy_scale`` ``energy_unit`` per channel; DM's origin
    is in channels, so the first channel lies at ``-energy_origin * energy_scale``) and the tags
    ``Meta Data`` {Format: 'Spectrum image', Signal: ``signal``}. rosettasciio reads it back as
    (E, H, W) with the energy axis first. ``survey``: an (H', W') image written before it in the same
    file (a survey image beside the spectrum image), signal 0 then, the spectrum image signal 1."""
    data = np.ascontiguousarray(np.moveaxis(np.asarray(cube), -1, 0))
    image = _image(data, scale, unit, Path(path).stem)
    image["ImageData"]["Calibrations"]["Dimension"][2] = {"Origin": np.float32(energy_origin),
                                                          "Scale": np.float32(energy_scale), "Units": energy_unit}
    image["ImageTags"] = {"Meta Data": {"Format": "Spectrum image", "Signal": signal}}
    listed = [image] if survey is None else [_image(np.ascontiguousarray(survey), scale, unit, "survey"), image]
    body = _group({"ImageList": listed}, version)
    head_len = 12 if version == 3 else 16
    length = struct.pack(">I" if version == 3 else ">Q", head_len + len(body))
    path = Path(path)
    path.write_bytes(struct.pack(">I", version) + length + struct.pack(">I", 1) + body)
    return path
