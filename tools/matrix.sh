#!/usr/bin/env bash
# The version matrix: `matrix.sh oldest 3.10` or `matrix.sh latest 3.13` [pytest args...].
#   oldest: the lowest versions pyproject.toml declares for redis, hiredis and orjson (uv's
#           lowest-direct resolution), the test toolchain as pinned in uv.lock;
#   latest: the newest release of everything, ignoring the lock.
# Each builds its own venv (.venv-<name>) and runs a reduced backend set: fakeredis, one
# standalone Valkey and one Valkey cluster. A missing interpreter is a skip, not a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
name=$1 python=$2
shift 2
uv=${UV:-uv}
venv=.venv-$name
export UV_PYTHON_DOWNLOADS=never

# python3.X on PATH (if it runs), else pyenv's newest 3.X, else any uv can find
find_python() {
  local v=$1 p
  if p=$(command -v "python$v") && "$p" -c '' >/dev/null 2>&1; then echo "$p" && return; fi
  if command -v pyenv >/dev/null 2>&1; then
    p=$(ls -d "$(pyenv root)/versions/$v".*/bin/"python$v" 2>/dev/null | sort -V | tail -n 1)
    if [ -n "$p" ] && "$p" -c '' >/dev/null 2>&1; then echo "$p" && return; fi
  fi
  "$uv" python find "$v" 2>/dev/null
}

if ! interp=$(find_python "$python"); then
  echo "test-$name: SKIPPED: no Python $python on this machine (install python$python to run it)"
  exit 0
fi
echo "test-$name: Python $python ($interp), fresh venv $venv/"
rm -rf "$venv"
"$uv" venv --quiet --python "$interp" "$venv"
export VIRTUAL_ENV=$PWD/$venv

case $name in
oldest)
  constraints=$venv/toolchain.txt
  # the test tools exactly as locked; the runtime dependencies left to lowest-direct
  "$uv" export --quiet --frozen --only-group dev --no-hashes --no-emit-project \
    --no-emit-package redis --no-emit-package hiredis --no-emit-package orjson -o "$constraints"
  "$uv" pip install --quiet --resolution lowest-direct -c "$constraints" -e . --group dev
  ;;
latest)
  "$uv" pip install --quiet --upgrade -e . --group dev
  ;;
*)
  echo "matrix.sh: unknown set $name (oldest or latest)" >&2
  exit 2
  ;;
esac
echo "test-$name: $("$venv/bin/python" -c 'import importlib.metadata as m, sys
print("python", sys.version.split()[0], *(f"{p} {m.version(p)}" for p in ("redis", "hiredis", "orjson", "fakeredis", "pytest")))')"
exec "$venv/bin/python" -m pytest -q -p no:cacheprovider -n 3 \
  --backends=fakeredis,redis,cluster --server-kinds=valkey "$@"
