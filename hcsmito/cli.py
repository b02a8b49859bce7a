"""Command line: ``hcsmito run | status | report | config | synth | import | demo | info``.

The CLI only parses arguments and reports; the work is done by library functions.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import re
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path

import pydantic

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
    from hcsmito.io.names import plate_well
    from hcsmito.synth import FATE_CONDITIONS, SynthParams, write_synth_plate

    # wells of a real plate (rows A-P, columns 1-24 on 384 wells; at most 1536 wells)
    wells = [plate_well(w) for w in args.wells.split(",") if w.strip()] if args.wells else None
    conditions = None
    if args.conditions is not None:
        text = args.conditions.strip()
        conditions = FATE_CONDITIONS if text.lower() == "fate" else [
            c.strip() for c in text.split(",") if c.strip()
        ]  # fmt: skip
        if not conditions:
            raise SystemExit("--conditions: give names such as DMSO,ara-C, or 'fate'")
    opts = {"allow_cut": args.allow_cut, "nuclear_channel": args.nuclei,
            "annexin_channel": args.annexin}  # fmt: skip
    out = write_synth_plate(
        Path(args.out),
        seed=args.seed,
        wells=wells,
        fields=args.fields,
        shape=args.shape,
        ngff=args.ngff,
        params=SynthParams(**{k: v for k, v in opts.items() if v}) if any(opts.values()) else None,
        conditions=conditions,
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
    t0 = time.perf_counter()  # the last line times the whole command, report included
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
        report=False,  # built here, after a line that says so
    )
    done = len(s.processed) - len(s.failed)

    def fields(n: int) -> str:
        return f"{n} field" + ("" if n == 1 else "s")

    n_kept = len(s.processed) + len(s.skipped)
    print(f"building the report ({fields(n_kept)}) ...", flush=True)
    s.report_error = _report_after_run(s.out)
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
    from hcsmito.io.rundir import RunDir

    report = RunDir(s.out).report_path
    where = report if s.report_error is None else f"{s.out} (no report)"
    print(
        f"{fields(done)} processed, {len(s.skipped)} up to date, {len(s.failed)} failed "
        f"in {time.perf_counter() - t0:.1f} s -> {where}",
        flush=True,
    )
    return 0 if s.ok else 1


def _report_after_run(out: Path) -> str | None:
    """Build ``OUT/report.html`` under OUT's lock; None, or why it could not be built."""
    from hcsmito.io.rundir import RunDir
    from hcsmito.report import build_report

    try:
        with RunDir(out).lock():
            build_report(out)
    except Exception as exc:
        logging.getLogger("hcsmito.cli").debug("report for %s failed", out, exc_info=True)
        return f"{type(exc).__name__}: {exc}"
    return None


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
    if args.calibrate_markers:
        options["calibrate_markers"] = [
            c.strip() for c in args.calibrate_markers.split(",") if c.strip()
        ]
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


