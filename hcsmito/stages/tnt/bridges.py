"""Bridges: skeleton paths that leave one cell and reach another through free space
(step 4 of :mod:`hcsmito.stages.tnt`; host)."""

from __future__ import annotations

from typing import Any

import numpy as np

from hcsmito.stages.tnt._geometry import path_length, trace_path

__all__ = ["find_bridges"]


def find_bridges(
    graph: Any,
    s_dist: np.ndarray,
    s_cell: np.ndarray,
    s_reach: np.ndarray,
    coords: np.ndarray | None = None,
    shallow: np.ndarray | None = None,
    *,
    contact_um: float,
    max_pass_um: float,
    step_um: float,
    min_straight: float = 0.9,
) -> list[tuple[np.ndarray, float, bool]]:
    """Skeleton paths that leave one cell and reach another through free space (host).

    Skeleton voxels within ``contact_um`` of a cell are *contacts*; the others, cut at the
    contacts, fall into free pieces. A run of contacts joining exactly two pieces and no
    longer than ``max_pass_um`` is a tube passing close over a cell (a thin MSC edge): the
    two pieces are joined through it. Any other contact run is an *end* where a tube meets
    a cell. A group of pieces with ends on two different cells is a bridge: the shortest
    path through it between one end of each (the pair farthest apart when it touches more).
    Cortex hugging a cell outline is all contacts and never forms a piece; two tubes
    meeting on a cell are cut apart there. A free skeleton end whose tube (mask component)
    reaches its nearest cell within ``contact_um`` (``s_reach``) is an end on that cell too:
    skeletons retract from thick tube ends.

    Returns
    -------
    list of (path, length_um, narrow)
        Skeleton indices from one end to the other, the length from cell surface to cell
        surface (geodesic plus the two contact gaps), and whether the bridge crosses a
        narrow gap within ``contact_um`` of the cells all the way (a contact run next to
        two cells, no free piece, its chord at least ``min_straight`` of its length; needs
        ``coords``).
    """
    from scipy.sparse.csgraph import connected_components, dijkstra

    near = s_dist <= contact_um
    free_idx = np.flatnonzero(~near)
    near_idx = np.flatnonzero(near)
    if free_idx.size == 0:
        return []
    n_piece, piece = connected_components(graph[free_idx][:, free_idx], directed=False)
    if near_idx.size:
        _, run = connected_components(graph[near_idx][:, near_idx], directed=False)
    else:
        run = np.zeros(0, np.int32)
    piece_of = np.full(len(s_dist), -1)
    piece_of[free_idx] = piece
    run_of = np.full(len(s_dist), -1)
    run_of[near_idx] = run
    # (run, piece) adjacency
    adj = graph[near_idx].tocoo()
    ok = piece_of[adj.col] >= 0
    # (near node, run, piece) for every contact next to a free voxel
    attach = np.stack([near_idx[adj.row[ok]], run[adj.row[ok]], piece_of[adj.col[ok]]], axis=1)
    # free skeleton ends whose tube reaches a cell: one-node end runs of their own
    degree = np.diff(graph.tocsr().indptr)
    loose = free_idx[(degree[free_idx] <= 1) & s_reach[free_idx]]
    extra = np.stack([loose, run.size + np.arange(loose.size), piece_of[loose]], axis=1)
    attach = np.unique(np.concatenate([attach, extra.astype(attach.dtype)]), axis=0)
    rp = np.unique(attach[:, 1:], axis=0)
    # union pieces through short pass-over runs
    parent = np.arange(n_piece)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    run_size = np.bincount(run, minlength=int(attach[:, 1].max(initial=0)) + 1)
    passing = set()
    for r in np.unique(rp[:, 0]) if len(rp) else []:
        pieces = rp[rp[:, 0] == r, 1]
        if pieces.size == 2 and run_size[r] * step_um <= max_pass_um:
            passing.add(int(r))
            parent[find(int(pieces[0]))] = find(int(pieces[1]))
    group = np.array([find(i) for i in range(n_piece)])
    out = []
    for g in np.unique(group):
        pieces = np.flatnonzero(group == g)
        at = attach[np.isin(attach[:, 2], pieces) & ~np.isin(attach[:, 1], list(passing))]
        cells = s_cell[at[:, 0]]
        if np.unique(cells).size < 2:
            continue
        # one end per cell: its attachment (contact next to free space) closest to it
        ends = []
        for c in np.unique(cells):
            cand = at[cells == c, 0]
            ends.append(int(cand[np.argmin(s_dist[cand])]))
        inner = np.r_[
            free_idx[np.isin(piece, pieces)], near_idx[np.isin(run, list(passing))]
        ].astype(np.int64)
        nodes = np.unique(np.r_[inner, ends])
        sub = graph[nodes][:, nodes]
        loc = np.searchsorted(nodes, ends)
        dmat, pred = dijkstra(sub, indices=loc, return_predecessors=True)
        best = None
        for i in range(len(ends)):
            for j in range(i + 1, len(ends)):
                d = dmat[i, loc[j]]
                if np.isfinite(d) and (best is None or d > best[0]):
                    best = (float(d), i, j)
        if best is None:
            continue
        d, i, j = best
        path = trace_path(pred[i], int(loc[i]), int(loc[j]))
        if not path:
            continue
        path = nodes[np.asarray(path, dtype=np.int64)]
        if coords is not None and shallow is not None:
            # a tube landing at a shallow angle on a flat cell (over a thin MSC edge) runs
            # within contact_um of it until it enters: follow it there
            head = _into_contact(graph, near_idx, run, run_of, path[::-1], coords, shallow)
            tail = _into_contact(graph, near_idx, run, run_of, path, coords, shallow)
            path = np.r_[head[::-1], path, tail].astype(np.int64)
        out.append((path, d + float(s_dist[path[0]] + s_dist[path[-1]]), False))
    if coords is None or not len(run):
        return out
    # a tube across a gap narrower than twice contact_um (segmented cells, a little larger
    # than the true ones, close it up) is contacts all the way: a contact run with no free
    # piece whose voxels lie next to two cells, straight from one to the other, is a bridge
    # (cortex follows a curved outline; a junction of two cells lies inside their masks)
    attached = np.isin(np.arange(int(run.max()) + 1), rp[:, 0] if len(rp) else [])
    rc = np.unique(np.stack([run, s_cell[near_idx]], axis=1), axis=0)
    n_cells_run = np.bincount(rc[:, 0], minlength=attached.size)
    for r in np.flatnonzero((n_cells_run >= 2) & ~attached):
        members = near_idx[run == r]
        sub = graph[members][:, members]
        # its ends: the skeleton ends of the run (and the closest voxel to each cell), the
        # pair on two different cells farthest apart
        mc = s_cell[members]
        closest = [
            np.flatnonzero(mc == c)[np.argmin(s_dist[members[mc == c]])] for c in np.unique(mc)
        ]
        tips = np.flatnonzero(np.diff(sub.tocsr().indptr) <= 1)
        loc = np.unique(np.r_[tips, closest]).astype(np.int64)
        dmat, pred = dijkstra(sub, indices=loc, return_predecessors=True)
        dd = dmat[:, loc]
        ok = np.triu(mc[loc][:, None] != mc[loc][None, :], 1) & np.isfinite(dd)
        if not ok.any():
            continue
        i, j = divmod(int(np.argmax(np.where(ok, dd, -1.0))), len(loc))
        d = float(dd[i, j])
        path = trace_path(pred[i], int(loc[i]), int(loc[j]))
        if len(path) < 2:
            continue
        path = members[np.asarray(path, dtype=np.int64)]
        chord = float(np.linalg.norm(coords[path[-1]] - coords[path[0]]))
        if chord < min_straight * path_length(coords[path]):
            continue
        out.append((path, d + float(s_dist[path[0]] + s_dist[path[-1]]), True))
    return out


