"""One folder of wheels for the GPU machine that holds both sets of fetch-wheels.sh (`gpu` and `ray`).

    python benchmarks/device/slim_wheels.py --gpu .whl --ray /tmp/whl_ray --out .whl_all

A run on the GPU machine carries at most 64 MiB of working tree, and the two sets together are about
81 MiB, so a scoring run with GPU decode under Ray or MPI could not have both. This script rewrites
the three largest wheels without what a batch job never loads, copies the rest as they are, and
checks the result fits beside the repository's tracked files (about 11 MB by session 15, most of it
committed results), leaving MARGIN_MIB:

- nvidia_nvimgcodec_cu13: only the CPython 3.12 extension module (the machine runs 3.12; the wheel
  carries one per Python), and no TIFF, JPEG 2000 or OpenCV extensions: PNG and WebP rows then go to
  our CPU decoder, which is intended. nvJPEG, libjpeg-turbo, BMP and PNM stay.
- nvidia_cudnn_frontend: no DSL kernel packages (SDPA, GEMM, attention variants, MoE, ...), which
  `import cudnn` loads lazily on first use, and no C++ headers. `import cudnn` needs the compiled
  module, _pygraph -> engines, frost, and every top-level .py, which all stay, as do conv, ops and
  norm.
- ray: no Ray Data (`ray/data/`, 1.3 MiB), which the launchers never import (`ray.data` is a lazy
  attribute of `ray`). `EngineMapper` users run Ray Data from their own Ray install, and
  peer_raydata.py needs the whole `ray` set (fetch-wheels.sh ray) in a call of its own. Ray's
  programs get their executable bit back (restore_exec_bits).

A rewritten wheel keeps its file name; its RECORD loses the dropped files' lines, and it is zipped
again with deflate level 9. The peer benchmarks (peer_torch.py, peer_raydata.py) are copied too.
"""

from __future__ import annotations

import argparse
import csv
import io
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

CARRY_MIB = 64.0   # what the device tool carries: the tracked files plus the carried folders
MARGIN_MIB = 0.5   # for the files a session commits before its next call
LIMIT_MIB = 58.0   # where the repository's size cannot be read (not a git checkout)
PEERS = ("peer_torch.py", "peer_raydata.py")
SHARED_DEVICE = Path(__file__).resolve().parents[2].parent / "shared" / "device"  # where fetch-wheels.sh lives

_NVIMGCODEC_DROP = [
    re.compile(r"^nvidia/nvimgcodec/nvimgcodec_impl\.cpython-(?!312-)[^/]*\.so$"),  # other Pythons
    re.compile(r"^nvidia/nvimgcodec/extensions/(libnvtiff_ext|libtiff_ext|libnvjpeg2k_ext|libopencv_ext)[^/]*$"),
]
_CUDNN_DSL = ("sdpa", "gemm", "linear_attention", "deepseek_sparse_attention", "gated_attention_block", "moe_ep",
              "block_sparse_attention", "flex_attention", "hstu", "QSA", "native_sparse_attention",
              "triangle_attention", "triangle_multiplicative_update", "causal_conv1d_bulk_sm100", "csa", "gnn",
              "fla", "rope")
_CUDNN_DROP = [
    re.compile(r"^cudnn/(" + "|".join(map(re.escape, _CUDNN_DSL)) + r")/"),
    re.compile(r"^include/"),
]
_RAY_DROP = [re.compile(r"^ray/data/")]
RULES = {  # distribution name as in the wheel's file name -> paths to drop
    "nvidia_nvimgcodec_cu13": _NVIMGCODEC_DROP,
    "nvidia_cudnn_frontend": _CUDNN_DROP,
    "ray": _RAY_DROP,
}


class SlimError(Exception):
    """A missing or inconsistent input, or a result over the size limit."""


def distribution(wheel: Path) -> str:
    return wheel.name.split("-", 1)[0]


def _record_name(names: list[str]) -> str:
    records = [n for n in names if re.fullmatch(r"[^/]+\.dist-info/RECORD", n)]
    if len(records) != 1:
        raise SlimError(f"expected one .dist-info/RECORD in the wheel, found {records or 'none'}")
    return records[0]


