"""Tunneling nanotubes (TNTs): thin F-actin tubes stretched between two cells above the glass.

1. **Tubeness.** The phalloidin channel is smoothed at a few scales matched to a blurred
   tube (``sqrt(psf² + r² / 4)`` per axis for tube radii ``r``: the imaged cross-section
   of a solid tube) and the Hessian is taken in units of each axis' smoothing sigma, so
   that a tube looks round whatever the voxel size and PSF anisotropy. Its eigenvalues
   (closed form, no per-voxel solver) give a Sato-like line response: large where the two
   cross-section curvatures are strongly negative and the axial one is near zero; sheets
   (cell cortices) and background score low. The response is the maximum over scales.
2. **Threshold** relative to the robust noise of the response (median + k · MAD over the
   voxels with a positive response, most of which are background): a hysteresis pair
   (``threshold_k`` for the core, ``threshold_low_k`` for its extent). The median and
   noise come from a lattice sample of the field's voxels, and the tubeness is computed
   only there, where a tube can be and on the pieces grown from there until they are
   whole (:mod:`hcsmito.stages.tnt.tubes`; ``threshold_sample=None``: the whole field).
   ``thickness_um`` is twice the tube radius of the best-responding scale: a coarse
   figure, as tubes are thinner than the PSF and the pixel (it does not track the true
   diameter; see benchmarks/bench_tnt_accuracy.py).
3. **Free space.** Voxels inside any cell (MSC or Jurkat labels) are removed: a TNT is
   the free part of the tube between two cells. Connected components of what is left are
   skeletonised (host: scikit-image's 3-D skeleton; cuCIM has none).
4. **Rules.** Skeleton voxels within ``contact_um`` of a cell are contacts; cut there, the
   rest falls into free pieces (a short contact run joining two pieces, at most
   ``max_pass_um``, is a tube passing close over a thin MSC edge and joins them; a free
   skeleton end whose tube mask reaches a cell is an end on that cell, since skeletons
   retract from thick ends). A piece with ends on two *different* cells is a bridge; it is
   a TNT when it is at least ``min_length_um`` long (cell surface to cell surface), runs at
   least ``min_height_um`` above the glass (median over the path of the height above the
   glass under each voxel: a sloping tube or a tilted plate is measured where it runs;
   stress fibres lie at the glass) and gets at least ``min_clearance_um`` away from every
   cell somewhere (a tube hugging a cell outline is cortex, not a free-floating TNT). A
   tube across a gap that the segmented cells (a little larger than the true ones) narrow
   to under 2 ``contact_um`` is contacts all the way: a contact run with no free piece,
   next to two cells and straight from one to the other, is a bridge too, when it gets
   0.75 ``contact_um`` clear and is at least twice ``min_length_um`` long. Its
   ends are reported where the tube meets each cell: the contact gap beyond the path's
   end, along the path; a tube that lands on an MSC at a shallow angle (over its thin
   edge) is first followed straight on through its contact run (1.5-12 µm) to where it
   enters the cell.
5. **Cargo.** A TNT carries a mitochondrion when a focus label (``foci_labels``) lies
   within ``mito_tolerance_um`` of its path, or when the spot response of the ``mito``
   channel on the path (away from Jurkat bodies, whose own mitochondria glow) exceeds
   ``mito_threshold_k`` robust noise sigmas of that response in free space.

The glass plane is estimated per field from the lowest rising edge of the GFP, actin and
MitoTracker channels, tile by tile, robust to cells above the glass and to a tilt
(:mod:`hcsmito.stages.glass`), unless ``glass_z_um`` is given; a plate-level reference
replaces an implausible field estimate, and the result is flagged ``glass_implausible``.

2-D fields have no z: the height rule is not applied and ``height_um`` is NaN; the rest
(tubeness, free space, two-cell bridge, length, clearance, cargo) runs in the plane.
"""

from hcsmito.stages.tnt.detect import TNT_COLUMNS, TNTs, detect_tnts
from hcsmito.stages.tnt.hessian import tubeness
from hcsmito.stages.tnt.match import match_tnts

__all__ = ["TNT_COLUMNS", "TNTs", "detect_tnts", "match_tnts", "tubeness"]
