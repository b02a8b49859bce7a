"""Instance segmentation of the two cell types: MSCs (GFP) and Jurkat donor cells (mito).

Both work the same way on 2-D and 3-D fields, NumPy or CuPy:

1. smooth at a scale in µm and threshold relative to the field's own background and
   noise (:func:`hcsmito.stages._util.background_level_noise`) and to its foreground
   intensity, so that no absolute intensity is ever a default;
2. split touching cells in the *lateral projection* with a seeded watershed (seeds a
   minimum distance apart, derived from the expected cell diameter), then extend the 2-D
   instances through z inside the 3-D mask. MSCs are flat adherent cells and Jurkat cells
   do not stack on each other, so one cell per (y, x) column holds, and the watershed
   runs on a small 2-D image: on the GPU this is the one host step (cuCIM has no
   watershed), a ``Y×X`` transfer each way.

MSC seeds are the h-maxima of the cell *height map* (the thickness of each column,
``sum_z / max_z`` of the background-subtracted signal): the nucleus region is the thickest
part of a spread MSC, and two touching cells meet where both are thinnest, so the map has
one hill per cell and a valley at each contact; an h-maximum (a hill standing a fixed
fraction of the plateau height above its saddle) survives axial blur, which lifts the
valleys. Jurkat cells are round: their seeds are maxima of the distance transform of the
projected mask, at least ~0.6 diameters apart.
"""

from hcsmito.stages.segmentation._common import Instances
from hcsmito.stages.segmentation.jurkat import (
    JurkatInstances,
    jurkat_threshold_image,
    segment_jurkat,
)
from hcsmito.stages.segmentation.msc import msc_threshold_image, segment_msc
from hcsmito.stages.segmentation.nuclei import (
    NucleiInstances,
    assign_nuclei,
    call_nuclear_state,
    group_fragments,
    nuclei_seeds,
    segment_nuclei,
    split_at_donors,
    typical_size,
)

__all__ = [
    "Instances",
    "JurkatInstances",
    "NucleiInstances",
    "assign_nuclei",
    "call_nuclear_state",
    "group_fragments",
    "jurkat_threshold_image",
    "msc_threshold_image",
    "nuclei_seeds",
    "segment_jurkat",
    "segment_msc",
    "segment_nuclei",
    "split_at_donors",
    "typical_size",
]