def slim_wheel(src: Path, dst: Path, drop: list[re.Pattern]) -> tuple[int, int]:
    """Write src to dst without the members that match `drop` (directory entries under them too)
    and without their RECORD lines; return (members dropped, members kept)."""
    with zipfile.ZipFile(src) as zin:
        infos = zin.infolist()
        record = _record_name([i.filename for i in infos])

        def dropped(name: str) -> bool:  # a directory entry ("cudnn/sdpa/") matches its own rule
            return any(p.match(name) for p in drop)

        keep = [i for i in infos if not dropped(i.filename) and i.filename != record]
        gone = {i.filename for i in infos if dropped(i.filename)}
        lines = list(csv.reader(io.StringIO(zin.read(record).decode("utf-8"))))
        kept_lines = [row for row in lines if row and row[0] not in gone]
        listed = {row[0] for row in lines if row}
        missing = [n for n in gone if not n.endswith("/") and n not in listed]
        if missing:  # a RECORD that does not list a member: the wheel is not what this script expects
            raise SlimError(f"{src.name}: {len(missing)} dropped files are not in its RECORD, e.g. {missing[0]}")
        text = io.StringIO()
        csv.writer(text, lineterminator="\n").writerows(kept_lines)
        tmp = dst.with_name(f".{dst.name}.tmp")
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zout:
            for info in keep + [zin.getinfo(record)]:  # RECORD last, as wheel tools write it
                out = zipfile.ZipInfo(info.filename, info.date_time)
                out.external_attr = info.external_attr  # keeps the .so files' mode bits
                out.compress_type = zipfile.ZIP_STORED if info.is_dir() else zipfile.ZIP_DEFLATED
                data = text.getvalue().encode() if info.filename == record else zin.read(info)
                zout.writestr(out, data, compresslevel=9)
        tmp.replace(dst)
    return len(gone), len(keep) + 1


def _wheels(folder: Path, label: str) -> list[Path]:
    if not folder.is_dir():
        raise SlimError(f"--{label} {folder} is not a folder: fill it first with "
                        f"`../shared/device/fetch-wheels.sh {label} {folder}`")
    wheels = sorted(folder.glob("*.whl"))
    if not wheels:
        raise SlimError(f"--{label} {folder} holds no .whl files: run `../shared/device/fetch-wheels.sh {label} {folder}`")
    return wheels


