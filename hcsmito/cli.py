"""Command line: ``hcsmito run | status | report | config | synth | import | demo | info``.

The CLI only parses arguments and reports; the work is done by library functions.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

from hcsmito import __version__


def _floats(text: str, n: int | None = None, what: str = "values") -> tuple[float, ...]:
    try:
        vals = tuple(float(v) for v in text.split(","))
    except ValueError:
        msg = f"{what}: expected comma-separated numbers, got {text!r}"
        raise argparse.ArgumentTypeError(msg) from None
    if n is not None and len(vals) != n:
        raise argparse.ArgumentTypeError(f"{what}: expected {n} numbers, got {text!r}")
    return vals


def _shape(text: str) -> tuple[int, ...]:
    try:
        vals = tuple(int(v) for v in text.split(","))
    except ValueError:
        msg = f"--shape: expected Z,Y,X or Y,X integers, got {text!r}"
        raise argparse.ArgumentTypeError(msg) from None
    if len(vals) not in (2, 3) or min(vals) < 1:
        raise argparse.ArgumentTypeError(f"--shape: expected Z,Y,X or Y,X positive, got {text!r}")
    return vals


def _cmd_synth(args: argparse.Namespace) -> int:
    from hcsmito.synth import write_synth_plate

    wells = args.wells.split(",") if args.wells else None
    out = write_synth_plate(
        Path(args.out),
        seed=args.seed,
        wells=wells,
        fields=args.fields,
        shape=args.shape,
        ngff=args.ngff,
        overwrite=args.overwrite,
    )
    print(f"wrote {out}")
    return 0


def _cmd_import(args: argparse.Namespace) -> int:
    from hcsmito.io.tiff_import import import_tiffs

    voxel = None
    if args.voxel_size:
        vals = _floats(args.voxel_size, what="--voxel-size")
        if len(vals) not in (2, 3):
            raise SystemExit("--voxel-size: give Z,Y,X or Y,X in micrometres")
        voxel = dict(zip("zyx"[3 - len(vals) :], vals, strict=True))
    labels = args.channel_labels.split(",") if args.channel_labels else None
    out = import_tiffs(
        Path(args.csv),
        Path(args.out),
        base_dir=Path(args.base_dir) if args.base_dir else None,
        voxel_size=voxel,
        channel_labels=labels,
        axes=args.axes,
        version=args.ngff,
        overwrite=args.overwrite,
    )
    print(f"wrote {out}")
    return 0


def _quiet_dask(verbose: int) -> None:
    """distributed configures its loggers (INFO) when imported: quiet them unless -vv."""
    if verbose >= 2:
        return
    import distributed  # noqa: F401  (its import sets the levels this overrides)

    for name in list(logging.root.manager.loggerDict):
        if name.startswith("distributed"):
            logging.getLogger(name).setLevel(logging.ERROR)


def _cmd_run(args: argparse.Namespace) -> int:
    from hcsmito.config import load_config

    _quiet_dask(args.verbose)
    from hcsmito.runner import run_plate

    config = load_config(args.config, args.set or ())
    wells = [w for w in args.wells.split(",") if w] if args.wells else None
    s = run_plate(
        args.plate,
        args.out,
        config=config,
        plate_map=args.plate_map,
        wells=wells,
        backend=args.backend,
        scheduler=args.scheduler,
        workers=args.workers,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    done = len(s.processed) - len(s.failed)

    def fields(n: int) -> str:
        return f"{n} field" + ("" if n == 1 else "s")

    print(
        f"{fields(done)} processed, {len(s.skipped)} up to date, "
        f"{len(s.failed)} failed in {s.wall_s:.1f} s -> {s.out}"
    )
    if s.flagged:
        print(s.flag_summary())
    if s.failed:
        print("failed fields:", file=sys.stderr)
        for key, err in s.failed.items():
            print(f"  {key}: {err}", file=sys.stderr)
    if s.report_error:
        print(
            f"hcsmito run: error: the report could not be built: {s.report_error} (the tables "
            f"are written; `hcsmito report {s.out}` builds it again)",
            file=sys.stderr,
        )
    return 0 if s.ok else 1


def _cmd_status(args: argparse.Namespace) -> int:
    from hcsmito.runner import field_status

    df = field_status(args.out)
    if not len(df):
        print(f"{args.out}: no field processed yet")
        return 0
    from hcsmito.qc import format_flag_counts

    print(df.to_string(index=False))
    counts = df["status"].value_counts().to_dict()
    print(", ".join(f"{v} {k}" for k, v in counts.items()))
    flagged = format_flag_counts(df.loc[df["status"] == "ok", "qc_flags"])
    if flagged:
        print(flagged)
    if counts.get("redo"):
        n = counts["redo"]
        print(f"{n} field{'' if n == 1 else 's'} (redo) will be processed again by the next run")
    return 1 if counts.get("failed") or counts.get("redo") else 0


def _cmd_config(args: argparse.Namespace) -> int:
    import json

    import yaml

    from hcsmito.config import Config, load_config

    if args.schema:
        print(json.dumps(Config.model_json_schema(), indent=1))
        return 0
    cfg = load_config(args.config, args.set or ())
    print(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False), end="")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from hcsmito.io.rundir import RunDir
    from hcsmito.report import build_report

    options = {
        k: v
        for k, v in (("unit", args.unit), ("control", args.control), ("posthoc", args.posthoc))
        if v is not None
    }
    if args.calibrate:
        options["calibrate"] = [c.strip() for c in args.calibrate.split(",") if c.strip()]
    if args.exclude_flags is not None:
        options["exclude_flags"] = [c.strip() for c in args.exclude_flags.split(",") if c.strip()]
    rd = RunDir(args.out)
    # under OUT's lock: a run writing into OUT refuses the report, and a run started while
    # the report is built is refused (a folder that is not there is build_report's error)
    with rd.lock() if rd.root.is_dir() else contextlib.nullcontext():
        path = build_report(args.out, plate_map=args.plate_map, **options)
    print(f"wrote {path}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from hcsmito.demo import run_demo

    _quiet_dask(args.verbose)

    return run_demo(Path(args.out), backend=args.backend, seed=args.seed)


def _cmd_info(args: argparse.Namespace) -> int:
    from hcsmito.backend import get_backend

    b = get_backend(args.backend)
    print(f"hcsmito {__version__}")
    print(f"backend: {b.name} ({b.device})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hcsmito",
        description="Batch processing of high-content confocal co-culture plates (OME-Zarr HCS).",
    )
    p.add_argument("--version", action="version", version=f"hcsmito {__version__}")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("synth", help="generate a synthetic co-culture plate with ground truth")
    s.add_argument("--out", required=True, help="plate to write, e.g. demo.zarr")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--wells", help="comma-separated wells, e.g. B/2,B/3 (default: a small layout)")
    s.add_argument("--fields", type=int, default=2, help="fields per well")
    s.add_argument("--shape", type=_shape, help="field shape Z,Y,X (or Y,X for 2-D)")
    s.add_argument("--ngff", choices=["0.5", "0.4"], default="0.5", help="NGFF version")
    s.add_argument(
        "--overwrite", action="store_true", help="replace the plate, its truth and plate map"
    )
    s.set_defaults(func=_cmd_synth)

    i = sub.add_parser("import", help="turn TIFF / OME-TIFF stacks + a CSV into an NGFF plate")
    i.add_argument("csv", help="CSV with columns file,well,field[,channel]")
    i.add_argument("--out", required=True, help="plate to write")
    i.add_argument("--base-dir", help="folder the CSV's file paths are relative to")
    i.add_argument("--voxel-size", help="Z,Y,X in µm (overrides the files' metadata)")
    i.add_argument("--channel-labels", help="comma-separated channel labels")
    i.add_argument(
        "--axes", help="axes of files that do not name them (plain TIFF), e.g. CZYX or ZYX"
    )
    i.add_argument("--ngff", choices=["0.5", "0.4"], default="0.5")
    i.add_argument("--overwrite", action="store_true")
    i.set_defaults(func=_cmd_import)

    r = sub.add_parser("run", help="process a plate: labels, tables, QC, manifest (resumable)")
    r.add_argument("--plate", required=True, help="OME-NGFF HCS plate (0.4 or 0.5)")
    r.add_argument("--out", required=True, help="output folder")
    r.add_argument(
        "--config",
        help="YAML config, or a shipped one by name: deconvolve, mito-only (default: "
        "the packaged conf/default.yaml)",
    )
    r.add_argument("--plate-map", help="CSV well,condition[,replicate,day,...]")
    r.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="override, e.g. foci.threshold_k=5"
    )
    r.add_argument("--backend", choices=["auto", "cpu", "gpu"], default=None)
    r.add_argument("--scheduler", help="threads | processes | ADDRESS of a running dask scheduler")
    r.add_argument("--workers", type=int, help="workers (threads or processes)")
    r.add_argument("--wells", help="comma-separated wells to process, e.g. B/3,C/4")
    r.add_argument("--overwrite", action="store_true", help="delete previous outputs first")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    r.set_defaults(func=_cmd_run)

    st = sub.add_parser("status", help="per-field state of an output folder")
    st.add_argument("out")
    st.set_defaults(func=_cmd_status)

    rp = sub.add_parser("report", help="rebuild OUT/report.html from the tables (no reprocessing)")
    rp.add_argument("out", help="output folder of `hcsmito run`")
    rp.add_argument("--plate-map", help="CSV well,condition[,replicate,day,...]")
    rp.add_argument("--unit", choices=["well", "field", "experiment"], help="replicate unit")
    rp.add_argument("--control", help="control condition (default: from the config, DMSO)")
    rp.add_argument("--posthoc", choices=["tukey", "dunnett", "none"])
    rp.add_argument("--calibrate", help="negative-control conditions for red_positive, e.g. DMSO")
    rp.add_argument(
        "--exclude-flags",
        metavar="CODES",
        help="leave fields with these QC flags out of the statistics, e.g. saturated,out_of_focus "
        "('' keeps all; default: statistics.exclude_flags of the run's config)",
    )
    rp.set_defaults(func=_cmd_report)

    c = sub.add_parser("config", help="print the effective config (or its JSON schema)")
    c.add_argument(
        "--config",
        help="YAML config, or a shipped one by name: deconvolve, mito-only (default: "
        "conf/default.yaml)",
    )
    c.add_argument("--set", action="append", metavar="KEY=VALUE")
    c.add_argument("--schema", action="store_true", help="print the JSON schema instead")
    c.set_defaults(func=_cmd_config)

    d = sub.add_parser("demo", help="generate a small demo plate and run everything on it")
    d.add_argument("--out", default="hcsmito-demo", help="output folder (default: hcsmito-demo)")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--backend", choices=["auto", "cpu", "gpu"], default=None)
    d.set_defaults(func=_cmd_demo)

    n = sub.add_parser("info", help="version and the backend that would run")
    n.add_argument("--backend", choices=["auto", "cpu", "gpu"], default=None)
    n.set_defaults(func=_cmd_info)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2),
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"hcsmito {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        # one clear line, no traceback (with -v: the traceback first)
        if args.verbose:
            traceback.print_exc()
        # input and environment errors say what is wrong in their message; anything else
        # is named by its type too
        user = isinstance(exc, (ValueError, OSError, RuntimeError))
        text = str(exc) if user and str(exc) else f"{type(exc).__name__}: {exc}"
        hint = "" if user or args.verbose else " (-v shows the traceback)"
        print(f"hcsmito {args.command}: error: {text}{hint}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
