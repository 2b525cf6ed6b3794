#!/usr/bin/env bash
# Provisions NVIDIA Triton Inference Server 2.51.0 (CPU only, Python backend)
# and NVIDIA's perf_analyzer 2.41.1 into target/triton, from PyPI alone:
#
#   conformance/triton/provision.sh      # idempotent; seconds when done
#   source target/triton/env.sh          # the paths below, exported
#
# What it makes under target/triton:
#   venv/          python3 venv with nvidia-pytriton 0.7.0 + numpy
#                  (conformance/triton/requirements.txt). The tritonserver
#                  binary is venv/.../site-packages/pytriton/tritonserver/bin/
#                  tritonserver, its libraries are in .../nvidia_pytriton.libs.
#   backends/python/  the Python backend, laid out as Triton's
#                  --backend-directory wants it: libtriton_python.so,
#                  triton_python_backend_utils.py and the
#                  triton_python_backend_stub built for this venv's Python.
#   perf-venv/     tritonclient 2.41.1 (--no-deps) + nvidia-cuda-runtime-cu12
#                  (conformance/triton/perf-requirements.txt): bin/perf_analyzer.
#   lib/           libb64.so.0d for perf_analyzer: a link to the copy that
#                  nvidia-pytriton bundles (Debian's libb64-0d works as well).
#   bin/tritonserver, bin/perf_analyzer
#                  wrappers that set the environment below and exec the real
#                  binaries; tritonserver's wrapper also passes
#                  --backend-directory and --cache-directory.
#   env.sh         the exports below.
#
# Environment (written to env.sh):
#   TRITON_HOME                   target/triton, absolute.
#   TRITONSERVER                  the wrapper; use this one.
#   TRITONSERVER_BIN              the real binary. It finds its own libraries
#                                 by RPATH ($ORIGIN/../../../nvidia_pytriton.libs).
#   TRITON_BACKEND_DIR            for --backend-directory (has python/).
#   TRITON_CACHE_DIR              for --cache-directory (the local response
#                                 cache; only used when a cache is enabled).
#   TRITON_LD_LIBRARY_PATH        LD_LIBRARY_PATH for tritonserver: the copied
#                                 stub and libtriton_python.so lose their
#                                 $ORIGIN-relative RPATH to nvidia_pytriton.libs
#                                 (libcudart-*.so.12.6.77 and others), so that
#                                 folder goes first; then the venv base
#                                 interpreter's LIBDIR, so that the stub embeds
#                                 the same libpython3.X.so.1.0 as the venv's
#                                 python3 (else Debian's libpython3.11).
#   TRITON_PYTHON_BIN             must be first on PATH for tritonserver: the
#                                 stub takes its sys.prefix (so numpy and the
#                                 models' imports) from the first python3 on
#                                 PATH. Without it the stub finds no numpy and
#                                 the model fails to load.
#   PERF_ANALYZER                 the wrapper; use this one.
#   PERF_ANALYZER_BIN             the real binary.
#   PERF_ANALYZER_LD_LIBRARY_PATH LD_LIBRARY_PATH for it: lib/ (libb64.so.0d)
#                                 and nvidia-cuda-runtime-cu12's lib
#                                 (libcudart.so.12).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
root=$PWD
home=$root/target/triton
venv=$home/venv
perf_venv=$home/perf-venv
mkdir -p "$home"
# One provisioning at a time: CI starts the Triton peer and the differential
# probe together, and two pips making one venv break each other.
exec 9>"$home/provision.lock"
flock 9

# install_venv VENV REQUIREMENTS [PIP-ARG...]: VENV with REQUIREMENTS, unless
# it was made from this very file (a copy is kept as VENV/requirements.txt).
install_venv() {
  local venv=$1 requirements=$2
  shift 2
  if [ -x "$venv/bin/python" ] && cmp -s "$requirements" "$venv/requirements.txt"; then
    return 0
  fi
  echo "installing $requirements into $venv"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "$@" -r "$requirements"
  cp "$requirements" "$venv/requirements.txt"
}

