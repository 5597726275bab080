#!/usr/bin/env python3
"""Builds the test images from Debian's busybox-static, without any registry.

Called by scripts/test-material as `test_material_images.py OUT_DIR ROOTFS_DIR`. Writes into
OUT_DIR:
  busybox-oci.tar     OCI image layout archive for `ctr image import`
  busybox-docker.tar  docker-archive (manifest.json) for `docker load` (dockerd 20.10 cannot
                      load OCI layouts)
  pause-oci.tar       CRI sandbox image: same layer, a command that stays alive and exits 0 on
                      SIGTERM/SIGINT (SIGKILL ends it anyway)
  glibc-oci.tar, glibc-docker.tar
                      the glibc test rootfs (ROOTFS_DIR, from scripts/test-rootfs: a dynamic
                      loader, ldconfig and cuda-probe) as one layer, for GPU tests through engines
  images.json         image references and file names, read by integration/src/engines.rs

Output is byte-for-byte deterministic (fixed mtimes, owners and order), so digests are stable
and the files are rewritten only when the inputs change.
"""

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile

BUSYBOX = "/bin/busybox"
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
BUSYBOX_REF = "gytest.local/busybox:latest"
PAUSE_REF = "gytest.local/pause:latest"
GLIBC_REF = "gytest.local/glibc:latest"
# Exits 0 on TERM/INT; `wait` is interruptible, unlike a foreground sleep. Pid 1 ignores
# signals without a handler, hence the trap. The orphaned sleep dies with the pid namespace.
PAUSE_CMD = ["/bin/sh", "-c", "trap 'exit 0' TERM INT; sleep 2147483647 & wait"]


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def layer_tar():
    """A rootfs layer: busybox, one symlink per applet, minimal /etc."""
    applets = subprocess.run(
        [BUSYBOX, "--list-full"], check=True, capture_output=True, text=True
    ).stdout.split()
    dirs = {"bin", "dev", "etc", "proc", "root", "sys", "tmp", "var", "sbin", "usr",
            "usr/bin", "usr/sbin"}
    for a in applets:
        parent = os.path.dirname(a)
        while parent:
            dirs.add(parent)
            parent = os.path.dirname(parent)
    files = {
        "etc/passwd": b"root:x:0:0:root:/root:/bin/sh\n"
                      b"nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
        "etc/group": b"root:x:0:\nnogroup:x:65534:\n",
    }
    with open(BUSYBOX, "rb") as f:
        busybox = f.read()

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        def add(name, kind, mode, data=b"", target=""):
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.mtime = kind, mode, 0
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            info.linkname = target
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data else None)

        for d in sorted(dirs):
            add(d, tarfile.DIRTYPE, 0o1777 if d == "tmp" else 0o755)
        add("bin/busybox", tarfile.REGTYPE, 0o755, busybox)
        for name, data in sorted(files.items()):
            add(name, tarfile.REGTYPE, 0o644, data)
        for a in sorted(set(applets) - {"bin/busybox"}):
            add(a, tarfile.SYMTYPE, 0o777, target="/bin/busybox")
    return buf.getvalue()


def directory_layer(root):
    """A layer holding the tree under `root` (files, directories, symlinks; hard links become
    copies), with the same fixed owners and mtimes as the busybox layer."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for name in sorted(dirnames) + sorted(filenames):
                path = os.path.join(dirpath, name)
                rel = os.path.relpath(path, root)
                if rel == ".stamp":
                    continue
                info = tar.gettarinfo(path, arcname=rel)
                if info.type == tarfile.LNKTYPE:
                    info.type, info.linkname = tarfile.REGTYPE, ""
                    info.size = os.path.getsize(path)
                info.mtime, info.uid, info.gid = 0, 0, 0
                info.uname = info.gname = "root"
                if info.isreg():
                    with open(path, "rb") as f:
                        tar.addfile(info, f)
                else:
                    tar.addfile(info)
    return buf.getvalue()


def image_config(layer_digest, container_config):
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": dict(container_config, Env=[PATH_ENV], WorkingDir="/"),
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + layer_digest]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "scripts/test-material"}],
    }
    return json.dumps(config, sort_keys=True).encode()


def write_archive(path, members):
    """A deterministic tar of (name, bytes) pairs, written atomically."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        names = set()
        for name, data in members:
            parent = os.path.dirname(name)
            while parent and parent not in names:
                names.add(parent)
                info = tarfile.TarInfo(parent)
                info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
                tar.addfile(info)
                parent = os.path.dirname(parent)
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    atomic_write(path, buf.getvalue())


def atomic_write(path, data):
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def oci_archive(path, ref, layer, config):
    """OCI image layout; `io.containerd.image.name` gives ctr the full reference."""
    layer_d, config_d = sha256(layer), sha256(config)
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": "sha256:" + config_d, "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": "sha256:" + layer_d, "size": len(layer)}],
    }, sort_keys=True).encode()
    index = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": "sha256:" + sha256(manifest), "size": len(manifest),
            "platform": {"architecture": "amd64", "os": "linux"},
            "annotations": {"io.containerd.image.name": ref,
                            "org.opencontainers.image.ref.name": ref.rsplit(":", 1)[1]},
        }],
    }, sort_keys=True).encode()
    write_archive(path, [
        ("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'),
        ("index.json", index),
        ("blobs/sha256/" + layer_d, layer),
        ("blobs/sha256/" + config_d, config),
        ("blobs/sha256/" + sha256(manifest), manifest),
    ])


def docker_archive(path, ref, layer, config):
    """The `docker save` format that dockerd 20.10 loads."""
    layer_d, config_d = sha256(layer), sha256(config)
    manifest = json.dumps([{"Config": config_d + ".json", "RepoTags": [ref],
                            "Layers": [layer_d + "/layer.tar"]}]).encode()
    write_archive(path, [
        ("manifest.json", manifest),
        (config_d + ".json", config),
        (layer_d + "/layer.tar", layer),
    ])


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    layer = layer_tar()
    digest = sha256(layer)
    busybox_config = image_config(digest, {"Cmd": ["sh"]})
    pause_config = image_config(digest, {"Entrypoint": PAUSE_CMD})
    oci_archive(os.path.join(out, "busybox-oci.tar"), BUSYBOX_REF, layer, busybox_config)
    docker_archive(os.path.join(out, "busybox-docker.tar"), BUSYBOX_REF, layer, busybox_config)
    oci_archive(os.path.join(out, "pause-oci.tar"), PAUSE_REF, layer, pause_config)
    glibc_layer = directory_layer(sys.argv[2])
    glibc_config = image_config(sha256(glibc_layer), {"Cmd": ["sh"]})
    oci_archive(os.path.join(out, "glibc-oci.tar"), GLIBC_REF, glibc_layer, glibc_config)
    docker_archive(os.path.join(out, "glibc-docker.tar"), GLIBC_REF, glibc_layer, glibc_config)
    atomic_write(os.path.join(out, "images.json"), json.dumps({
        "busybox": {"ref": BUSYBOX_REF, "oci": "busybox-oci.tar", "docker": "busybox-docker.tar"},
        "pause": {"ref": PAUSE_REF, "oci": "pause-oci.tar"},
        "glibc": {"ref": GLIBC_REF, "oci": "glibc-oci.tar", "docker": "glibc-docker.tar"},
    }, indent=2, sort_keys=True).encode() + b"\n")


if __name__ == "__main__":
    main()
