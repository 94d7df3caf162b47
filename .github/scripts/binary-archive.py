"""Packs the goldset binary that a wheel carries into the release archive for one target.

    python .github/scripts/binary-archive.py DIST TAG TARGET

DIST holds exactly one goldset wheel (maturin `bindings = "bin"`: the binary is
goldset-VERSION.data/scripts/goldset, or goldset.exe). Writes DIST/goldset-TAG-TARGET.tar.gz
(goldset.zip on Windows) holding goldset-TAG-TARGET/{goldset,README.md}, and a .sha256 beside it.
The released binary is the wheel's own: the same build, manylinux-compatible and stripped.
"""

import glob
import hashlib
import io
import os
import sys
import tarfile
import time
import zipfile


def main() -> None:
    dist, tag, target = sys.argv[1:]
    wheels = glob.glob(os.path.join(dist, "goldset-*.whl"))
    if len(wheels) != 1:
        sys.exit(f"expected one goldset wheel in {dist}, found {wheels}")
    with zipfile.ZipFile(wheels[0]) as wheel:
        names = [n for n in wheel.namelist() if n.split("/")[-2:-1] == ["scripts"]
                 and os.path.basename(n) in ("goldset", "goldset.exe")]
        if len(names) != 1:
            sys.exit(f"{wheels[0]}: no single goldset binary under .data/scripts/: {names}")
        exe = os.path.basename(names[0])
        binary = wheel.read(names[0])
    readme = open("README.md", "rb").read()
    stem = f"goldset-{tag}-{target}"
    if exe.endswith(".exe"):
        archive = os.path.join(dist, f"{stem}.zip")
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr(f"{stem}/{exe}", binary)
            z.writestr(f"{stem}/README.md", readme)
    else:
        archive = os.path.join(dist, f"{stem}.tar.gz")
        with tarfile.open(archive, "w:gz") as tar:
            for name, data, mode in ((exe, binary, 0o755), ("README.md", readme, 0o644)):
                info = tarfile.TarInfo(f"{stem}/{name}")
                info.size, info.mode, info.mtime = len(data), mode, int(time.time())
                tar.addfile(info, io.BytesIO(data))
    digest = hashlib.sha256(open(archive, "rb").read()).hexdigest()
    with open(archive + ".sha256", "w") as f:
        f.write(f"{digest}  {os.path.basename(archive)}\n")
    print(f"{archive} ({os.path.getsize(archive)} bytes) sha256 {digest}")


if __name__ == "__main__":
    main()