# The stubs pytriton ships are for Python 3.8 to 3.13; the machine's python3
# (3.11 here) picks which one.
python3 -c 'import sys; sys.exit(not (3, 8) <= sys.version_info[:2] <= (3, 13))' || {
  echo "python3 $(python3 -V) has no Triton Python backend stub in nvidia-pytriton 0.7.0 (3.8-3.13)" >&2
  exit 1
}

install_venv "$venv" conformance/triton/requirements.txt
install_venv "$perf_venv" conformance/triton/perf-requirements.txt --no-deps

site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
pyver=$("$venv/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
pylibdir=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR") or "")')
dist=$site/pytriton/tritonserver
libs=$site/nvidia_pytriton.libs
tritonserver_bin=$dist/bin/tritonserver

# The backend directory: pytriton's own lay-out, as pytriton builds it at run
# time (the Python backend plus the stub for this Python, side by side).
mkdir -p "$home/backends/python"
cp -f "$dist/backends/python/libtriton_python.so" "$dist/backends/python/triton_python_backend_utils.py" \
  "$dist/python_backend_stubs/$pyver/triton_python_backend_stub" "$home/backends/python/"

server_ld=$libs
if [ -n "$pylibdir" ] && [ -e "$pylibdir/libpython$pyver.so.1.0" ]; then
  server_ld=$server_ld:$pylibdir
fi
for f in "$tritonserver_bin" "$home/backends/python/libtriton_python.so" "$home/backends/python/triton_python_backend_stub"; do
  if LD_LIBRARY_PATH=$server_ld ldd "$f" | grep 'not found' >&2; then
    echo "$f: libraries missing (for libpython$pyver.so.1.0: apt-get install libpython$pyver)" >&2
    exit 1
  fi
done

# perf_analyzer: libcudart.so.12 from nvidia-cuda-runtime-cu12, libb64.so.0d
# from the copy nvidia-pytriton bundles (auditwheel renamed it; the link gives
# it back the name perf_analyzer asks for).
perf_site=$("$perf_venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
perf_bin=$perf_venv/bin/perf_analyzer
cudart=$perf_site/nvidia/cuda_runtime/lib
b64=("$libs"/libb64-*.so.0d)
mkdir -p "$home/lib"
ln -sfn "${b64[0]}" "$home/lib/libb64.so.0d"
perf_ld=$home/lib:$cudart
if LD_LIBRARY_PATH=$perf_ld ldd "$perf_bin" | grep 'not found' >&2; then
  echo "$perf_bin: libraries missing" >&2
  exit 1
fi

mkdir -p "$home/bin"
cat >"$home/bin/tritonserver" <<EOF
#!/usr/bin/env bash
# Made by conformance/triton/provision.sh: Triton 2.51.0 with the Python
# backend; arguments are passed on (a later --backend-directory wins).
export LD_LIBRARY_PATH=$server_ld\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}
export PATH=$venv/bin:\$PATH
exec $tritonserver_bin --backend-directory $home/backends --cache-directory $dist/caches "\$@"
EOF
cat >"$home/bin/perf_analyzer" <<EOF
#!/usr/bin/env bash
# Made by conformance/triton/provision.sh: NVIDIA perf_analyzer 2.41.1.
export LD_LIBRARY_PATH=$perf_ld\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}
exec $perf_bin "\$@"
EOF
chmod +x "$home/bin/tritonserver" "$home/bin/perf_analyzer"

cat >"$home/env.sh" <<EOF
# Made by conformance/triton/provision.sh; conformance/triton/provision.sh
# says what each one is for.
export TRITON_HOME=$home
export TRITONSERVER=$home/bin/tritonserver
export TRITONSERVER_BIN=$tritonserver_bin
export TRITON_BACKEND_DIR=$home/backends
export TRITON_CACHE_DIR=$dist/caches
export TRITON_LD_LIBRARY_PATH=$server_ld
export TRITON_PYTHON_BIN=$venv/bin
export PERF_ANALYZER=$home/bin/perf_analyzer
export PERF_ANALYZER_BIN=$perf_bin
export PERF_ANALYZER_LD_LIBRARY_PATH=$perf_ld
EOF
cat "$home/env.sh"
