"""napari plugin (extra ``[napari]``): open ``maps.npz`` as points over the image; learn and map from a layer.

Declared to napari by the npe2 manifest ``napari.yaml`` (entry point ``napari.manifest``):

- reader (:func:`.reader.get_reader`): ``maps.npz`` (or the folder ``affinevae map`` wrote)
  opens as the image it was mapped on plus a points layer of the objects, whose features are
  ``angle_deg`` (folded by the symmetry), ``cluster``, ``frame`` and every content latent
  ``z0``, ``z1``, ...; the points can be coloured by any of them. Physical pixel sizes become
  the layers' scale.
- widget (:class:`.widget.LearnAndMapWidget`): cuts patches from the current image layer,
  trains a model and maps it (:func:`.pipeline.learn_and_map`) in a worker thread with a
  progress bar, then adds the points layer.

:mod:`.pipeline` and :mod:`.layers` need neither napari nor Qt; :mod:`.widget` needs both.
"""
