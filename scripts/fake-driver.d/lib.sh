# shellcheck shell=bash disable=SC2154,SC2034
# Shared by scripts/fake-driver and scripts/test-rootfs (sourced; the caller sets $prog;
# build_tree sets tree_state for it).

die() { echo "$prog: $*" >&2; exit 1; }

need_root() { [[ $EUID -eq 0 ]] || die "must run as root (mknod, chroot-able trees)"; }

need_tools() {
    local t
    for t in "$@"; do
        command -v "$t" >/dev/null || die "$t not found (Debian: apt-get install gcc libc6-dev python3 busybox-static)"
    done
}

# Identifies the generator: a hash of the calling script and everything in fake-driver.d.
script_version() {
    cat "$1" "$(dirname "${BASH_SOURCE[0]}")"/* | sha256sum | cut -c1-16
}

# build_tree OUTDIR STAMP BUILD_FN: runs BUILD_FN TMPDIR and renames TMPDIR to OUTDIR, unless
# OUTDIR/.stamp already holds STAMP. Builds of the same parent directory are serialised with
# flock, so concurrent callers (parallel tests) build once and all see a complete tree. An
# existing OUTDIR is replaced only if it is empty or was built by this generator. Sets
# tree_state to "built" or "up to date".
build_tree() {
    local out=$1 stamp=$2 fn=$3 parent base lock old
    parent=$(dirname "$out") base=$(basename "$out")
    mkdir -p "$parent"
    exec {lock}<"$parent"
    flock "$lock"
    tree_state="up to date"
    if [[ -f $out/.stamp && $(<"$out/.stamp") == "$stamp" ]]; then
        exec {lock}<&-
        return 0
    fi
    tree_state=built
    if [[ -e $out && ! -f $out/.stamp ]] && [[ ! -d $out || -n $(ls -A "$out") ]]; then
        die "$out exists and was not built by $prog; refusing to replace it"
    fi
    build_tmp=$(mktemp -d "$parent/.$base.tmp.XXXXXX")
    trap 'rm -rf --one-file-system "$build_tmp"' EXIT
    chmod 755 "$build_tmp"
    "$fn" "$build_tmp"
    printf '%s\n' "$stamp" >"$build_tmp/.stamp"
    if [[ -e $out ]]; then
        old=$(mktemp -d "$parent/.$base.old.XXXXXX")
        mv -T "$out" "$old/tree"
    fi
    mv -T "$build_tmp" "$out"
    trap - EXIT
    [[ -z ${old:-} ]] || rm -rf --one-file-system "$old"
    exec {lock}<&-
}