def _into_contact(
    graph: Any,
    near_idx: np.ndarray,
    run: np.ndarray,
    run_of: np.ndarray,
    path: np.ndarray,
    coords: np.ndarray,
    shallow: np.ndarray,
    *,
    max_um: float = 12.0,
    min_um: float = 1.5,
    back_um: float = 2.0,
    min_cos: float = 0.8,
) -> np.ndarray:
    """Skeleton nodes that continue ``path`` beyond its last node through that node's
    contact run to where the tube enters the cell (host; ``coords`` in µm): the node of
    the run farthest from the end, when the end's cell is one a tube can land on at a
    shallow angle (``shallow``: an MSC), ``min_um`` to ``max_um`` away and straight on
    (cosine >= ``min_cos`` with the path's last ``back_um``: not cortex along an outline).
    """
    from scipy.sparse.csgraph import dijkstra

    none = np.zeros(0, np.int64)
    end = int(path[-1])
    r = run_of[end]
    if r < 0 or not shallow[end]:
        return none
    members = near_idx[run == r]
    if members.size < 2:
        return none
    k = int(np.searchsorted(members, end))
    dist, pred = dijkstra(graph[members][:, members], indices=k, return_predecessors=True)
    pts = coords[path[::-1]].astype(float)
    along = np.cumsum(np.r_[0.0, np.linalg.norm(np.diff(pts, axis=0), axis=1)])
    u = pts[0] - pts[int(min(np.searchsorted(along, back_um), len(pts) - 1))]
    v = coords[members] - pts[0]
    cos = (v @ u) / np.maximum(np.linalg.norm(v, axis=1) * np.linalg.norm(u), 1e-12)
    ok = np.isfinite(dist) & (dist <= max_um) & (cos >= min_cos) & ~np.isin(members, path)
    if not ok.any():
        return none
    far = int(np.argmax(np.where(ok, dist, -1.0)))
    if dist[far] < min_um:
        return none  # an ordinary end: the contact gap is measured from the path's end
    nodes = trace_path(pred, k, far)
    return members[np.asarray(nodes[1:], dtype=np.int64)] if len(nodes) > 1 else none
