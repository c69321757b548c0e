"""``napari-4dstem``: analyze files headless, print what a file holds, or start the GUI demo.

Exit codes: 0 success, 1 error (one readable line; ``--debug`` for the traceback), 2 bad command
line, 130 interrupted (Ctrl-C), 143 terminated (SIGTERM). An interrupted run leaves no output file.
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
import time
import traceback
from pathlib import Path

from .errors import FourDSTEMError
from .progress import Progress

PROG = "napari-4dstem"


class Terminated(KeyboardInterrupt):
    """SIGTERM (a cluster scheduler stopping the job): unwinds like Ctrl-C so temporary files are removed."""


# -- progress ------------------------------------------------------------------------------------
class TextProgress:
    """A progress printer for :class:`~napari_4dstem.Progress` on a text stream (no tqdm).

    On a terminal one line per stage is redrawn in place; in a log file (cluster job) a line is
    printed at every 10 % and at every epoch end.
    """

    def __init__(self, stream=None, width: int = 28, min_interval: float = 0.2):
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.width = width
        self.min_interval = min_interval
        self.stage = None
        self._last = 0.0
        self._decile = -1
        self._t0 = time.perf_counter()

    def __call__(self, p: Progress) -> None:
        if p.info.get("warning"):
            self._end_line()
            self.stream.write(f"{PROG}: warning: {p.info['warning']}\n")
            self.stream.flush()
            self.stage = None
            return
        stage = p.info.get("stage", "")
        if stage != self.stage:
            self._end_line()
            self.stage, self._t0, self._decile = stage, time.perf_counter(), -1
        frac = min(max(p.fraction, 0.0), 1.0)
        done = bool(p.info.get("stage_done"))
        prefix = f"[{p.info['stage_index'] + 1}/{p.info['n_stages']}] " if "n_stages" in p.info else ""
        elapsed = time.perf_counter() - self._t0
        msg = "" if p.message in (stage, f"{stage} done") else p.message
        if p.info.get("eta") and not done:
            msg = f"{msg} (eta {p.info['eta']:.0f}s)"
        if self.tty:
            now = time.perf_counter()
            if not done and now - self._last < self.min_interval:
                return
            self._last = now
            bar = "#" * int(frac * self.width)
            line = f"\r{prefix}{stage:<10} |{bar:<{self.width}}| {frac:4.0%} {elapsed:6.1f}s {msg[:60]}"
            self.stream.write(line + "\x1b[K")
        else:
            decile = int(frac * 10)
            if done:
                self.stream.write(f"{prefix}{stage}: done in {elapsed:.1f}s\n")
            elif decile > self._decile or p.info.get("epoch_done"):
                self._decile = decile
                self.stream.write(f"{prefix}{stage}: {frac:.0%} {msg}\n")
        self.stream.flush()

    def _end_line(self) -> None:
        if self.tty and self.stage is not None:
            self.stream.write("\n")
            self.stream.flush()

    def close(self) -> None:
        self._end_line()
        self.stage = None


# -- arguments -----------------------------------------------------------------------------------
def _pair(text: str) -> tuple[int, int]:
    try:
        y, x = (int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected two integers 'Y,X', got {text!r}") from None
    if y < 1 or x < 1:
        raise argparse.ArgumentTypeError(f"scan shape must be positive, got {text!r}")
    return y, x


def _key(text: str) -> str:
    # a name stays a string, also "0": npz/HDF5/zarr members may be named with digits (rosettasciio files
    # take a string of digits as a signal index when no signal has that title)
    if not text:
        raise argparse.ArgumentTypeError("the key is empty")
    return text


def _reader_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("reader options")
    g.add_argument("--key", type=_key, metavar="NAME",
                   help="array name (.npz), dataset path (HDF5/zarr) or signal index/title")
    g.add_argument("--nav-shape", type=_pair, metavar="Y,X", help="scan shape for a flat stack of frames")
    g.add_argument("--cube", type=int, metavar="I", help="which 4-D cube of a 5-D file")
    g.add_argument("--nan-policy", choices=("raise", "ignore"), help="NaN/Inf in the sampled frames (default raise)")
    g.add_argument("--fill-missing", action="store_true",
                   help="read chunks or virtual sources the file lacks as the fill value (default: refuse)")
    g.add_argument("--allow-outside", action="store_true",
                   help="read HDF5 external / virtual sources outside the file's folder (default: refuse)")
    g.add_argument("--force-axes", action="store_true",
                   help="read a cube whose axes are not (scan, scan, detector, detector) as if they were")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="4D-STEM analysis: COM/DPC, virtual detectors, rrVAE.")
    from . import __version__

    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    a = sub.add_parser("analyze", help="load, preprocess, COM, virtual images, rrVAE -> one results file",
                       description="Run the GUI's workflow headless and write one results file (docs/results.md).")
    a.add_argument("input", help="4D-STEM file (see docs/readers.md)")
    a.add_argument("--out", "-o", required=True, metavar="RESULTS.h5", help="results file to write")
    a.add_argument("--config", metavar="params.toml", help="parameters: [load] [preprocess] [com] [virtual] [rrvae] [zernike]")
    a.add_argument("--epochs", type=int, metavar="N", help="rrVAE epochs (default: the mode's)")
    a.add_argument("--latent-dim", type=int, metavar="K", help="rrVAE content latents (default 2)")
    mode = a.add_mutually_exclusive_group()
    mode.add_argument("--fast", dest="mode", action="store_const", const="fast", help="fast rrVAE mode (CPU)")
    mode.add_argument("--faithful", dest="mode", action="store_const", const="faithful",
                      help="the paper's rrVAE settings (default)")
    a.add_argument("--seed", type=int, metavar="S", help="random seed (rrVAE, randomized PCA)")
    a.add_argument("--defect-models", metavar="N", type=_defect_models_arg,
                   help="rrVAE models averaged in the outlier (defect) map; default auto: 3 for noisy scans in the "
                        "fast mode, else 1 (docs/rrvae.md)")
    a.add_argument("--no-rrvae", action="store_true", help="skip the rrVAE (maps and COM only)")
    a.add_argument("--zernike", action="store_true",
                   help="Zernike motifs: classes, class averages, outlier map (/zernike; [zernike] in --config)")
    a.add_argument("--overwrite", action="store_true", help="replace an existing results file")
    a.add_argument("--quiet", "-q", action="store_true", help="no progress output")
    a.add_argument("--debug", action="store_true", help="show tracebacks")
    # -- scheduler option (executor) --
    a.add_argument("--scheduler", metavar="tcp://HOST:PORT|local:N",
                   help="run the pass over the data on a Dask cluster: a running scheduler's address, or local:N "
                        "to start N worker processes here (docs/analysis.md)")
    # -- end scheduler option --
    _reader_options(a)

    i = sub.add_parser("info", help="print shape, dtype, size, calibration and provenance of a file")
    i.add_argument("input")
    i.add_argument("--json", action="store_true", help="machine-readable output")
    i.add_argument("--debug", action="store_true", help="show tracebacks")
    _reader_options(i)

    e = sub.add_parser("export", help="export the maps of a results file to TIFF, PNG and/or HyperSpy .hspy",
                       description="One file per map and format, with scale and units (docs/results.md).")
    e.add_argument("results", help="results file written by analyze or the GUI")
    e.add_argument("--to", required=True, metavar="FOLDER", help="output folder (created if missing)")
    e.add_argument("--format", default="tif,png", help="comma-separated: tif, png, hspy (default tif,png)")
    e.add_argument("--maps", help="comma-separated map names, e.g. com/magnitude,rrvae/latents (default all)")
    e.add_argument("--overwrite", action="store_true", help="replace existing files")
    e.add_argument("--debug", action="store_true", help="show tracebacks")

    d = sub.add_parser("demo", help="open napari with the sample and the plugin's docks")
    d.add_argument("--screenshot", metavar="PATH", help="save a screenshot and quit")
    d.add_argument("--epochs", type=int, metavar="N", help="train the rrVAE for N epochs first")
    d.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser


def _load_options(args) -> dict:
    opts = {k: v for k, v in (("key", args.key), ("nav_shape", args.nav_shape), ("cube", args.cube),
                              ("nan_policy", getattr(args, "nan_policy", None))) if v is not None}
    for flag in ("fill_missing", "allow_outside", "force_axes"):
        if getattr(args, flag, False):
            opts[flag] = True
    return opts


def analyze_params(args) -> dict:
    """Parameters for :func:`napari_4dstem.pipeline.analyze` from the config file and the flags (flags win)."""
    from .pipeline import load_config

    cfg = load_config(args.config) if args.config else {}
    cfg = {k: dict(v) for k, v in cfg.items()}
    cfg.setdefault("load", {}).update(_load_options(args))
    rr = cfg.setdefault("rrvae", {})
    for flag, name in (("epochs", "epochs"), ("latent_dim", "latent_dim"), ("mode", "mode"), ("seed", "seed")):
        v = getattr(args, flag)
        if v is not None:
            rr[name] = v
    if args.seed is not None:
        cfg.setdefault("preprocess", {})["random_state"] = args.seed
    if args.no_rrvae:
        cfg["run_rrvae"] = False
    if getattr(args, "zernike", False):  # zernike branch
        cfg["run_zernike"] = True
    if getattr(args, "defect_models", None) is not None:
        cfg["defect_models"] = args.defect_models
    return cfg


def _defect_models_arg(text: str):
    if text == "auto":
        return text
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give 'auto' or a whole number >= 1")
    return n


# -- commands ------------------------------------------------------------------------------------
def cmd_analyze(args) -> int:
    from .params import ASSUMED_READ_BYTES_PER_S, check_fits, check_params, estimate, merge_params
    from .pipeline import analyze
    from .results import check_output, preflight_output

    params = analyze_params(args)
    merged = merge_params(params)
    check_params(merged)  # every parameter, before anything is opened
    out = Path(args.out)
    src = Path(args.input)
    from .io.checks import check_path

    check_path(src.expanduser())
    check_output(args.out, overwrite=args.overwrite, what="results file", sources=[str(src)])  # keeps a final "/"
    from .io import load

    ds = load(args.input, **params.get("load", {}))  # lazy; unreadable input fails before any progress output
    try:
        check_fits(ds, merged)  # the preprocessed stack fits, the scan is large enough: before the first pass
        files = ds.provenance.files or [str(src)]
        preflight_output(out, overwrite=args.overwrite, sources=files,
                         nbytes=estimate(ds, merged)["results_bytes"])  # fail now, not after an hour of training
    except BaseException:
        ds.close()
        raise
    # -- scheduler option (executor) --
    client = cluster = None
    if getattr(args, "scheduler", None):
        from .executor import connect

        try:
            client, cluster = connect(args.scheduler)
        except BaseException:
            ds.close()
            raise
    # -- end scheduler option --
    if not args.quiet:
        e = estimate(ds, merged)
        h, w = e["preprocessed_detector"]
        print(f"{PROG}: {ds.nbytes / 2**30:.3g} GiB of data, about {e['passes']} pass{'es' if e['passes'] != 1 else ''} over it "
              f"(~{e['read_seconds']:.0f} s of reading at {ASSUMED_READ_BYTES_PER_S // 2**20} MiB/s); "
              f"preprocessed stack {e['positions']} x {h} x {w} "
              f"= {e['preprocessed_bytes'] / 2**20:.1f} MiB", file=sys.stderr)
    printer = None if args.quiet else TextProgress()
    try:
        results = analyze(ds, params, out=out, overwrite=args.overwrite, callback=printer, client=client)
    finally:
        if printer is not None:
            printer.close()
        ds.close()
        for c in (client, cluster):  # scheduler option
            if c is not None:
                c.close()
    if args.quiet:
        for w in results.info.get("warnings", []):
            print(f"{PROG}: warning: {w}", file=sys.stderr)
    n = len(results.maps)
    best = results.info.get("rrvae_best_epoch")
    extra = f", rrVAE best epoch {best}" if best is not None else ""
    print(f"wrote {out} ({n} maps{extra})")
    return 0


def describe(ds) -> dict:
    """What ``info`` prints, as a JSON-able dict."""
    from .results import source_provenance

    prov = ds.provenance.to_dict()
    return {
        "name": ds.name,
        "shape": list(ds.shape),
        "axes": ["scan_y", "scan_x", "det_y", "det_x"],
        "dtype": str(ds.dtype),
        "size_bytes": ds.nbytes,
        "calibration": ds.calibration.to_dict(),
        "provenance": prov,
        "source": source_provenance(prov.get("source_path"), data_file=prov.get("data_file"),
                                    files=prov.get("files")),
    }


def _is_results_file(path) -> bool:
    import os
    import stat

    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return False  # FIFOs, folders, devices: the data reader refuses them without opening
        import h5py

        if not h5py.is_hdf5(path):
            return False
        with h5py.File(path, "r") as f:
            # either attribute makes it a results file: load_results then says what is wrong with it
            return "schema_version" in f.attrs or "format" in f.attrs
    except Exception:  # noqa: BLE001 - not HDF5, missing, ...: the data reader gives the message
        return False


def results_summary(path) -> dict:
    """What ``info`` prints for a results file."""
    from .results import load_results

    r = load_results(path)
    return {"results_file": str(path), "schema_version": r.schema_version, "dataset_shape": list(r.shape),
            "dataset_dtype": r.dtype, "source": r.provenance.get("path") or r.provenance.get("source_path"),
            "maps": {k: {"shape": list(v.shape), "units": r.units.get(k, "")} for k, v in sorted(r.maps.items())},
            "epochs": len(r.history), "checkpoints": sorted(r.checkpoints), "info": r.info, "versions": r.versions}


def cmd_info(args) -> int:
    from .io import load

    if _is_results_file(args.input):
        d = results_summary(args.input)
        if args.json:
            print(json.dumps(d, indent=2, default=str))
            return 0
        print(f"{args.input}: napari-4dstem results (schema {d['schema_version']})")
        print(f"  dataset     {tuple(d['dataset_shape'])} {d['dataset_dtype']} from {d['source']}")
        for k, m in d["maps"].items():
            print(f"  {k:<22} {tuple(m['shape'])} {m['units']}")
        print(f"  rrVAE       {d['epochs']} epochs, checkpoints {d['checkpoints'] or 'none'}, "
              f"best epoch {d['info'].get('rrvae_best_epoch')}")
        for w in d["info"].get("warnings", []):
            print(f"  warning     {w}")
        return 0
    ds = load(args.input, **_load_options(args))
    try:
        d = describe(ds)
    finally:
        ds.close()
    if args.json:
        print(json.dumps(d, indent=2, default=str))
        return 0
    gib = d["size_bytes"] / 2**30
    print(f"{args.input}")
    print(f"  shape       {tuple(d['shape'])}  (scan_y, scan_x, det_y, det_x)")
    print(f"  dtype       {d['dtype']}")
    print(f"  size        {gib:.3g} GiB in memory" + (f", {d['source']['size'] / 2**30:.3g} GiB on disk"
                                                      if d["source"].get("size") else ""))
    print(f"  reader      {d['provenance']['reader']}")
    print("  calibration")
    for k, v in d["calibration"].items():
        print(f"    {k:<28} {'unknown' if v is None or v == [None, None] else v}")
    if d["provenance"].get("options"):
        print(f"  options     {d['provenance']['options']}")
    for note in d["provenance"].get("notes") or []:
        print(f"  note        {note}")
    if len(src_files := d["source"].get("files") or []) > 1:
        for f in src_files:
            print(f"  file read   {f['path']} ({f['size']} bytes)")
    src = d["source"]
    if src.get("header_sha256"):
        what = (f"first {src['header_bytes']} bytes" if "header_bytes" in src
                else f"metadata files {', '.join(src.get('header_files', []))}")
        if src.get("data_file"):
            what += f" of {src['data_file']}"
        print(f"  sha256 of {what}  {src['header_sha256']}")
    return 0


def cmd_export(args) -> int:
    from .errors import DataError
    from .export import FORMATS, export_results
    from .results import load_results

    formats = [f.strip().lstrip(".").lower() for f in args.format.split(",") if f.strip()]
    bad = [f for f in formats if f".{f}" not in FORMATS]
    if bad or not formats:
        raise DataError(f"unknown export format(s) {bad or args.format!r}", hint="use tif, png and/or hspy")
    from .io.checks import check_path

    check_path(Path(args.results), "results file", folder_ok=False)
    if Path(args.to).exists() and not Path(args.to).is_dir():
        raise DataError("--to is a file, not a folder", path=args.to, hint="give a folder for the exported maps")
    r = load_results(args.results)
    keys = [k.strip() for k in args.maps.split(",")] if args.maps else None
    out = export_results(r, args.to, formats=formats, keys=keys, overwrite=args.overwrite)
    print(f"wrote {len(out)} files to {args.to}")
    return 0


def cmd_demo(args) -> int:
    try:
        from .gui.demo import run_demo
    except ImportError as e:
        raise FourDSTEMError(f"the demo needs the GUI (napari and a Qt binding), which could not be imported ({e})",
                             hint='install them: pip install "napari-4dstem[all]"') from None
    run_demo(screenshot=args.screenshot, epochs=args.epochs)
    return 0


COMMANDS = {"analyze": cmd_analyze, "info": cmd_info, "export": cmd_export, "demo": cmd_demo}


def _error(msg: str) -> None:
    print(f"{PROG}: error: {msg}", file=sys.stderr)


# the core's hints name Python keywords; on the command line they are flags (always shown with a value)
_FLAGS = {"key": ("--key", "NAME"), "cube": ("--cube", "I"), "nav_shape": ("--nav-shape", "SCAN_Y,SCAN_X"),
          "nan_policy": ("--nan-policy", "ignore"), "fill_missing": ("--fill-missing", None),
          "allow_outside": ("--allow-outside", None), "force_axes": ("--force-axes", None),
          "overwrite": ("--overwrite", None)}


def _cli_words(msg: str) -> str:
    import re

    msg = re.sub(r"nav_shape=\((\d+), (\d+)\)", r"--nav-shape \1,\2", msg)
    msg = re.sub(r"nav_shape=\(scan_y, scan_x\)", "--nav-shape SCAN_Y,SCAN_X", msg)
    msg = re.sub(r"\bnav_shape \((\d+), (\d+)\)", r"--nav-shape \1,\2", msg)
    msg = msg.replace("overwrite=True (--overwrite)", "--overwrite")

    def flag(m):
        name, value = m.group(1), m.group(2)
        opt, placeholder = _FLAGS[name]
        if placeholder is None:  # a switch: "fill_missing=True" -> "--fill-missing"
            return opt
        return f"{opt} {value or placeholder}"

    names = "|".join(_FLAGS)
    return re.sub(rf"\b({names})=('[^']*'|[\w\-.]*)", flag, msg)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``napari-4dstem`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    debug = getattr(args, "debug", False)
    _one_line_warnings(debug)
    old_term = _on_sigterm()
    writes = "; no results file was written" if args.command == "analyze" else ""
    try:
        return COMMANDS[args.command](args)
    except BrokenPipeError:
        _quiet_stdout()  # `... | head`: the reader left; stop quietly
        return 0
    except Terminated:
        _error("terminated" + writes)
        return 143
    except KeyboardInterrupt:
        _error("interrupted" + writes)
        return 130
    except FourDSTEMError as e:
        if debug:
            traceback.print_exc()
        _error(_cli_words(str(e)))
        return 1
    except MemoryError:
        if debug:
            traceback.print_exc()
        _error("out of memory -> bin the detector ([preprocess] target_size) or crop the scan (crop_scan)")
        return 1
    except OSError as e:
        if debug:
            traceback.print_exc()
        where = f"{e.filename}: " if getattr(e, "filename", None) else ""
        _error(f"{where}{e.strerror or e} -> check the path, its permissions and the free space")
        return 1
    except Exception as e:  # noqa: BLE001 - the CLI promises one readable line, not a traceback
        if debug:
            traceback.print_exc()
        _error(f"unexpected {type(e).__name__}: {e} (run with --debug for details and please report it)")
        return 1
    finally:
        _restore_sigterm(old_term)
        from .results import release_outputs

        release_outputs()  # a reserved temporary file the analysis did not use


def _one_line_warnings(debug: bool) -> None:
    """Python warnings as one line each on stderr (``--debug``: with their source)."""
    import warnings

    if debug:
        return

    def show(message, category, filename, lineno, file=None, line=None):
        stream = file or sys.stderr
        try:
            stream.write(f"{PROG}: warning: {str(message).splitlines()[0] if str(message) else category.__name__}\n")
        except (OSError, ValueError):
            pass

    warnings.showwarning = show
    warnings.filterwarnings("ignore", category=RuntimeWarning, module="numpy")  # the checks say what is wrong


def _quiet_stdout() -> None:
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # Python's flush at exit must not fail again
    except (OSError, ValueError, AttributeError):
        pass


def _raise_terminated(signum, frame):
    raise Terminated()


def _on_sigterm():
    try:
        return signal.signal(signal.SIGTERM, _raise_terminated)
    except ValueError:  # not the main thread
        return None


def _restore_sigterm(old) -> None:
    if old is not None:
        try:
            signal.signal(signal.SIGTERM, old)
        except ValueError:
            pass


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