class _Help(argparse.HelpFormatter):
    """Help that shows each option's default (when it has one and its help does not say)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            action.option_strings
            and not any(default is v for v in (None, False, argparse.SUPPRESS))
            and "default" not in text
            and not isinstance(action, argparse._VersionAction | argparse._HelpAction)
        ):
            text += (" " if text else "") + "(default: %(default)s)"
        return text


_VERBOSE_HELP = "more log output and, on an error, its traceback (-vv: Dask's log too)"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hcsmito",
        description="Batch processing of high-content confocal co-culture plates (OME-Zarr HCS).",
        formatter_class=_Help,
    )
    p.add_argument("--version", action="version", version=f"hcsmito {__version__}")
    p.add_argument("-v", "--verbose", action="count", default=0, help=_VERBOSE_HELP)
    sub = p.add_subparsers(dest="command", required=True)
    add_parser = sub.add_parser

    def _sub(name: str, **kw) -> argparse.ArgumentParser:
        # every command takes -v after its name too (added to the -v before it)
        sp = add_parser(name, formatter_class=_Help, **kw)
        sp.add_argument(
            "-v", "--verbose", dest="verbose_sub", action="count", default=0, help=_VERBOSE_HELP
        )
        return sp

    sub.add_parser = _sub  # type: ignore[method-assign]

    s = sub.add_parser("synth", help="generate a synthetic co-culture plate with ground truth")
    s.add_argument("--out", required=True, help="plate to write, e.g. demo.zarr")
    s.add_argument("--seed", type=int, default=0, help="random seed")
    s.add_argument(
        "--wells",
        help="comma-separated wells of a standard plate, e.g. B/2,B/3 (at most 1536 wells: rows "
        "A-AF, columns 1-48; default: rows B-C, a column per condition: 10 wells for five)",
    )
    s.add_argument("--fields", type=int, default=2, help="fields per well")
    s.add_argument(
        "--shape", type=_shape, help="field shape Z,Y,X (or Y,X for 2-D; default: 24,384,384)"
    )
    s.add_argument("--ngff", choices=["0.5", "0.4"], default="0.5", help="NGFF version")
    s.add_argument(
        "--allow-cut",
        action="store_true",
        help="let a --shape too shallow for the MSCs cut the cells (a shallow-stack plate)",
    )
    s.add_argument(
        "--nuclei",
        action="store_true",
        help="add a nuclear stain (channel 'Hoechst'); the truth gets the nuclei and each "
        "cell's fate (apoptotic)",
    )
    s.add_argument(
        "--annexin",
        action="store_true",
        help="add an annexin V channel (channel 'Annexin V': a ring on apoptotic cells); the "
        "truth gets each cell's fate",
    )
    s.add_argument(
        "--conditions",
        help="conditions laid out one per plate column, comma-separated, e.g. "
        "'DMSO,ara-C,ara-C + anti-ICAM-1' (combinations joined by '+'), or 'fate': the "
        "protection half of the assay (hcsmito.synth.FATE_CONDITIONS: DMSO, chemotherapy "
        "with and without cytochalasin D / anti-ICAM-1); default: hcsmito.synth."
        "PLATE_CONDITIONS",
    )
    s.add_argument(
        "--overwrite", action="store_true", help="replace the plate, its truth and plate map"
    )
    s.set_defaults(func=_cmd_synth)

    i = sub.add_parser(
        "import",
        help="turn TIFF / OME-TIFF stacks or CZI / LIF / ND2 files + a CSV into an NGFF plate",
    )
    i.add_argument("csv", help="CSV with columns file,well,field[,channel][,scene]")
    i.add_argument("--out", required=True, help="plate to write")
    i.add_argument("--base-dir", help="folder the CSV's file paths are relative to")
    i.add_argument("--voxel-size", help="Z,Y,X in µm (overrides the files' metadata)")
    i.add_argument("--channel-labels", help="comma-separated channel labels")
    i.add_argument(
        "--axes", help="axes of files that do not name them (plain TIFF), e.g. CZYX or ZYX"
    )
    i.add_argument("--ngff", choices=["0.5", "0.4"], default="0.5", help="NGFF version")
    i.add_argument("--overwrite", action="store_true", help="replace the plate")
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
    r.add_argument("--backend", choices=["auto", "cpu", "gpu"], default=None, help=_BACKEND_HELP)
    r.add_argument(
        "--scheduler",
        help="threads: one process | processes: worker processes (one per GPU with "
        "dask-cuda) | ADDRESS: a running Dask scheduler, e.g. tcp://HOST:8786 | slurm: workers as "
        "Slurm jobs (resources.slurm) (default: resources.scheduler of the config, threads)",
    )
    r.add_argument(
        "--workers",
        type=int,
        help="workers (default: resources.workers of the config, else the CPU count, at most 4)",
    )
    r.add_argument("--wells", help="comma-separated wells to process, e.g. B/3,C/4")
    r.add_argument("--overwrite", action="store_true", help="delete previous outputs first")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    r.set_defaults(func=_cmd_run)

    st = sub.add_parser("status", help="per-field state of an output folder")
    st.add_argument("out", help="output folder of `hcsmito run`")
    st.set_defaults(func=_cmd_status)

    rp = sub.add_parser("report", help="rebuild OUT/report.html from the tables (no reprocessing)")
    rp.add_argument("out", help="output folder of `hcsmito run`")
    rp.add_argument("--plate-map", help="CSV well,condition[,replicate,day,...]")
    rp.add_argument(
        "--unit",
        choices=["well", "field", "experiment"],
        help="replicate unit (default: statistics.unit of the run's config, well)",
    )
    rp.add_argument(
        "--control",
        help="control condition, one of the plate map's (default: statistics.control of the "
        "run's config, DMSO)",
    )
    rp.add_argument(
        "--posthoc",
        choices=["tukey", "dunnett", "none"],
        help="post-hoc test (default: statistics.posthoc of the run's config, tukey)",
    )
    rp.add_argument("--calibrate", help="negative-control conditions for red_positive, e.g. DMSO")
    rp.add_argument(
        "--calibrate-markers",
        help="control conditions that calibrate the marker calls (annexin V, PI, the config's "
        "markers.channels), e.g. DMSO",
    )
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
    c.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="override, e.g. foci.threshold_k=5"
    )
    c.add_argument("--schema", action="store_true", help="print the JSON schema instead")
    c.set_defaults(func=_cmd_config)

    d = sub.add_parser("demo", help="generate a small demo plate and run everything on it")
    d.add_argument("--out", default="hcsmito-demo", help="output folder (default: hcsmito-demo)")
    d.add_argument("--seed", type=int, default=0, help="random seed of the plate")
    d.add_argument("--backend", choices=["auto", "cpu", "gpu"], default=None, help=_BACKEND_HELP)
    d.set_defaults(func=_cmd_demo)

    n = sub.add_parser("info", help="version and the backend that would run")
    n.add_argument("--backend", choices=["auto", "cpu", "gpu"], default=None, help=_BACKEND_HELP)
    n.set_defaults(func=_cmd_info)
    sub.add_parser = add_parser  # type: ignore[method-assign]
    return p


_BACKEND_HELP = "auto: the GPU when usable (default: HCSMITO_BACKEND, resources.backend, auto)"


def _cli_names(parser: argparse.ArgumentParser, command: str, text: str) -> str:
    """``text`` in the command line's terms: Python keywords (``overwrite=True``,
    ``voxel_size``, ``fields=0``) become the command's flags (``--overwrite``,
    ``--voxel-size``, ``--fields 0``)."""
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for action in subs.choices[command]._actions:
        flag = next((o for o in action.option_strings if o.startswith("--")), None)
        if flag is None or action.dest in ("help", "verbose_sub"):
            continue
        dest = re.escape(action.dest)
        if isinstance(action, argparse._StoreTrueAction):
            text = re.sub(rf"\b(?:set |pass )?{dest}=True\b", f"pass {flag}", text)
        text = re.sub(rf"(?<![\w.-]){dest}=(?!=)", f"{flag} ", text)
        if "_" in action.dest:  # voxel_size, channel_labels: not a word of a sentence
            text = re.sub(rf"(?<![\w.-]){dest}\b", flag, text)
    return text


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.verbose += getattr(args, "verbose_sub", 0)  # hcsmito -v run ... or hcsmito run -v ...
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
        if isinstance(exc, pydantic.ValidationError):  # 4+ lines and a link: one per error
            text = "; ".join(
                f"{'.'.join(str(k) for k in e['loc']) or exc.title}: "
                f"{e['msg'].removeprefix('Value error, ')}"
                for e in exc.errors()
            )
        text = _cli_names(parser, args.command, text)
        hint = "" if user or args.verbose else " (-v shows the traceback)"
        print(f"hcsmito {args.command}: error: {text}{hint}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
