# Sourced by scripts/install, scripts/test, scripts/bench and scripts/docs (not run on its own).
#
# Which Python the project's scripts use:
#  * PYTHON (default: python3) names the base interpreter.
#  * If that interpreter already runs inside a virtualenv (an activated one, or
#    PYTHON=/some/venv/bin/python), the scripts use it as it is.
#  * Otherwise they create and use the checkout's own virtualenv, .venv (or
#    $FILA_VENV), from it. Nothing is ever installed into a system interpreter.
# Missing system packages (python3-venv, python3-dev, a C compiler) are
# installed with apt-get, as root or through sudo.

fila_die() { echo "!! $*" >&2; exit 1; }

# Sets FILA_BASE (the base interpreter) and PY (the interpreter to use), and
# FILA_IN_VENV=1 when PY is an existing virtualenv the scripts do not own.
fila_pick_python() {
  local base=${PYTHON:-python3}
  FILA_BASE=
  if [ -z "${PYTHON:-}" ] && ! command -v python3 >/dev/null 2>&1; then
    fila_apt_install python3  # a minimal image without any Python
  fi
  FILA_BASE=$(command -v "$base" 2>/dev/null) || fila_die "no '$base' on PATH: install Python >= 3.10 (apt-get install python3) or set PYTHON=/path/to/python3"
  "$FILA_BASE" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' \
    || fila_die "$FILA_BASE is Python $("$FILA_BASE" -c 'import platform; print(platform.python_version())'); fila needs >= 3.10 (set PYTHON=)"
  if "$FILA_BASE" -c 'import sys; sys.exit(0 if sys.prefix != sys.base_prefix else 1)'; then
    FILA_IN_VENV=1
    PY=$FILA_BASE
  else
    FILA_IN_VENV=
    FILA_VENV=${FILA_VENV:-.venv}
    case $FILA_VENV in /*) ;; *) FILA_VENV=$PWD/$FILA_VENV ;; esac
    PY=$FILA_VENV/bin/python
  fi
}

FILA_APT_UPDATED=
# Installs Debian packages. A name "python3-X" is installed as this
# interpreter's own "python3.N-X" when the distribution has it.
fila_apt_install() {
  local sudo= ver pkgs=() p
  command -v apt-get >/dev/null 2>&1 \
    || fila_die "missing system packages ($*); this machine has no apt-get: install their equivalents, then run again"
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null 2>&1 || fila_die "need root or sudo to install the system packages: $*"
    sudo=sudo
  fi
  if [ -z "$FILA_APT_UPDATED" ]; then $sudo apt-get update -qq; FILA_APT_UPDATED=1; fi
  ver=$([ -z "${FILA_BASE:-}" ] || "$FILA_BASE" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  for p in "$@"; do
    case $p in
      python3-*) if [ -n "$ver" ] && apt-cache show "python$ver-${p#python3-}" >/dev/null 2>&1; then p="python$ver-${p#python3-}"; fi ;;
    esac
    pkgs+=("$p")
  done
  echo "== installing system packages: ${pkgs[*]}"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends --no-upgrade "${pkgs[@]}" >/dev/null
}

# Creates the checkout's virtualenv when needed (not when already in one).
fila_ensure_venv() {
  [ -n "$FILA_IN_VENV" ] && return 0
  if [ -x "$PY" ] && "$PY" -c '' 2>/dev/null; then
    # Rebuild it only when PYTHON names another interpreter than the one it was made from.
    if [ -n "${PYTHON:-}" ]; then
      local want have
      want=$("$FILA_BASE" -c 'import sys; print(sys.base_prefix, "%d.%d" % sys.version_info[:2])')
      have=$("$PY" -c 'import sys; print(sys.base_prefix, "%d.%d" % sys.version_info[:2])')
      [ "$want" = "$have" ] && return 0
      echo "== $FILA_VENV was made from another Python ($have); recreating it from $FILA_BASE"
    else
      return 0
    fi
  fi
  if ! "$FILA_BASE" -c 'import venv, ensurepip' >/dev/null 2>&1; then
    fila_apt_install python3-venv
  fi
  echo "== creating the virtualenv $FILA_VENV (from $FILA_BASE)"
  rm -rf "$FILA_VENV"
  "$FILA_BASE" -m venv "$FILA_VENV" || fila_die "could not create $FILA_VENV with $FILA_BASE -m venv"
  "$PY" -m pip install -q --upgrade pip
}

# Where the scripts keep their "already done" stamps: inside the environment,
# so a new environment starts with none.
fila_stamp_dir() {
  local d
  d="$("$PY" -c 'import sys; print(sys.prefix)')/.fila-stamps"
  mkdir -p "$d"
  echo "$d"
}

# pip-installs requirement files unless the same files were installed before.
# Usage: fila_pip_requirements NAME FILE...  (FILE may be "-c constraints")
fila_pip_requirements() {
  local name=$1; shift
  local stamp digest
  stamp="$(fila_stamp_dir)/$name"
  digest=$(cat .ci/constraints.txt "$@" 2>/dev/null | sha256sum | cut -c1-64)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$digest" ]; then
    echo "== $name requirements: unchanged, not reinstalled"
    return 0
  fi
  echo "== installing $name requirements into $("$PY" -c 'import sys; print(sys.prefix)')"
  local args=() f
  for f in "$@"; do args+=(-r "$f"); done
  PIP_DISABLE_PIP_VERSION_CHECK=1 "$PY" -m pip install -q -c .ci/constraints.txt "${args[@]}"
  echo "$digest" > "$stamp"
}