def default_limit_mib(out: Path) -> float:
    """What the carried folder may hold: CARRY_MIB less the tracked files of the repository that
    holds `out` (or its parent) and MARGIN_MIB; LIMIT_MIB outside a git checkout."""
    where = out if out.is_dir() else out.parent
    try:
        top = Path(subprocess.run(["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True,
                                  check=True, cwd=where).stdout.strip())
        listed = subprocess.run(["git", "ls-files", "-z"], capture_output=True, check=True, cwd=top).stdout  # all of it
    except (OSError, subprocess.CalledProcessError):
        return LIMIT_MIB
    tracked = sum((top / name).stat().st_size for name in listed.decode().split("\0")
                  if name and (top / name).is_file())
    return round(CARRY_MIB - tracked / 2**20 - MARGIN_MIB, 1)


def combine(gpu: Path, ray: Path, out: Path, limit_mib: float = LIMIT_MIB) -> dict[str, int]:
    """Fill `out` with the wheels of both folders (one copy of a wheel found in both, the big two
    slimmed) and the peer scripts; return file name -> size in bytes."""
    by_name: dict[str, Path] = {}
    for label, folder in (("gpu", gpu), ("ray", ray)):
        for wheel in _wheels(folder, label):
            other = by_name.get(wheel.name)
            if other is not None and other.stat().st_size != wheel.stat().st_size:
                raise SlimError(f"{wheel.name} differs between {other.parent} and {folder}; fetch both sets again")
            by_name.setdefault(wheel.name, wheel)
    out.mkdir(parents=True, exist_ok=True)
    for stale in list(out.glob("*.whl")) + [out / p for p in PEERS]:  # the folder holds this set alone
        stale.unlink(missing_ok=True)
    sizes = {}
    for name, wheel in sorted(by_name.items()):
        dst = out / name
        drop = RULES.get(distribution(wheel))
        if drop is None:
            shutil.copyfile(wheel, dst)
        else:
            n_drop, n_keep = slim_wheel(wheel, dst, drop)
            print(f"{name}: dropped {n_drop} members, kept {n_keep}; "
                  f"{_mib(wheel.stat().st_size)} -> {_mib(dst.stat().st_size)}")
        if distribution(wheel) == "ray":
            slimmed = dst.with_name(f".{dst.name}.slim")
            dst.replace(slimmed)
            fixed = restore_exec_bits(slimmed, dst)
            slimmed.unlink()
            if fixed:
                print(f"{name}: executable bit restored on {fixed} programs")
        sizes[name] = dst.stat().st_size
    for peer in PEERS:
        src = next((d / peer for d in (gpu, ray, SHARED_DEVICE) if (d / peer).is_file()), None)
        if src is None:
            raise SlimError(f"{peer} is in none of {gpu}, {ray}, {SHARED_DEVICE}")
        shutil.copyfile(src, out / peer)  # copyfile: not the source's read-only mode
        sizes[peer] = (out / peer).stat().st_size
    total = sum(sizes.values())
    if total > limit_mib * 2**20:
        biggest = ", ".join(f"{n} {_mib(s)}" for n, s in sorted(sizes.items(), key=lambda kv: -kv[1])[:3])
        raise SlimError(f"{out} holds {_mib(total)}, over the {limit_mib:g} MiB limit (largest: {biggest})")
    return sizes


def restore_exec_bits(wheel: Path, dst: Path) -> int:
    """Copy `wheel` to `dst` with mode 0755 on every ELF program that is not a shared library.
    fetch-wheels.sh re-zips Ray from an extraction that dropped the modes, so its gcs_server and
    raylet come out 0644 and `ray.init()` fails with "Permission denied"."""
    fixed = 0
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as out:
        for info in src.infolist():
            data = src.read(info)
            name = info.filename.rsplit("/", 1)[-1]
            if data[:4] == b"\x7fELF" and ".so" not in name and not (info.external_attr >> 16) & 0o111:
                info.external_attr = (0o100755 << 16) | (info.external_attr & 0xFFFF)
                fixed += 1
            out.writestr(info, data)
    return fixed


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def exclude_from_git(out: Path) -> None:
    """Add the folder to .git/info/exclude when it lies inside this repository."""
    try:
        top = Path(subprocess.run(["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True,
                                  check=True, cwd=out).stdout.strip())
        rel = out.resolve().relative_to(top.resolve())
    except (OSError, subprocess.CalledProcessError, ValueError):
        return
    exclude = top / ".git" / "info" / "exclude"
    line = f"/{rel.as_posix()}/"
    present = exclude.read_text().splitlines() if exclude.is_file() else []
    if line not in present:
        exclude.parent.mkdir(parents=True, exist_ok=True)
        with exclude.open("a") as f:
            f.write(("" if not present or exclude.read_text().endswith("\n") else "\n") + line + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpu", type=Path, default=Path(".whl"), help="the `gpu` set (default .whl)")
    parser.add_argument("--ray", type=Path, required=True, help="the `ray` set, e.g. /tmp/whl_ray")
    parser.add_argument("--out", type=Path, default=Path(".whl_all"), help="the combined folder (default .whl_all)")
    parser.add_argument("--limit-mib", type=float, default=None,
                        help=f"largest size allowed (default: {CARRY_MIB:g} MiB less the repository's tracked files "
                             f"and {MARGIN_MIB:g} MiB)")
    args = parser.parse_args(argv)
    if args.limit_mib is None:
        args.limit_mib = default_limit_mib(args.out.resolve())
    try:
        sizes = combine(args.gpu, args.ray, args.out, args.limit_mib)
    except SlimError as exc:
        print(f"slim_wheels: error: {exc}", file=sys.stderr)
        return 1
    exclude_from_git(args.out)
    for name, size in sizes.items():
        print(f"  {size / 2**20:6.1f} MiB  {name}")
    total = sum(sizes.values())
    print(f"{args.out}: {len(sizes)} files, {_mib(total)} ({total:,} bytes; limit {args.limit_mib:g} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
